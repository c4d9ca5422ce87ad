"""Experiment tracking and the model registry on MLflow: the record of training runs and model versions.

What MLflow holds (the *record*):

- one MLflow run per MoodLake training run (tag ``moodlake.run_id``) in the experiment
  ``mlflow.experiment``: its parameters (model, dataset name and version, seed, processes, the recipe
  and the model's keyword arguments), every epoch's metrics (step = epoch) and, as artifacts, the
  run's ``metrics.jsonl`` and ``spec.json`` and the reports of ``moodlake evaluate``;
- one MLflow model version per registered MoodLake version (tag ``moodlake.version``), in the
  registered model ``<mlflow.registered_model_prefix><family>`` (``moodlake-multitask``). Its
  source is a copy of the registry folder logged into the run (``models/<version>/``: the same
  ``model.safetensors``, ``config.json`` and ``vocab.json``; nothing pickled), and the tag
  ``moodlake.path`` names the registry folder itself, which scoring loads;
- the alias ``production`` on the version that scoring uses: on one registered model per task (the
  classifiers of posts; the intensity models of video segments, :data:`moodlake.train.registry.SEGMENTS`),
  so that promoting a model of video segments leaves the production model of posts alone.

``moodlake.training_runs`` and ``moodlake.models`` are the SQL mirror of this record: the same commands
write them right after MLflow (:mod:`moodlake.train.launch`, :mod:`moodlake.train.registry`), MLflow
first, so a failure in between leaves the mirror behind, never ahead, and running the command again
repairs it (every step here is idempotent: runs, metrics, parameters and versions are found again by
their MoodLake ids, never added twice). The tables stay because scoring, the analysts' views and
``moodlake sql`` read the registry with SQL.

The embedded default needs no server: a SQLite store and the artifacts under ``$MOODLAKE_HOME/mlflow``
(``moodlake ui`` shows them); ``mlflow.tracking_uri`` points at a tracking server instead. Only the
driver talks to MLflow. MLflow's usage telemetry is off unless ``MLFLOW_DISABLE_TELEMETRY`` says
otherwise.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from moodlake import storage
from moodlake.config import Config

log = logging.getLogger(__name__)

PRODUCTION = "production"
RUN_TAG = "moodlake.run_id"
VERSION_TAG = "moodlake.version"
PATH_TAG = "moodlake.path"
FAMILY_TAG = "moodlake.family"
# the registry folder's files, logged as the MLflow version's source (safetensors and JSON only; a
# model of video segments has no vocab.json)
MODEL_FILES = ("model.safetensors", "config.json", "vocab.json")
# the fields of a metrics.jsonl line that are metrics (the others are the epoch, its phase, flags)
EPOCH_METRICS = ("train_loss", "val_loss", "val_objective", "val_accuracy", "lr", "samples_per_s", "seconds")
# schemes of a tracking URI that is a server of its own (``moodlake ui`` has nothing to start)
_SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
_ENVIRONMENT = {"MLFLOW_DISABLE_TELEMETRY": "true"}


class TrackingError(RuntimeError):
    """MLflow tracking is off, not installed, or does not hold what was asked for."""


# --------------------------------------------------------------------------- where the store is


def enabled(cfg: Config) -> bool:
    return cfg.mlflow.enabled


def tracking_uri(cfg: Config) -> str:
    """``mlflow.tracking_uri``, or the embedded SQLite store under ``<lakehouse.home>/mlflow``."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return "sqlite:///" + str(Path(cfg.lakehouse.home) / "mlflow" / "mlflow.db")


def registry_uri(cfg: Config) -> str:
    return cfg.mlflow.registry_uri or tracking_uri(cfg)


def artifact_root(cfg: Config) -> str | None:
    """Where new experiments keep artifacts: ``mlflow.artifact_root``; with the embedded store
    ``<lakehouse.home>/mlflow/artifacts``; with a tracking server None (the server's default)."""
    if cfg.mlflow.artifact_root:
        root = cfg.mlflow.artifact_root
        return root if "://" in root else Path(root).expanduser().resolve().as_uri()
    if cfg.mlflow.tracking_uri:
        return None
    return (Path(cfg.lakehouse.home) / "mlflow" / "artifacts").resolve().as_uri()


def is_server(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in _SERVER_SCHEMES if "://" in uri else uri.lower() in _SERVER_SCHEMES


def registered_model_name(cfg: Config, family: str) -> str:
    return cfg.mlflow.registered_model_prefix + family


def client(cfg: Config):
    """An ``MlflowClient`` on the configured stores (the embedded store's folder made first)."""
    if not enabled(cfg):
        raise TrackingError("MLflow tracking is off (mlflow.enabled: false)")
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise TrackingError(f"MLflow is not installed ({e}): run `make setup` (requirements.txt pins it)") from None
    for uri in (tracking_uri(cfg), registry_uri(cfg)):
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=registry_uri(cfg))


