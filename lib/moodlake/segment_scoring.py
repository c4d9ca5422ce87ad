"""Scoring video segments: every labelled segment scored once by a model version of video segments
(``williams_blstm``, ``task: intensity``), with the guarantees of post scoring (:mod:`moodlake.scoring`).

``score_segments(spark, cfg)`` (``moodlake score segments``, ``jobs/score.py segments``) goes like this:

1. **What a segment is, for the model.** The model's dataset manifest (``config.json``'s dataset:
   ``<path>/manifest.json``, else its row of ``moodlake.datasets``) names the source, the labels
   sequence whose intervals are the segments, the feature roots of each modality, the reference
   (the words), ``maxlen`` and ``keep``. Scoring aligns exactly as that build did:
   :func:`moodlake.data.segments.video_streams` reassembles a video's feature chunks and
   :func:`moodlake.data.align.build_segments` aligns them, the functions the build uses.
2. **Select.** The segments of ``moodlake.segment_labels`` (that source and sequence, or ``--source``'s)
   that the version has not scored, or scored (or failed) on other content: the label row's
   ``content_hash``, or the video's features (``features_hash``: a hash over the content hashes of the
   video's ``moodlake.video_features`` chunks of the roots the model reads). The segments, each marked
   done or not, are written once to the run's staging folder (one pass over the tables); those to
   score (at most ``--limit``, by source, video and segment) are cut into chunks of about
   ``scoring.chunk_size`` segments by a hash of the video, so that a video's segments are in one chunk.
3. **Align and score inside Spark, per video.** Each chunk's feature rows (only those of its videos
   and the model's roots, the nested arrays flattened) and segment rows are cogrouped by video
   (``groupBy(...).cogroup(...).applyInPandas``): one call per video aligns its segments and runs
   :class:`moodlake.inference.SegmentPredictor` on them, the model loaded once per Python worker
   (:func:`moodlake.scoring.worker_predictor`). Nothing is collected to the driver.
4. **Failures, with a reason** (``moodlake.segment_scoring_failures``): a video without the features
   of a modality the model reads, or of the reference (``video_has_no_<modality>_features``); a video
   whose features have other sizes than the model was built for (``feature_dims_mismatch``); a
   segment no word overlaps (``no_reference_step_in_segment``, as the dataset build names it); an
   intensity that is not finite (``non_finite_intensity``: NaN features in the segment).
5. **Commit and record** as post scoring does (:class:`moodlake.scoring.ScoringJob`): one MERGE per
   table and chunk on (source, segment_id, model_version); a killed run loses at most the chunk in
   flight and the next run selects what is still missing; ``moodlake.scoring_runs`` records the run
   with ``target = 'segments'`` and ``selected = scored + failed``; a run of a version that a live run
   is scoring refuses to start. After a run of the production model of video segments, the view
   ``segment_emotions`` is (re)created (:func:`moodlake.views.create_segment_views`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake import storage
from moodlake.config import Config
from moodlake.data.segments import MODALITIES
from moodlake.runs import now
from moodlake.scoring import ScoringError, ScoringJob, ScoringResult, model_loads, worker_predictor
from moodlake.tables import SEGMENT_EMOTIONS, SEGMENT_SCORING_TABLES

log = logging.getLogger(__name__)

# a segment selected to score: its label row and the hashes of what it is scored on
SEGMENT_KEYS = ("source", "sequence", "video_id", "segment", "segment_id", "start_s", "end_s", "label_content_hash",
                "features_hash")
NO_FEATURES = "none"  # features_hash of a video without any feature rows the model reads

_STR, _INT, _DOUBLE = T.StringType(), T.IntegerType(), T.DoubleType()
# a chunk's staged rows: kind score or failure, the segment (SEGMENT_KEYS), then what scoring found
SEGMENT_STAGED = T.StructType([T.StructField(name, dtype) for name, dtype in (
    ("kind", _STR), ("source", _STR), ("sequence", _STR), ("video_id", _STR), ("segment", _INT), ("segment_id", _STR),
    ("start_s", _DOUBLE), ("end_s", _DOUBLE), ("label_content_hash", _STR), ("features_hash", _STR),
    ("intensities", T.ArrayType(_DOUBLE)),  # in the model's label order
    ("dominant_emotion", _STR), ("dominant_intensity", _DOUBLE), ("steps", _INT), ("reason_code", _STR),
    ("reason", _STR), ("worker_pid", _INT), ("model_loads", _INT))])


@dataclass(frozen=True)
class SegmentPlan:
    """How a model version's segments are made, from its dataset manifest (plain values: it travels to
    the Python workers)."""

    version: str
    source: str                     # the dataset's source (the default of what is scored)
    sequence: str                   # the labels sequence whose intervals are the segments
    roots: dict                     # modality -> feature root, for the modalities the model reads and the reference
    reference: str
    maxlen: int
    keep: str
    dims: dict                      # modality -> feature size the model was built for (all three)
    labels: tuple                   # the model's outputs in order

    @classmethod
    def of(cls, config: dict, manifest: dict) -> "SegmentPlan":
        seg = manifest["definition"]["segments"]
        reads = tuple(config["build_kwargs"].get("modalities") or MODALITIES)
        maxlen = int(manifest["maxlen"])
        if int(config["build_kwargs"].get("maxlen", maxlen)) != maxlen:
            raise ScoringError(f"model {config['version']} reads {config['build_kwargs']['maxlen']} steps but its "
                               f"dataset's segments have {maxlen}")
        return cls(version=config["version"], source=manifest["source"], sequence=seg["labels"],
                   roots={m: seg["modalities"][m] for m in MODALITIES if m in reads or m == seg["reference"]},
                   reference=seg["reference"], maxlen=maxlen, keep=seg.get("keep", "last"),
                   dims={m: int(d) for m, d in manifest["dims"].items()}, labels=tuple(config["labels"]))


# --------------------------------------------------------------------------- executor side


def score_video(feats: pd.DataFrame, segs: pd.DataFrame, plan: SegmentPlan, folder: str, threads: int,
                batch_size: int, counters=None) -> pd.DataFrame:
    """cogroup body: one video's feature rows (source, video_id, modality, chunk, dims, intervals and
    features flattened) and its selected segments (:data:`SEGMENT_KEYS`) -> SEGMENT_STAGED rows."""
    from moodlake.data.align import build_segments
    from moodlake.data.segments import video_streams

    if segs.empty:
        return pd.DataFrame([], columns=SEGMENT_STAGED.fieldNames())
    segs = segs.sort_values("segment", kind="stable").reset_index(drop=True)
    video = str(segs["video_id"].iloc[0])
    pid = os.getpid()
    keys = segs[list(SEGMENT_KEYS)].to_dict("records")
    empty = dict.fromkeys(SEGMENT_STAGED.fieldNames())

    def failure(i: int, code: str, reason: str) -> dict:
        return {**empty, **keys[i], "kind": "failure", "reason_code": code, "reason": reason, "worker_pid": pid,
                "model_loads": model_loads()}

    streams = video_streams(feats.itertuples(index=False), plan.roots).get(video, {})
    out: list[dict] = []
    missing = [m for m in plan.roots if m not in streams]
    wrong = {m: f.shape[1] for m, (_, f) in streams.items() if f.shape[1] != plan.dims[m]}
    if missing:
        m = plan.reference if plan.reference in missing else missing[0]
        why = "the reference: its words are the segments' steps" if m == plan.reference else "the model reads them"
        out = [failure(i, f"video_has_no_{m}_features",
                       f"video {video} has no {plan.roots[m]} ({m}) features ({why})") for i in range(len(keys))]
    elif wrong:
        what = ", ".join(f"{plan.roots[m]} ({m}) has {d} per step, the model reads {plan.dims[m]}"
                         for m, d in sorted(wrong.items()))
        out = [failure(i, "feature_dims_mismatch", f"video {video}: {what}") for i in range(len(keys))]
    else:
        seq = build_segments({video: streams}, [video] * len(keys), segs["segment"].tolist(),
                             segs[["start_s", "end_s"]].to_numpy(np.float64), np.zeros((len(keys), 0)),
                             reference=plan.reference, maxlen=plan.maxlen, keep=plan.keep, dims=plan.dims)
        usable = [i for i in range(len(keys)) if seq.lengths[i] > 0]
        for i in range(len(keys)):
            if seq.lengths[i] == 0:
                out.append(failure(i, "no_reference_step_in_segment",
                                   f"no {plan.roots[plan.reference]} ({plan.reference}) step overlaps segment "
                                   f"[{keys[i]['start_s']:.3f}, {keys[i]['end_s']:.3f}] s of video {video}"))
        if usable:
            predictor = worker_predictor(folder, threads, False, segments=True)
            rows = [SimpleNamespace(segment_id=keys[i]["segment_id"], video_id=video, length=int(seq.lengths[i]),
                                    **{m: seq.features[m][i] for m in MODALITIES}) for i in usable]
            intensities = predictor.predict_rows(rows, batch_size)
            for i, values in zip(usable, intensities):
                if not np.isfinite(values).all():
                    out.append(failure(i, "non_finite_intensity", f"the model gave {values.tolist()} for segment "
                                                                  f"{keys[i]['segment_id']}: NaN or infinite features"))
                    continue
                top = int(values.argmax())
                out.append({**empty, **keys[i], "kind": "score", "intensities": values.astype(float).tolist(),
                            "dominant_emotion": plan.labels[top], "dominant_intensity": float(values[top]),
                            "steps": int(seq.steps[i]), "worker_pid": pid, "model_loads": model_loads()})
    if counters is not None:
        done, failed = counters
        failed.add(sum(o["kind"] == "failure" for o in out))
        done.add(sum(o["kind"] == "score" for o in out))
    # object columns: a missing value stays None (null), never NaN
    return pd.DataFrame(out, columns=SEGMENT_STAGED.fieldNames(), dtype=object)


def _video_fn(plan: SegmentPlan, folder: str, threads: int, batch_size: int, counters):
    """The cogroup function: a closure over plain settings and the registry folder's path only."""
    def fn(feats, segs):
        return score_video(feats, segs, plan, folder, threads, batch_size, counters)
    return fn


