"""Launching training runs, recording them, registering what they produce.

``train(spark, cfg, dataset, model)`` is what ``moodlake train`` and ``jobs/train.py`` run:

1. a run spec from the dataset build and the model's recipe (:func:`make_spec`); the run id is a
   hash of everything that defines the run, so the same command run again *resumes* that run
   from its last checkpoint (``--new-run`` starts another);
2. the processes, by ``training.launcher``: ``distributor`` (Spark's ``TorchDistributor``, on the
   driver with ``local_mode`` or as barrier tasks on the executors), ``torchrun``, or ``inline``
   (this process alone);
3. the run into MLflow, the record of training runs (:mod:`moodlake.train.tracking`: parameters,
   per-epoch metrics, metrics.jsonl and spec.json; a run whose processes died is recorded as FAILED),
   then its per-epoch metrics into ``moodlake.training_runs``, the SQL mirror (MERGE on run and epoch);
4. the best epoch's weights into the model registry (:mod:`moodlake.train.registry`: an MLflow model
   version and its row in ``moodlake.models``).

A run's folder (``<training.root>/<run id>``: spec, metrics, checkpoints) and the dataset it reads
may be local paths or Hadoop filesystem URIs (:mod:`moodlake.storage`): with ``local_mode: false``
the processes run as barrier tasks on the executors, which must all reach them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from moodlake import storage
from moodlake.config import Config, to_plain
from moodlake.data.build import DatasetBuild, open_dataset
from moodlake.logs import SUMMARY
from moodlake.train import registry

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A training process died or failed; the message says which run and where the next run resumes."""


def _failed(spec: dict, error: BaseException) -> TrainingError:
    from moodlake.train.loop import latest_checkpoint

    last = latest_checkpoint(spec["run_dir"])
    where = f"from its last checkpoint ({storage.name(last)})" if last else "from the start (no checkpoint yet)"
    code = getattr(error, "returncode", None)
    if code is None:
        found = re.search(r"failed with return code (-?\d+)", str(error))
        code = found.group(1) if found else None
    detail = f"the launcher exited with code {code}" if code is not None else f"{type(error).__name__}: {error}"
    return TrainingError(f"training run {spec['run_id']}: a training process failed ({detail.splitlines()[0][:300]}); "
                         f"the same command run again resumes {where}")


@dataclass
class TrainOutcome:
    run_id: str
    version: str
    path: Path | str  # the registry folder: a Path under a plain local root, else its URI
    epochs: int
    best: dict
    param_checksums: list = field(default_factory=list)  # per rank: (sum, sum of squares) of the parameters

    def summary(self) -> str:
        b = self.best
        return (f"run {self.run_id}: {self.epochs} epochs; best epoch {b.get('epoch')} val loss {b.get('val_loss', float('nan')):.4f} "
                f"val metric {b.get('val_accuracy', float('nan')):.4f}; registered as {self.version} ({self.path})")