def experiment_id(cfg: Config, c=None) -> str:
    """The id of ``mlflow.experiment``, created (with the configured artifact root) when missing."""
    from mlflow.exceptions import MlflowException

    c = c or client(cfg)
    name = cfg.mlflow.experiment
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
                                "or set mlflow.experiment to another name")
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root(cfg),
                                   tags={"moodlake.lakehouse": cfg.lakehouse.home})
    except MlflowException:  # created meanwhile by another process
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# --------------------------------------------------------------------------- training runs


def _flat(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_params(spec: dict) -> dict[str, str]:
    """The parameters of a training run: what defines it (its id is their hash), as strings."""
    params = {"model": spec["model"], "dataset": spec["dataset"]["name"], "dataset_version": spec["dataset"]["version"],
              "seed": str(spec["seed"]), "processes": str(spec["processes"]), "label_set": spec.get("label_set", ""),
              "multi_label": str(bool(spec.get("multi_label"))).lower()}
    _flat("recipe", spec.get("recipe", {}), params)
    _flat("model_kwargs", spec.get("model_kwargs", {}), params)
    return {k: v[:6000] for k, v in params.items()}


def epoch_metrics(row: dict) -> dict[str, float]:
    """The metrics of one metrics.jsonl line (an independent part's validation loss as
    ``val_loss_part.<part>``)."""
    out = {k: float(row[k]) for k in EPOCH_METRICS if row.get(k) is not None}
    out["improved"] = 1.0 if row.get("improved") else 0.0
    for part, loss in (row.get("val_loss_parts") or {}).items():
        out[f"val_loss_part.{part}"] = float(loss)
    return out


def find_run(cfg: Config, moodlake_run_id: str, c=None):
    """The MLflow run of a MoodLake training run, or None."""
    c = c or client(cfg)
    runs = c.search_runs([experiment_id(cfg, c)], f"tags.`{RUN_TAG}` = '{_quoted(moodlake_run_id)}'", max_results=2,
                         order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def _run(cfg: Config, c, moodlake_run_id: str, tags: dict | None = None):
    """The MLflow run of ``moodlake_run_id``, created when missing (named after it)."""
    found = find_run(cfg, moodlake_run_id, c)
    if found is not None:
        return found
    return c.create_run(experiment_id(cfg, c), run_name=moodlake_run_id,
                        tags={RUN_TAG: moodlake_run_id, "mlflow.source.name": "moodlake", **(tags or {})})


def _quoted(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def log_metrics(c, run_id: str, steps: dict[int, dict[str, float]]) -> int:
    """Log ``{step: {key: value}}`` into the run, leaving out every (key, step, value) it already has:
    logging the same history again adds nothing. Returns how many values were logged."""
    from mlflow.entities import Metric

    keys = sorted({k for values in steps.values() for k in values})
    have = {k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)] for k in keys}
    now = int(time.time() * 1000)
    new = [Metric(k, v, now, step) for step in sorted(steps) for k, v in sorted(steps[step].items())
           if not any(s == step and _same(v, old) for s, old in have[k])]
    for i in range(0, len(new), 1000):  # MLflow's batch limit
        c.log_batch(run_id, metrics=new[i:i + 1000])
    return len(new)


def _log_files(c, run_id: str, files: dict[str, str | Path], artifact_path: str) -> None:
    """Log files (name -> path or filesystem URI) into the run under ``artifact_path`` (an existing
    artifact of the same name is replaced: logging the same file again changes nothing)."""
    with tempfile.TemporaryDirectory(prefix="moodlake-mlflow-") as tmp:
        for name, uri in files.items():
            with storage.local_copy(uri) as local:
                shutil.copyfile(local, Path(tmp) / name)
        c.log_artifacts(run_id, tmp, artifact_path)


@dataclass(frozen=True)
class TrackedRun:
    run_id: str            # MLflow's
    moodlake_run_id: str
    experiment_id: str
    metrics_logged: int


def log_training_run(cfg: Config, spec: dict, history: list[dict], *, status: str = "FINISHED",
                     code_revision: str | None = None) -> TrackedRun:
    """Record a training run in MLflow as :func:`moodlake.train.launch.train` ends it: parameters, every
    epoch's metrics (step = epoch), metrics.jsonl and spec.json as artifacts (``run/``), and its status
    (FINISHED, or FAILED for a run whose processes died; a later, resumed run finishes it).
    Idempotent: the same run again finds its MLflow run and adds only what is new."""
    from mlflow.entities import Param, RunTag

    c = client(cfg)
    run = _run(cfg, c, spec["run_id"])
    rid = run.info.run_id
    have = run.data.params
    params = [Param(k, v) for k, v in run_params(spec).items() if k not in have]  # parameters never change
    tags = [RunTag("moodlake.run_dir", str(spec["run_dir"]))]
    if code_revision:
        tags.append(RunTag("moodlake.code_revision", code_revision))
        if code_revision != "unknown":
            tags.append(RunTag("mlflow.source.git.commit", code_revision.split("+")[0]))
    for i in range(0, len(params), 100):  # MLflow's batch limit for parameters
        c.log_batch(rid, params=params[i:i + 100], tags=tags if i == 0 else ())
    if not params:
        c.log_batch(rid, tags=tags)
    logged = log_metrics(c, rid, {int(row["epoch"]): epoch_metrics(row) for row in history})
    files = {n: storage.join(spec["run_dir"], n) for n in ("metrics.jsonl", "spec.json")
             if storage.exists(storage.join(spec["run_dir"], n))}
    if files:
        _log_files(c, rid, files, "run")
    c.set_terminated(rid, status)
    log.info("MLflow run %s (%s): %d parameters and %d metric values logged, status %s", rid, spec["run_id"],
             len(params), logged, status)
    return TrackedRun(rid, spec["run_id"], run.info.experiment_id, logged)


def log_evaluation(cfg: Config, config: dict, evaluation_id: str, report_dir: str | Path, dataset: str, split: str,
                   headline: dict) -> str:
    """Attach an evaluation to the training run of the evaluated model: its report folder as artifacts
    (``evaluations/<evaluation_id>/``) and its headline figures as metrics ``eval.<dataset>.<split>.<name>``
    (step 0). Returns the MLflow run id. Idempotent."""
    c = client(cfg)
    run = _run(cfg, c, config["run_id"])
    rid = run.info.run_id
    metrics = {f"eval.{dataset}.{split}.{k}": float(v) for k, v in headline.items()
               if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    log_metrics(c, rid, {0: metrics})
    c.set_tag(rid, f"moodlake.evaluation.{dataset}.{split}", evaluation_id)
    c.log_artifacts(rid, str(report_dir), f"evaluations/{evaluation_id}")
    return rid


# --------------------------------------------------------------------------- the registry


def find_version(cfg: Config, version: str, c=None):
    """The MLflow model version of a MoodLake version (tag ``moodlake.version``), or None."""
    c = c or client(cfg)
    found = c.search_model_versions(f"tags.`{VERSION_TAG}` = '{_quoted(version)}'")
    return found[0] if found else None


def _registered_model(c, name: str, family: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        return c.create_registered_model(name, tags={FAMILY_TAG: family},
                                         description=f"MoodLake {family} models (registered by `moodlake train`)")
    except MlflowException as e:  # created meanwhile by another process
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return c.get_registered_model(name)


def register_version(cfg: Config, version: str, folder: str | Path, config: dict):
    """Register a MoodLake version (its registry folder written by :func:`moodlake.train.registry.save_model`)
    as an MLflow model version of ``<prefix><family>``: the folder's files are logged into its training
    run under ``models/<version>/`` and are the version's source. Returns the ``ModelVersion``; the
    same version again returns the one registered before."""
    c = client(cfg)
    found = find_version(cfg, version, c)
    if found is not None:
        return found
    family = config["model"]
    name = registered_model_name(cfg, family)
    _registered_model(c, name, family)
    run = _run(cfg, c, config["run_id"])
    rid = run.info.run_id
    artifact_path = f"models/{version}"
    files = [n for n in MODEL_FILES if storage.exists(storage.join(folder, n))]  # a segment model has no vocab.json
    if {f.path.rsplit("/", 1)[-1] for f in c.list_artifacts(rid, artifact_path)} != set(files):
        _log_files(c, rid, {n: storage.join(folder, n) for n in files}, artifact_path)
    dataset = config.get("dataset") or {}
    tags = {VERSION_TAG: version, PATH_TAG: str(folder), RUN_TAG: config["run_id"], FAMILY_TAG: family,
            "moodlake.dataset": str(dataset.get("name", "")),
            "moodlake.dataset_version": str(dataset.get("version", "")),
            "moodlake.label_set": str(config.get("label_set", "")),
            "moodlake.code_revision": str(config.get("code_revision") or "unknown")}
    description = (f"{version}: {family} trained on {dataset.get('name')} ({dataset.get('version')}); "
                   f"weights in {folder}")
    mv = c.create_model_version(name, f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", run_id=rid, tags=tags,
                                description=description)
    log.info("MLflow model version %s %s registered for %s", name, mv.version, version)
    return mv


def promote(cfg: Config, version: str, folder: str | Path | None = None):
    """Put the alias ``production`` on the MLflow version of ``version`` and take it off every other
    registered model of MoodLake of the same task (one production model per task, as scoring has: posts,
    video segments). A version that MLflow does not know yet (registered before tracking) is registered
    first from ``folder``. Returns the ``ModelVersion``."""
    from moodlake.train.registry import task_of

    c = client(cfg)
    mv = find_version(cfg, version, c)
    if mv is None:
        if folder is None:
            raise TrackingError(f"no MLflow model version carries {VERSION_TAG} = {version!r}")
        config = json.loads(storage.read_text(storage.join(folder, "config.json")))
        mv = register_version(cfg, version, folder, config)
    c.set_registered_model_alias(mv.name, PRODUCTION, mv.version)
    task = task_of(_family(cfg, c.get_registered_model(mv.name)))
    for rm in _moodlake_models(cfg, c, task):
        if rm.name != mv.name and PRODUCTION in (rm.aliases or {}):
            c.delete_registered_model_alias(rm.name, PRODUCTION)
    return mv


def _family(cfg: Config, rm) -> str:
    """The model family of a registered model: its tag, else its name without the prefix."""
    return (rm.tags or {}).get(FAMILY_TAG) or rm.name[len(cfg.mlflow.registered_model_prefix):]


def _moodlake_models(cfg: Config, c, task: str | None = None) -> list:
    """The registered models named with ``mlflow.registered_model_prefix`` (those of families of ``task``
    only, when given)."""
    from moodlake.train.registry import task_of

    prefix = cfg.mlflow.registered_model_prefix
    out, token = [], None
    while True:
        page = c.search_registered_models(f"name LIKE '{_quoted(prefix)}%'", max_results=100, page_token=token)
        out.extend(rm for rm in page if rm.name.startswith(prefix)  # '_' is a LIKE wildcard
                   and (task is None or task_of(_family(cfg, rm)) == task))
        token = page.token
        if not token:
            return out


def production_version(cfg: Config, task: str = "classification") -> str | None:
    """The MoodLake version that carries the alias ``production`` in MLflow among the registered models of
    ``task`` (the classifiers of posts by default; ``intensity``: video segments). None: none does."""
    c = client(cfg)
    for rm in _moodlake_models(cfg, c, task):
        number = (rm.aliases or {}).get(PRODUCTION)
        if number is not None:
            return c.get_model_version(rm.name, number).tags.get(VERSION_TAG)
    return None


def download_model(cfg: Config, version: str, dst: str | Path, task: str = "classification") -> Path:
    """The registry folder of ``version`` ('production': the alias of ``task``'s models) as MLflow holds
    it, downloaded into ``dst``: model.safetensors, config.json, vocab.json (load it with
    :func:`moodlake.train.registry.load_registered`)."""
    c = client(cfg)
    if version == PRODUCTION:
        version = production_version(cfg, task)
        if version is None:
            raise TrackingError("no MLflow model version carries the alias production")
    mv = find_version(cfg, version, c)
    if mv is None:
        raise TrackingError(f"no MLflow model version carries {VERSION_TAG} = {version!r}")
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(c.download_artifacts(mv.run_id, f"models/{version}", str(dst)))


# --------------------------------------------------------------------------- the UI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ui_command(cfg: Config, port: int | None = None) -> list[str]:
    """The command that serves the MLflow UI of the configured stores on 127.0.0.1 (one worker)."""
    port = cfg.mlflow.ui_port if port is None else port
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri(cfg)]
    if registry_uri(cfg) != tracking_uri(cfg):
        cmd += ["--registry-store-uri", registry_uri(cfg)]
    root = artifact_root(cfg)
    if root:
        cmd += ["--default-artifact-root", root]
    return cmd + ["--host", "127.0.0.1", "--port", str(port or free_port()), "--workers", "1"]


def ui_environment(base: dict | None = None) -> dict[str, str]:
    """The UI server's environment: no telemetry, no job runner (MoodLake starts no MLflow jobs)."""
    env = dict(os.environ if base is None else base)
    for key, value in {**_ENVIRONMENT, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}.items():
        env.setdefault(key, value)
    return env


def ui_available() -> bool:
    """Whether the MLflow UI's pages are installed (the ``mlflow`` wheel; ``mlflow-skinny`` has none)."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / "server" / "js" / "build" / "index.html").exists() for p in spec.submodule_search_locations)
