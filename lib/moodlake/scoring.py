"""The nightly scoring job: every post of ``moodlake.post_features`` scored once by a model version.

``score(spark, cfg)`` (``moodlake score``, ``jobs/score.py``) goes like this:

1. **Select.** The feature rows (optionally those uploaded in ``[since, until)``) that the model
   version has not scored, or scored (or failed) on other features than the current ones (a post
   whose content or ``features.version`` changed), at most ``limit`` of them (oldest uploads first).
   Their ids are written once to the run's staging folder and cut into chunks of
   ``scoring.chunk_size`` by a hash of the id.
2. **Score, inside Spark.** Each chunk's feature rows go through ``mapInPandas`` in Arrow batches of
   ``scoring.arrow_batch_rows`` rows; every Python worker loads the model once from the registry
   folder (a module-level cache; the closure carries only the folder's path) and runs
   :class:`moodlake.inference.Predictor`, the path evaluation uses, in batches of ``scoring.batch_size``
   posts with an image or ``scoring.text_batch_size`` posts without one, with ``scoring.torch_threads``
   threads, on the task's GPU where executors have them (``spark.task.resource.gpu.amount``). A post that cannot be scored becomes a failure row with its reason.
   The result is written once to staging (Spark's commit protocol: a retried task's output replaces
   the failed attempt's), so nothing is scored twice because Spark evaluated a plan twice.
3. **Commit.** One MERGE per table commits a chunk: ``moodlake.emotion_scores`` on
   (``post_id``, ``model_version``), ``moodlake.scoring_failures`` likewise (a post that scores now
   loses its failure row; one that fails now loses its stale score). A killed run loses at most the
   chunk in flight; the next run selects what is still missing, so the tables end as after one clean
   run. A MERGE that meets Delta's commit conflict (another run committed to the table meanwhile) is
   retried with backoff (:func:`moodlake.runs.retry_conflicts`): it writes the same rows however often
   it runs. A run of a version that a live run (of another process) is scoring refuses to start.
4. ``moodlake.scoring_runs`` records the run: ``selected = scored + failed``; ``skipped`` counts the
   posts of the window already scored with the same features.

The analysts' views (:mod:`moodlake.views`) are (re)created after each run of the production model.

:class:`ScoringJob` is the run itself, whatever is scored: the run ledger, the live-run refusal, the
chunk loop with its staging, progress and per-worker model loads, and the MERGE of a chunk's scores
and failures. :class:`Scorer` scores posts with it; :class:`moodlake.segment_scoring.SegmentScorer`
scores video segments (``moodlake score segments``).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake.config import Config
from moodlake.logs import SUMMARY, redact
from moodlake.progress import ProgressReporter
from moodlake.runs import delete_path, live_runs, mark_interrupted, new_run_id, now, retry_conflicts
from moodlake.tables import SCORING_RUNS, SCORING_TABLES, TableSpec, ensure_tables

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ("post_id", "source", "post_content_hash", "features_version", "text", "text_words", "tags",
                   "image", "has_image", "has_text", "has_tags")

STAGED = T.StructType([
    T.StructField("kind", T.StringType(), False),                 # score / failure
    T.StructField("post_id", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("uploaded_at", T.TimestampType(), True),
    T.StructField("post_content_hash", T.StringType(), False),
    T.StructField("features_version", T.IntegerType(), False),
    T.StructField("probs", T.ArrayType(T.DoubleType()), True),
    T.StructField("top_label", T.StringType(), True),
    T.StructField("top_probability", T.DoubleType(), True),
    T.StructField("sentiment", T.StringType(), True),
    T.StructField("sentiment_probability", T.DoubleType(), True),
    T.StructField("head", T.StringType(), True),
    T.StructField("has_image", T.BooleanType(), True),
    T.StructField("has_text", T.BooleanType(), True),
    T.StructField("has_tags", T.BooleanType(), True),
    T.StructField("reason_code", T.StringType(), True),
    T.StructField("reason", T.StringType(), True),
    T.StructField("worker_pid", T.IntegerType(), True),
    T.StructField("model_loads", T.IntegerType(), True),          # loads this worker had made so far
])


_EMPTY = dict.fromkeys(STAGED.fieldNames())


class ScoringError(RuntimeError):
    """A scoring run cannot start or did not finish; the message says why in one line."""


@dataclass
class ScoringResult:
    run_id: str
    model_version: str
    selected: int = 0
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    model_loads: int = 0
    workers: int = 0
    target: str = "posts"       # what was scored: posts, or segments (moodlake score segments)

    @property
    def per_s(self) -> float:
        return self.selected / self.seconds if self.seconds > 0 else 0.0

    posts_per_s = per_s  # the older name

    def reconciles(self) -> bool:
        return self.selected == self.scored + self.failed

    @property
    def label(self) -> str:
        """``score VERSION`` (posts) or ``score segments VERSION``: how its log lines and summary start."""
        return f"score {self.model_version}" if self.target == "posts" else f"score {self.target} {self.model_version}"

    def summary(self) -> str:
        unit = self.target
        if self.selected == 0:
            return (f"{self.label} run {self.run_id}: 0 new {unit} "
                    f"({self.skipped:,} already scored with the same features)")
        return (f"{self.label} run {self.run_id}: {self.selected:,} {unit} selected = "
                f"{self.scored:,} scored + {self.failed:,} failed; {self.skipped:,} skipped (already scored); "
                f"{self.seconds:.1f} s, {self.per_s:.1f} {unit}/s")


# --------------------------------------------------------------------------- executor side

_PREDICTORS: dict = {}
_LOADS = 0


def _task_device() -> str:
    """``cuda:N`` for the GPU Spark gave this task (spark.task.resource.gpu.amount), else ``cpu``."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{gpus.addresses[0]}"
    return "cpu"


