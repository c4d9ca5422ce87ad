"""The model registry: each trained model is a version in ``moodlake.models`` with a folder::

    <training.models_root>/<version>/
        model.safetensors   the weights (loaded without unpickling code)
        config.json         model family, the kwargs that rebuild its architecture, labels, label
                            set, dataset and its version, recipe, metrics, run, code revision
        vocab.json          the dataset's vocabulary (words, tags, characters); none for models of
                            video segments (``task: intensity``), whose text is word vectors

The models root is a local path or any Hadoop filesystem URI (``file://``, ``hdfs://``, ``s3a://``;
:mod:`moodlake.storage`): scoring tasks on executors load the weights from there.

The version is a hash of the weights and the config, so registering the same result twice is one
version. ``promote`` marks the version that scoring uses (``stage = 'production'``): one per task,
the model family's (:data:`POSTS`: the classifiers of posts that ``moodlake score`` uses;
:data:`SEGMENTS`: the intensity models of video segments that ``moodlake score segments`` uses), so
promoting a model of video segments leaves the production model of posts as it is, and the other
way round.

MLflow is the record of versions and of the production model (:mod:`moodlake.train.tracking`):
``register`` makes each version an MLflow model version (registered model ``moodlake-<family>``, its
source the folder's files logged into the training run) and ``promote`` puts the alias ``production``
on it (taking it off the other registered models of the same task); both then write ``moodlake.models``, the record's SQL mirror that scoring and the views read.
With ``mlflow.enabled: false`` only the table is written. The weights stay in the folder above,
which scoring loads; MLflow holds a copy of the same three files, never a pickled model.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import torch
from torch import nn

from moodlake import storage
from moodlake.config import Config, repo_root

PRODUCTION = "production"
# the tasks a production model is scoped by (an adapter's ``task``): posts and video segments
POSTS, SEGMENTS = "classification", "intensity"
TASK_NAMES = {POSTS: "posts", SEGMENTS: "video segments"}


def task_of(family: str) -> str:
    """The task of a model family: :data:`SEGMENTS` for the intensity models of video segments,
    :data:`POSTS` for every other (a family without training support counts as a model of posts)."""
    from moodlake.train.adapters import ADAPTERS

    adapter = ADAPTERS.get(family)
    return adapter.task if adapter is not None else POSTS


def task_filter(task: str):
    """The rows of ``moodlake.models`` whose family has ``task`` (a Spark column)."""
    from pyspark.sql import functions as F

    from moodlake.train.adapters import ADAPTERS

    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {sorted(TASK_NAMES)}, not {task!r}")
    segments = F.col("model").isin(*sorted(n for n, a in ADAPTERS.items() if a.task == SEGMENTS))
    return segments if task == SEGMENTS else ~segments


def code_revision() -> str:
    """The git commit of the code (with '+dirty' when the tree has changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_model(state_dict: dict, config: dict, vocab_path: str | Path | None,
               models_root: str | Path) -> tuple[str, Path | str]:
    """Write a model folder; returns (version, folder: a Path under a plain local root, else its URI).
    Idempotent for the same weights and config. ``vocab_path`` may be a URI too, or None: a model of
    video segments has no vocabulary."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].numpy().tobytes())
    version = f"{config['model']}-{h.hexdigest()[:12]}"
    folder = storage.join(models_root, version)
    if storage.exists(storage.join(folder, "config.json")):
        return version, storage.native(folder)
    # written whole under a temporary name, then renamed where a folder renames atomically (local,
    # HDFS); on an object store, where a rename is a copy, into the folder itself with config.json
    # last: its presence is what marks a complete version (above, and in load_registered)
    atomic = storage.renames_atomically(models_root)
    tmp = folder + ".tmp" if atomic else folder
    storage.delete(tmp)
    storage.makedirs(tmp)
    with storage.local_output(storage.join(tmp, "model.safetensors")) as local:
        save_file(tensors, str(local))
    if vocab_path is not None:  # models of video segments have none
        storage.write_bytes(storage.join(tmp, "vocab.json"), storage.read_bytes(vocab_path))
    storage.write_text(storage.join(tmp, "config.json"), json.dumps({**config, "version": version}, indent=2, default=str))
    if atomic:
        storage.rename(tmp, folder)
    return version, storage.native(folder)


def load_registered(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """(the model in eval mode with its weights, its config) from a registered model folder."""
    from safetensors.torch import load_file

    from moodlake.models import get_model

    if not storage.exists(storage.join(folder, "config.json")):
        raise FileNotFoundError(f"no registered model in {folder} (config.json missing)")
    config = json.loads(storage.read_text(storage.join(folder, "config.json")))
    model = get_model(config["model"], **config["build_kwargs"])
    with storage.local_copy(storage.join(folder, "model.safetensors")) as weights:
        model.load_state_dict(load_file(str(weights), device=device))
    return model.to(device).eval(), config


def register(spark, cfg: Config, version: str, folder: Path, config: dict) -> None:
    """Register ``version`` (its folder written by :func:`save_model`): an MLflow model version, then
    its row in ``moodlake.models`` (MERGE on version). Idempotent."""
    from delta.tables import DeltaTable

    from moodlake.tables import MODELS, ensure_tables
    from moodlake.train import tracking

    if tracking.enabled(cfg):
        tracking.register_version(cfg, version, folder, config)
    ensure_tables(spark, cfg, (MODELS,))
    row = (version, config["model"], config["dataset"]["name"], config["dataset"]["version"], config["label_set"],
           list(config["labels"]), json.dumps(config.get("metrics", {})), str(folder), config.get("code_revision"),
           config["run_id"], None, dt.datetime.now(dt.timezone.utc), None)
    (DeltaTable.forName(spark, cfg.table("models")).alias("t")
        .merge(spark.createDataFrame([row], MODELS.schema).alias("s"), "t.version = s.version")
        .whenNotMatchedInsertAll().execute())


def promote(spark, cfg: Config, version: str) -> str:
    """Make ``version`` the production model of its task (and no other model of that task): the MLflow
    alias ``production``, then the ``stage`` column of ``moodlake.models``. A version registered before
    MLflow tracking is registered in MLflow first. Returns the task (:data:`POSTS` or :data:`SEGMENTS`)."""
    from pyspark.sql import functions as F

    from moodlake.train import tracking

    table = cfg.table("models")
    rows = spark.table(table).where(F.col("version") == version).select("path").collect()
    if len(rows) != 1:
        raise ValueError(f"no model version {version!r} in {table}; see `moodlake models list`")
    if tracking.enabled(cfg):
        tracking.promote(cfg, version, rows[0].path)
    return mirror_stage(spark, cfg, version)


def sync_stage(spark, cfg: Config, task: str = POSTS) -> str | None:
    """Bring the ``stage`` column of ``moodlake.models`` in line with MLflow's ``production`` alias of
    ``task`` (after the alias was moved in the MLflow UI, say); returns that production version (None:
    no alias)."""
    from moodlake.train import tracking

    from pyspark.sql import functions as F

    version = tracking.production_version(cfg, task)
    mirrored = [r.version for r in spark.table(cfg.table("models"))
                .where((F.col("stage") == PRODUCTION) & task_filter(task)).select("version").collect()]
    if version is not None and mirrored != [version]:
        mirror_stage(spark, cfg, version)
    return version


def sync_stages(spark, cfg: Config) -> dict[str, str | None]:
    """:func:`sync_stage` of every task: task -> its production version (None: no alias)."""
    return {task: sync_stage(spark, cfg, task) for task in TASK_NAMES}


def mirror_stage(spark, cfg: Config, version: str) -> str:
    """``stage = 'production'`` on ``version``'s row of ``moodlake.models`` and on no other row of its task
    (the mirror of the MLflow alias), ``promoted_at`` now. Returns the task."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = cfg.table("models")
    rows = spark.table(table).where(F.col("version") == version).select("model").collect()
    if len(rows) != 1:
        raise ValueError(f"no model version {version!r} in {table}; see `moodlake models list`")
    task = task_of(rows[0].model)
    now = dt.datetime.now(dt.timezone.utc)
    DeltaTable.forName(spark, table).update(
        condition=((F.col("stage") == PRODUCTION) & task_filter(task)) | (F.col("version") == version),
        set={"stage": F.when(F.col("version") == version, F.lit(PRODUCTION)).otherwise(F.lit(None)),
             "promoted_at": F.when(F.col("version") == version, F.lit(now)).otherwise(F.col("promoted_at"))})
    return task


def production_rows(spark, cfg: Config, version: str, task: str = POSTS) -> list:
    """The rows of ``moodlake.models`` of ``version``, or of ``task``'s production model when ``version``
    is 'production' (empty: none)."""
    from pyspark.sql import functions as F

    df = spark.table(cfg.table("models"))
    return (df.where((F.col("stage") == PRODUCTION) & task_filter(task)) if version == PRODUCTION
            else df.where(F.col("version") == version)).collect()


def resolve(spark, cfg: Config, version: str, task: str = POSTS) -> Path | str:
    """The folder of ``version``, or of ``task``'s production model when ``version`` is 'production'."""
    rows = production_rows(spark, cfg, version, task)
    if not rows:
        raise ValueError(f"no production model for {TASK_NAMES[task]}: promote one with `moodlake models promote "
                         "VERSION`" if version == PRODUCTION else f"no model version {version!r}")
    return storage.native(rows[0].path)