def make_spec(cfg: Config, build: DatasetBuild, model: str, *, epochs: int | None = None,
              batch_size: int | None = None, lr: float | None = None, processes: int | None = None,
              new_run: bool = False, model_kwargs: dict | None = None) -> dict:
    """The JSON-able spec every training process receives."""
    manifest = json.loads(storage.read_text(storage.join(build.path, "manifest.json")))
    recipe = to_plain(cfg.recipe(model))
    recipe.update({k: v for k, v in (("max_epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None})
    kwargs = {**recipe.pop("model"), **(model_kwargs or {})}
    task = "intensity" if manifest.get("kind") == "segments" else "classification"
    if task == "intensity":
        # the sequences' feature sizes and length come from the dataset (SET_BY_TRAINER)
        kwargs.update({f"{m}_dim": int(d) for m, d in manifest["dims"].items()}, maxlen=int(manifest["maxlen"]))
        if recipe["class_weighting"] != "none":
            raise ValueError(f"recipe of {model}: class_weighting is for classifiers; dataset {build.name} "
                             "holds emotion intensities")
    processes = processes or cfg.training.processes
    defining = {"model": model, "kwargs": kwargs, "recipe": recipe, "dataset": build.version, "seed": cfg.training.seed,
                "processes": processes}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:8]
    folder = storage.name(storage.parent(build.path))
    run_id = f"{model}-{folder}-{build.version}-{digest}"
    if new_run:
        run_id += dt.datetime.now(dt.timezone.utc).strftime("-%Y%m%dT%H%M%S")
    return {
        "run_id": run_id, "run_dir": storage.join(cfg.training_root, run_id), "model": model, "model_kwargs": kwargs,
        "recipe": recipe, "labels": manifest["labels"], "label_set": manifest["label_set"],
        "multi_label": manifest["definition"]["multi_label"] if task == "classification" else False, "task": task,
        "dataset": {"name": folder, "version": build.version, "path": build.path},
        "seed": cfg.training.seed, "use_gpu": cfg.training.use_gpu, "torch_threads": cfg.training.torch_threads,
        "reader_workers": cfg.training.reader_workers, "processes": processes,
    }


def launch(spec: dict, launcher: str, local_mode: bool = True) -> dict:
    """Run :func:`moodlake.train.loop.train_worker` in ``spec['processes']`` processes; their result (the same on every rank)."""
    from moodlake.train.loop import train_worker

    storage.makedirs(spec["run_dir"])
    storage.write_text(storage.join(spec["run_dir"], "spec.json"), json.dumps(spec, indent=2))
    n = spec["processes"]
    if launcher == "inline":
        if n != 1:
            raise ValueError("the inline launcher runs one process; use distributor or torchrun for DDP")
        return train_worker(spec)
    # a rank that dies (killed, out of memory) ends the others and the launcher fails: the run's
    # checkpoints stay, and the same run started again continues after the last one
    if launcher == "distributor":
        from pyspark.ml.torch.distributor import TorchDistributor

        try:
            return TorchDistributor(num_processes=n, local_mode=local_mode, use_gpu=spec["use_gpu"]).run(train_worker, spec)
        except Exception as e:
            log.error("training run %s failed: %s", spec["run_id"], str(e)[-3000:])
            raise _failed(spec, e) from None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "moodlake.train.entry", storage.join(spec["run_dir"], "spec.json")]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise _failed(spec, e) from None
    return json.loads(storage.read_text(storage.join(spec["run_dir"], "result.json")))


def read_history(run_dir: str | Path) -> list[dict]:
    """The epochs of a run, one per epoch (a resumed epoch's later line wins)."""
    path = storage.join(run_dir, "metrics.jsonl")
    rows = {}
    for line in storage.read_text(path).splitlines() if storage.exists(path) else []:
        row = json.loads(line)
        rows[row["epoch"]] = row
    return [rows[k] for k in sorted(rows)]


def record_history(spark, cfg: Config, spec: dict) -> list[dict]:
    """The run's epochs into moodlake.training_runs (MERGE on run_id, epoch)."""
    from delta.tables import DeltaTable

    from moodlake.tables import TRAINING_RUNS, ensure_tables

    ensure_tables(spark, cfg, (TRAINING_RUNS,))
    history = read_history(spec["run_dir"])
    if not history:
        return history
    now = dt.datetime.now(dt.timezone.utc)
    rows = [(spec["run_id"], r["epoch"], spec["model"], spec["dataset"]["name"], spec["dataset"]["version"], r["phase"],
             float(r["train_loss"]), float(r["val_loss"]), float(r["val_accuracy"]), float(r["lr"]),
             float(r["samples_per_s"]), float(r["seconds"]), int(r["processes"]), bool(r["improved"]), now)
            for r in history]
    (DeltaTable.forName(spark, cfg.table("training_runs")).alias("t")
        .merge(spark.createDataFrame(rows, TRAINING_RUNS.schema).alias("s"), "t.run_id = s.run_id AND t.epoch = s.epoch")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return history


def train(spark, cfg: Config, dataset: str, model: str, *, fold: str | None = None, promote: bool = False,
          **spec_options) -> TrainOutcome:
    """Train ``model`` on the newest build of ``dataset``; record it; register the best weights."""
    from moodlake.train.loop import BEST_METRICS, latest_checkpoint

    build = open_dataset(cfg, dataset, fold)
    spec = make_spec(cfg, build, model, **spec_options)
    log.info("training run %s: %s on %s (%d process(es), launcher %s)", spec["run_id"], model, build.path,
             spec["processes"], cfg.training.launcher)
    try:
        result = launch(spec, cfg.training.launcher, cfg.training.local_mode)
    except TrainingError:
        _track(cfg, spec, "FAILED")
        raise
    _track(cfg, spec, "FINISHED")
    history = record_history(spark, cfg, spec)
    checkpoint = latest_checkpoint(spec["run_dir"])
    if checkpoint is None:
        raise RuntimeError(f"run {spec['run_id']} ended without a checkpoint")
    import torch

    with storage.local_copy(checkpoint) as local:
        saved = torch.load(local, map_location="cpu", weights_only=True)
    best_path, kept = storage.join(spec["run_dir"], "best.pt"), {}
    if storage.exists(best_path):
        with storage.local_copy(best_path) as local:
            kept = torch.load(local, map_location="cpu", weights_only=True)
    state_dict = kept["model"] if kept else saved["model"]
    best_epoch = kept.get("epoch", len(history))
    best = next((r for r in history if r["epoch"] == best_epoch), history[-1] if history else {})
    if kept.get("part_epochs"):
        # the model's independent parts come from their own best epochs: its metrics are those the
        # training processes measured on these assembled weights (loop._measure_best), not the row of
        # the whole model's best epoch
        measured_path = storage.join(spec["run_dir"], BEST_METRICS)
        if not storage.exists(measured_path):
            raise RuntimeError(f"run {spec['run_id']} selected parts {sorted(kept['part_epochs'])} but left no "
                               f"{BEST_METRICS}; run the same command again to measure them")
        best = {**best, **json.loads(storage.read_text(measured_path)), "part_epochs": kept["part_epochs"]}
    config = {
        "model": model, "build_kwargs": json.loads(saved["build_kwargs"]), "labels": spec["labels"],
        "label_set": spec["label_set"], "multi_label": spec["multi_label"], "dataset": spec["dataset"],
        "recipe": spec["recipe"], "model_kwargs": spec["model_kwargs"], "run_id": spec["run_id"],
        "metrics": best, "code_revision": registry.code_revision(),
        "preprocessing": _preprocessing_of(model, spec["model_kwargs"]), "task": spec["task"],
    }
    vocab = storage.join(build.path, "vocab.json") if spec["task"] == "classification" else None
    version, folder = registry.save_model(state_dict, config, vocab, cfg.models_root)
    registry.register(spark, cfg, version, folder, {**config, "version": version})
    if promote:
        registry.promote(spark, cfg, version)
    outcome = TrainOutcome(spec["run_id"], version, folder, len(history), best, result.get("param_checksums", []))
    log.info(outcome.summary(), extra=SUMMARY)
    return outcome


def _track(cfg: Config, spec: dict, status: str) -> None:
    """The run into MLflow (when ``mlflow.enabled``). A FAILED run's own recording failing is logged, so
    that the training error stays the one raised."""
    from moodlake.train import tracking

    if not tracking.enabled(cfg):
        return
    try:
        tracking.log_training_run(cfg, spec, read_history(spec["run_dir"]), status=status,
                                  code_revision=registry.code_revision())
    except Exception:
        if status == "FINISHED":
            raise
        log.exception("training run %s: recording the failed run in MLflow failed", spec["run_id"])


def _preprocessing_of(model: str, kwargs: dict) -> str:
    from moodlake.train.adapters import adapter_for

    a = adapter_for(model)
    return kwargs.get("image_backbone", a.preprocessing) if model == "multitask" else a.preprocessing