def worker_predictor(folder: str, threads: int, bf16: bool, segments: bool = False):
    """The model of ``folder``, loaded once per Python worker (and device): a
    :class:`~moodlake.inference.Predictor`, or with ``segments`` a :class:`~moodlake.inference.SegmentPredictor`."""
    global _LOADS
    device = _task_device()
    key = (folder, device)
    if key not in _PREDICTORS:
        import torch

        from moodlake.inference import Predictor, SegmentPredictor

        if threads:
            torch.set_num_threads(threads)
        _PREDICTORS[key] = (SegmentPredictor.load(folder, device=device) if segments else
                            Predictor.load(folder, device=device, autocast_bf16=bf16))
        _LOADS += 1
    return _PREDICTORS[key]


def model_loads() -> int:
    """The models this Python worker has loaded so far (the staged rows' ``model_loads``)."""
    return _LOADS


def score_frames(frames: Iterator[pd.DataFrame], folder: str, threads: int, bf16: bool,
                 batch_sizes: tuple[int, int, int], sentiment_map: dict, counters=None) -> Iterator[pd.DataFrame]:
    """mapInPandas body: feature rows (FEATURE_COLUMNS + uploaded_at) -> STAGED rows.
    ``batch_sizes``: on a CPU, posts with an image and posts without one per forward pass; on a GPU,
    posts per forward pass."""
    from moodlake.inference import sentiment_of

    predictor = worker_predictor(folder, threads, bf16)
    cpu_batch, text_batch, gpu_batch = batch_sizes
    batch_size, text_batch_size = (gpu_batch, gpu_batch) if predictor.device.type == "cuda" else (cpu_batch, text_batch)
    labels, pid = predictor.labels, os.getpid()
    label_set = str(predictor.config.get("label_set"))
    for pdf in frames:
        rows = pdf.to_dict("records")
        meta = {r["post_id"]: r for r in rows}
        preds, rejected = predictor.predict_rows(rows, batch_size, text_batch_size)
        out = []

        def base(post_id: str, kind: str) -> dict:
            m = meta[post_id]
            return {**_EMPTY, "kind": kind, "post_id": post_id, "source": m["source"], "uploaded_at": m["uploaded_at"],
                    "post_content_hash": m["post_content_hash"], "features_version": int(m["features_version"]),
                    "has_image": bool(m["has_image"]), "has_text": bool(m["has_text"]),
                    "has_tags": bool(m["has_tags"]), "worker_pid": pid, "model_loads": _LOADS}

        for r in rejected:
            out.append({**base(r.post_id, "failure"), "reason_code": r.reason_code, "reason": r.reason})
        for p in preds:
            sentiment, sentiment_p = sentiment_of(labels, p.probs, label_set, sentiment_map, predictor.multi_label)
            top = p.probs.argmax(1)
            for i, post_id in enumerate(p.post_ids):
                if not p.usable[i]:
                    out.append({**base(post_id, "failure"), "reason_code": "not_scorable_by_model",
                                "reason": f"{predictor.config['model']} cannot score a post with these modalities"})
                    continue
                out.append({**base(post_id, "score"), "probs": p.probs[i].astype(float).tolist(),
                            "top_label": labels[top[i]], "top_probability": float(p.probs[i, top[i]]),
                            "sentiment": sentiment[i],
                            "sentiment_probability": None if np.isnan(sentiment_p[i]) else float(sentiment_p[i]),
                            "head": p.head[i]})
        if counters is not None:
            done, failed = counters
            failed.add(sum(o["kind"] == "failure" for o in out))
            done.add(sum(o["kind"] == "score" for o in out))
        # object columns: a missing value stays None (null), never NaN in a float column or a list column
        yield pd.DataFrame(out, columns=STAGED.fieldNames(), dtype=object)