# --------------------------------------------------------------------------- driver side


def read_manifest(spark, cfg: Config, config: dict) -> dict:
    """The manifest of the dataset a model was trained on: its folder's manifest.json, else its row of
    ``moodlake.datasets`` (the folder may have been cleaned up)."""
    d = config.get("dataset") or {}
    path = storage.join(d["path"], "manifest.json") if d.get("path") else None
    if path and storage.exists(path):
        return json.loads(storage.read_text(path))
    if spark.catalog.tableExists(cfg.table("datasets")):
        row = (spark.table(cfg.table("datasets")).where((F.col("name") == d.get("name"))
                                                        & (F.col("version") == d.get("version")))
               .select("manifest").first())
        if row is not None and row.manifest:
            return json.loads(row.manifest)
    raise ScoringError(f"model {config['version']}: the manifest of its dataset {d.get('name')} {d.get('version')} "
                       f"is neither at {path} nor in {cfg.table('datasets')}: it says how segments are aligned")


class SegmentScorer(ScoringJob):
    """Runs scoring jobs of video segments on the lakehouse described by ``cfg``."""

    TARGET = "segments"
    TABLES = SEGMENT_SCORING_TABLES

    def model(self, version: str) -> tuple[str, dict, bool]:
        """(registry folder, config.json, is production) of ``version`` ('production': the production
        model of video segments)."""
        from moodlake.inference import read_config
        from moodlake.train.registry import PRODUCTION, SEGMENTS

        row = self._registered(version, SEGMENTS)
        config = read_config(row.path)
        if config.get("task") != SEGMENTS:
            raise ScoringError(f"model {row.version} ({config['model']}) scores posts, not video segments: "
                               f"`moodlake score --version {row.version}`")
        if sorted(config["labels"]) != sorted(SEGMENT_EMOTIONS):
            raise ScoringError(f"model {row.version} predicts {list(config['labels'])}; "
                               f"{self.scores} has a column per emotion of {list(SEGMENT_EMOTIONS)}")
        return row.path, config, row.stage == PRODUCTION

    def create_views(self, config: dict) -> None:
        from moodlake.tables import ensure_tables
        from moodlake.views import create_segment_views

        ensure_tables(self.spark, self.cfg, self.TABLES)
        create_segment_views(self.spark, self.cfg)

    def select(self, plan: SegmentPlan, sources: tuple[str, ...]) -> DataFrame:
        """The segments of ``sources`` (:data:`SEGMENT_KEYS`), each with ``done``: whether the plan's version
        has scored (or failed) it on the same content already."""
        labels = (self.spark.table(self.cfg.table("segment_labels"))
                  .where(F.col("source").isin(*sources) & (F.col("sequence") == plan.sequence))
                  .select("source", "sequence", "video_id", "segment", "segment_id", "start_s", "end_s",
                          F.col("content_hash").alias("label_content_hash")))
        chunk_hash = F.concat_ws(":", "modality", F.col("chunk").cast("string"), "content_hash")
        hashes = (self.spark.table(self.cfg.table("video_features"))
                  .where(F.col("source").isin(*sources) & F.col("modality").isin(*plan.roots.values()))
                  .groupBy("source", "video_id")
                  .agg(F.sha2(F.concat_ws(",", F.array_sort(F.collect_list(chunk_hash))), 256).alias("features_hash")))
        window = (labels.join(hashes, ["source", "video_id"], "left")
                  .withColumn("features_hash", F.coalesce("features_hash", F.lit(NO_FEATURES))))
        keys = ["source", "segment_id", "label_content_hash", "features_hash"]
        mine = F.col("model_version") == plan.version
        done = (self.spark.table(self.scores).where(mine).select(*keys)
                .unionByName(self.spark.table(self.failures).where(mine).select(*keys))
                .withColumn("done", F.lit(True)))
        return window.join(done, keys, "left").withColumn("done", F.coalesce("done", F.lit(False)))

    # -- the job
    def run(self, version: str = "production", sources: tuple[str, ...] = (), limit: int | None = None,
            run_id: str | None = None) -> ScoringResult:
        """Score the segments ``version`` has not scored on their current content: those of its dataset's
        source, or of ``sources`` (videos with the same feature roots); at most ``limit`` (by source,
        video and segment)."""
        if limit is not None and limit < 1:
            raise ScoringError(f"--limit must be at least 1, not {limit}")
        return self._run(version, lambda folder, config, result: self._score(folder, config, result, tuple(sources),
                                                                            limit), run_id, limit=limit)

    def _score(self, folder: str, config: dict, result: ScoringResult, sources: tuple[str, ...],
               limit: int | None) -> None:
        s = self.cfg.scoring
        plan = SegmentPlan.of(config, read_manifest(self.spark, self.cfg, config))
        sources = sources or (plan.source,)
        staging = self._staging(result.run_id)
        # the window, each segment marked done or not, evaluated once
        self.select(plan, sources).write.mode("overwrite").parquet(f"{staging}/window")
        window = self.spark.read.parquet(f"{staging}/window")
        counts = {r["done"]: r["count"] for r in window.groupBy("done").count().collect()}
        todo, selected = counts.get(False, 0), window.where(~F.col("done")).select(*SEGMENT_KEYS)
        if limit is not None and todo > limit:
            selected.orderBy("source", "video_id", "segment").limit(limit).write.mode("overwrite").parquet(
                f"{staging}/selected")
            todo, selected = limit, self.spark.read.parquet(f"{staging}/selected")
        result.selected, result.skipped = todo, counts.get(True, 0)
        log.info("%s: %d segments of %s selected, %d already scored with the same content", result.label,
                 result.selected, ", ".join(sources), result.skipped)
        if result.selected == 0:
            return
        chunks = -(-result.selected // s.chunk_size)
        selected = selected.withColumn("chunk", F.pmod(F.xxhash64("source", "video_id"), F.lit(chunks)))
        features = (self.spark.table(self.cfg.table("video_features"))
                    .where(F.col("source").isin(*sources) & F.col("modality").isin(*plan.roots.values())))

        def staged_rows(n: int, counters) -> DataFrame:
            segs = selected.where(F.col("chunk") == n).drop("chunk")
            videos = F.broadcast(segs.select("source", "video_id").distinct())
            feats = (features.join(videos, ["source", "video_id"], "left_semi")  # the chunk's videos' rows only
                     .select("source", "video_id", "modality", "chunk", "dims",
                             F.flatten("intervals").alias("intervals"), F.flatten("features").alias("features")))
            fn = _video_fn(plan, folder, s.torch_threads, s.gpu_batch_size, counters)
            return (feats.groupBy("source", "video_id").cogroup(segs.groupBy("source", "video_id"))
                    .applyInPandas(fn, SEGMENT_STAGED))

        self._chunks(result, chunks, staged_rows, lambda staged: self._commit(staged, plan, result.run_id))

    def _commit(self, staged: DataFrame, plan: SegmentPlan, run_id: str) -> tuple[int, int]:
        t = now()
        segment = ["source", "segment_id", F.lit(plan.version).alias("model_version"), "video_id", "sequence",
                   "segment"]
        hashes = ["label_content_hash", "features_hash"]
        scores = staged.where("kind = 'score'").select(
            *segment, "start_s", "end_s",
            *[F.col("intensities")[plan.labels.index(e)].alias(e) for e in SEGMENT_EMOTIONS],
            "dominant_emotion", "dominant_intensity", "steps", *hashes, F.lit(t).alias("scored_at"),
            F.lit(run_id).alias("run_id"))
        failures = staged.where("kind = 'failure'").select(
            *segment, "reason_code", "reason", *hashes, F.lit(t).alias("failed_at"), F.lit(run_id).alias("run_id"))
        return self._commit_chunk(staged, scores, failures, ("source", "segment_id", "model_version"), run_id)


def score_segments(spark: SparkSession, cfg: Config, version: str = "production", sources: tuple[str, ...] = (),
                   limit: int | None = None) -> ScoringResult:
    return SegmentScorer(spark, cfg).run(version, sources, limit)