# --------------------------------------------------------------------------- driver side


def _parse_day(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    from moodlake.records import to_utc

    try:
        return to_utc(value)
    except ValueError:
        raise ScoringError(f"--{name} {value!r} is not a date (YYYY-MM-DD) or timestamp") from None


class ScoringJob:
    """A scoring run of one model version over one kind of rows, exactly once per (row, version).

    Subclasses say what is scored (:attr:`TARGET`, :attr:`TABLES`: scores, failures, the run ledger),
    which models may score it (:meth:`model`) and how (``work`` of :meth:`_run`, which selects, stages
    and scores in chunks with :meth:`_chunks` and commits each with :meth:`_commit_chunk`)."""

    TARGET = "posts"                                   # scoring_runs.target
    TABLES: tuple[TableSpec, ...] = SCORING_TABLES     # scores, failures, runs

    def __init__(self, spark: SparkSession, cfg: Config):
        self.spark, self.cfg = spark, cfg
        self.scores, self.failures, self.runs = (cfg.table(t.key) for t in self.TABLES)

    # -- helpers
    def _staging(self, run_id: str) -> str:
        return f"{self.cfg.lakehouse.warehouse.rstrip('/')}/_staging/score-{run_id}"

    def _rmtree(self, path: str) -> None:
        delete_path(self.spark, path)

    def _record(self, run_id: str, version: str, production: bool, since, until, limit, status: str,
                started: dt.datetime, result: ScoringResult | None = None, message: str | None = None) -> None:
        from delta.tables import DeltaTable

        r = result or ScoringResult(run_id, version, target=self.TARGET)
        finished = None if status == "running" else now()
        seconds = (finished - started).total_seconds() if finished else None
        row = (run_id, version, production, since, until, limit, status, started, finished, r.selected, r.scored,
               r.failed, r.skipped, seconds, (r.selected / seconds) if seconds else None, redact(message),
               socket.gethostname(), os.getpid(), self.TARGET)
        df = self.spark.createDataFrame([row], SCORING_RUNS.schema)
        retry_conflicts(lambda: DeltaTable.forName(self.spark, self.runs).alias("t")
                        .merge(df.alias("s"), "t.run_id = s.run_id").whenMatchedUpdateAll().whenNotMatchedInsertAll()
                        .execute(), f"recording run {run_id} in {self.runs}", error=ScoringError)

    def _registered(self, version: str, task: str):
        """The ``moodlake.models`` row of ``version``, or of ``task``'s production model."""
        from moodlake.train.registry import PRODUCTION, TASK_NAMES, production_rows

        if not self.spark.catalog.tableExists(self.cfg.table("models")):
            raise ScoringError(f"no model registry ({self.cfg.table('models')}) yet: train a model and promote it "
                               "with `moodlake models promote VERSION`")
        rows = production_rows(self.spark, self.cfg, version, task)
        if not rows:
            raise ScoringError(f"no production model for {TASK_NAMES[task]}: train one and promote it with "
                               "`moodlake models promote VERSION`" if version == PRODUCTION else
                               f"no model version {version!r} in {self.cfg.table('models')}")
        return rows[0]

    def model(self, version: str) -> tuple[str, dict, bool]:
        """(registry folder, config.json, is production) of ``version`` ('production' or a version)."""
        raise NotImplementedError

    def create_views(self, config: dict) -> None:
        """(Re)create the analysts' views of what this job scores (``config``: the production model's)."""

    # -- the run
    def _run(self, version: str, work: Callable[[str, dict, ScoringResult], None], run_id: str | None = None,
             since=None, until=None, limit: int | None = None) -> ScoringResult:
        """One recorded run of ``version``: ``work(folder, config, result)`` selects and scores; the run
        reconciles (selected = scored + failed) or is recorded as failed."""
        ensure_tables(self.spark, self.cfg, self.TABLES)
        for stale in mark_interrupted(self.spark, self.runs):
            self._rmtree(self._staging(stale))
        folder, config, production = self.model(version)
        version = config["version"]
        for other in live_runs(self.spark, self.runs, f"model_version = '{version}'"):  # one live run per version
            raise ScoringError(f"model version {version} is being scored by run {other.run_id} (host "
                               f"{other.driver_host}, pid {other.driver_pid}, since "
                               f"{other.started_at:%Y-%m-%d %H:%M:%S}): wait for it to finish, or stop it and run again")
        run_id = run_id or new_run_id()
        started, clock = now(), time.monotonic()
        result = ScoringResult(run_id, version, target=self.TARGET)

        def record(status: str, message: str | None = None) -> None:
            self._record(run_id, version, production, since, until, limit, status, started,
                         None if status == "running" else result, message)

        record("running")
        try:
            work(folder, config, result)
            result.seconds = time.monotonic() - clock
        except Exception as e:
            result.seconds = time.monotonic() - clock
            record("failed", f"{type(e).__name__}: {e}")
            self._rmtree(self._staging(run_id))
            raise
        if not result.reconciles():
            msg = f"counts do not reconcile: {result.summary()}"
            record("failed", msg)
            raise ScoringError(msg)
        record("succeeded")
        self._rmtree(self._staging(run_id))
        if production:
            self.create_views(config)
        log.info(result.summary(), extra=SUMMARY)
        return result

    def _chunks(self, result: ScoringResult, chunks: int, staged_rows: Callable[[int, tuple], DataFrame],
                commit: Callable[[DataFrame], tuple[int, int]]) -> None:
        """Score and commit ``chunks`` chunks one after another: ``staged_rows(n, counters)`` is chunk
        ``n``'s scores and failures (STAGED-like rows with kind, worker_pid, model_loads; ``counters``:
        accumulators of scored and failed rows for the progress line), written once to staging;
        ``commit(staged)`` MERGEs them and returns (scored, failed). Sets the run's model loads."""
        sc = self.spark.sparkContext
        done_acc, failed_acc = sc.accumulator(0), sc.accumulator(0)
        committed = {"scored": 0, "failed": 0}
        workers: dict[int, int] = {}
        staging, label = self._staging(result.run_id), result.label
        with ProgressReporter(label, result.selected,
                              lambda: (max(done_acc.value, committed["scored"]), max(failed_acc.value, committed["failed"]),
                                       None), self.cfg.scoring.progress_interval_s):
            for n in range(chunks):
                path = f"{staging}/chunk-{n:05d}"
                staged_rows(n, (done_acc, failed_acc)).write.mode("overwrite").parquet(path)
                staged = self.spark.read.parquet(path)
                scored, failed = commit(staged)
                result.scored += scored
                result.failed += failed
                committed["scored"], committed["failed"] = result.scored, result.failed
                for r in staged.groupBy("worker_pid").agg(F.max("model_loads")).collect():
                    workers[r[0]] = max(workers.get(r[0], 0), r[1])
                self._rmtree(path)
                log.info("committed chunk %d/%d of run %s (%d scored, %d failed so far)", n + 1, chunks,
                         result.run_id, result.scored, result.failed)
        result.workers, result.model_loads = len(workers), sum(workers.values())
        log.info("%s: the model was loaded %d time(s) by %d Python worker(s)", label, result.model_loads,
                 result.workers)

    def _commit_chunk(self, staged: DataFrame, scores: DataFrame, failures: DataFrame, key: tuple[str, ...],
                      run_id: str) -> tuple[int, int]:
        """MERGE a chunk's ``scores`` and ``failures`` (rows of the two tables, made from ``staged``) on
        ``key``: a row that scores now loses its failure row, one that fails now loses its stale score.
        Returns (scored, failed)."""
        from delta.tables import DeltaTable

        on = " AND ".join(f"t.{k} = s.{k}" for k in key)
        counts = {r["kind"]: r["count"] for r in staged.groupBy("kind").count().collect()}
        n_scored, n_failed = counts.get("score", 0), counts.get("failure", 0)

        def merge(table: str, source: DataFrame, upsert: bool) -> None:
            # a commit conflict with another writer (a concurrent scoring run) is retried: a MERGE on
            # the key writes the same rows however often it runs
            def once():
                m = DeltaTable.forName(self.spark, table).alias("t").merge(source.alias("s"), on)
                (m.whenMatchedUpdateAll().whenNotMatchedInsertAll() if upsert else m.whenMatchedDelete()).execute()
            retry_conflicts(once, f"run {run_id}: committing a chunk to {table}", error=ScoringError)

        if n_scored:
            merge(self.scores, scores, upsert=True)
            merge(self.failures, scores.select(*key), upsert=False)  # scored now: no longer a failure
        if n_failed:
            merge(self.failures, failures, upsert=True)
            merge(self.scores, failures.select(*key), upsert=False)  # its old score described other features
        return n_scored, n_failed


class Scorer(ScoringJob):
    """Runs scoring jobs of posts on the lakehouse described by ``cfg``."""

    def __init__(self, spark: SparkSession, cfg: Config):
        super().__init__(spark, cfg)
        self.features, self.posts = cfg.table("post_features"), cfg.table("posts")

    def model(self, version: str) -> tuple[str, dict, bool]:
        """(registry folder, config.json, is production) of ``version`` ('production' or a version)."""
        from moodlake.inference import read_config
        from moodlake.train.registry import POSTS, PRODUCTION, SEGMENTS

        row = self._registered(version, POSTS)
        config = read_config(row.path)
        if config.get("task") == SEGMENTS:
            raise ScoringError(f"model {row.version} scores video segments, not posts: `moodlake score segments "
                               f"--version {row.version}`")
        if list(config["labels"]) != list(row.labels):
            raise ScoringError(f"model {row.version}: its folder predicts {config['labels']} but the registry says "
                               f"{list(row.labels)}")
        if list(config["labels"]) != list(self.cfg.label_set(config["label_set"])):
            raise ScoringError(f"model {row.version} predicts {config['labels']}, which is not label set "
                               f"{config['label_set']} {list(self.cfg.label_set(config['label_set']))} of the configuration")
        wanted = self.cfg.scoring.label_set
        if wanted and config["label_set"] != wanted:
            raise ScoringError(f"model {row.version} predicts label set {config['label_set']}; scoring.label_set "
                               f"is {wanted}: the emotion tables expect {wanted}")
        return row.path, config, row.stage == PRODUCTION

    def create_views(self, config: dict) -> None:
        from moodlake.views import create_views

        create_views(self.spark, self.cfg, list(config["labels"]))

    def select(self, version: str, since, until, sources=()) -> tuple[DataFrame, DataFrame, DataFrame]:
        """(the window's feature keys with upload time, those of them still to score by ``version``, the
        keys ``version`` has already scored or failed)."""
        feats = self.spark.table(self.features).select("post_id", "source", "post_content_hash", "features_version",
                                                        "computed_at")
        if sources:
            feats = feats.where(F.col("source").isin(*sources))
        posts = self.spark.table(self.posts).select("post_id", "uploaded_at")
        window = feats.join(posts, "post_id", "left")
        if since is not None:
            window = window.where(F.col("uploaded_at") >= F.lit(since))
        if until is not None:
            window = window.where(F.col("uploaded_at") < F.lit(until))
        keys = ["post_id", "post_content_hash", "features_version"]
        done = (self.spark.table(self.scores).where(F.col("model_version") == version).select(*keys)
                .unionByName(self.spark.table(self.failures).where(F.col("model_version") == version).select(*keys)))
        window = window.drop("source")
        return window, window.join(done, keys, "left_anti"), done

    # -- the job
    def run(self, version: str = "production", since: str | None = None, until: str | None = None,
            limit: int | None = None, run_id: str | None = None, sources: tuple[str, ...] = ()) -> ScoringResult:
        since_t, until_t = _parse_day(since, "since"), _parse_day(until, "until")
        if limit is not None and limit < 1:
            raise ScoringError(f"--limit must be at least 1, not {limit}")
        return self._run(version, lambda folder, config, result: self._score(
            folder, config, since_t, until_t, limit, result, tuple(sources)), run_id, since_t, until_t, limit)

    def _score(self, folder: str, config: dict, since, until, limit, result: ScoringResult, sources=()) -> None:
        s, version = self.cfg.scoring, config["version"]
        window, todo, done = self.select(version, since, until, sources)
        if limit is not None:
            todo = todo.orderBy(F.col("uploaded_at").asc_nulls_last(), "post_id").limit(limit)
        staging = self._staging(result.run_id)
        todo.select("post_id", "uploaded_at", "computed_at").write.mode("overwrite").parquet(f"{staging}/selected")
        selected = self.spark.read.parquet(f"{staging}/selected")
        result.selected = selected.count()
        result.skipped = window.join(done, ["post_id", "post_content_hash", "features_version"], "left_semi").count()
        log.info("score %s: %d posts selected, %d already scored with the same features", version,
                 result.selected, result.skipped)
        if result.selected == 0:
            return
        chunks = -(-result.selected // s.chunk_size)
        selected = selected.withColumn("chunk", F.pmod(F.xxhash64("post_id"), F.lit(chunks)))
        self.spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(s.arrow_batch_rows))
        parts = max(1, s.partitions or self.spark.sparkContext.defaultParallelism)

        def staged_rows(n: int, counters) -> DataFrame:
            ids = selected.where(F.col("chunk") == n).select("post_id", "uploaded_at", "computed_at")
            low = ids.agg(F.min("computed_at")).first()[0]
            feats = self.spark.table(self.features)
            if low is not None:  # lets Delta skip the files of older feature runs
                feats = feats.where(F.col("computed_at") >= F.lit(low))
            rows = feats.select(*FEATURE_COLUMNS).join(F.broadcast(ids.drop("computed_at")), "post_id")
            fn = _partition_fn(folder, s.torch_threads, s.gpu_bf16, (s.batch_size, s.text_batch_size, s.gpu_batch_size),
                               dict(self.cfg.features.sentiment_map), counters)
            return rows.repartition(parts).mapInPandas(fn, STAGED)

        self._chunks(result, chunks, staged_rows, lambda staged: self._commit(staged, config, result.run_id))

    def _commit(self, staged: DataFrame, config: dict, run_id: str) -> tuple[int, int]:
        version, t = config["version"], now()
        labels = F.array(*[F.lit(lab) for lab in config["labels"]])
        scores = staged.where("kind = 'score'").select(
            "post_id", F.lit(version).alias("model_version"), "source", "uploaded_at",
            F.lit(config["label_set"]).alias("label_set"), F.map_from_arrays(labels, "probs").alias("probabilities"),
            "top_label", "top_probability", "sentiment", "sentiment_probability", "head", "has_image", "has_text",
            "has_tags", "post_content_hash", "features_version", F.lit(t).alias("scored_at"),
            F.lit(run_id).alias("run_id"))
        failures = staged.where("kind = 'failure'").select(
            "post_id", F.lit(version).alias("model_version"), "source", "reason_code", "reason", "post_content_hash",
            "features_version", F.lit(t).alias("failed_at"), F.lit(run_id).alias("run_id"))
        return self._commit_chunk(staged, scores, failures, ("post_id", "model_version"), run_id)


def _partition_fn(folder: str, threads: int, bf16: bool, batch_sizes: tuple[int, int, int], sentiment_map: dict,
                  counters):
    """The mapInPandas function: a closure over plain settings and the registry folder's path only."""
    def fn(frames):
        return score_frames(frames, folder, threads, bf16, batch_sizes, sentiment_map, counters)
    return fn


def score(spark: SparkSession, cfg: Config, version: str = "production", since: str | None = None,
          until: str | None = None, limit: int | None = None, sources: tuple[str, ...] = ()) -> ScoringResult:
    return Scorer(spark, cfg).run(version, since, until, limit, sources=sources)
