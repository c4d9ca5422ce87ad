"""``moodlake ingest csd``: CMU-MultimodalSDK computational sequences into ``moodlake.video_features``
(feature sequences) and ``moodlake.segment_labels`` (a labels sequence), bad videos into
``moodlake.ingest_failures``, the run into ``moodlake.ingest_runs``.

A run goes like this (the post ingest's engine, :class:`moodlake.ingest.Ingestor`, with video rows):

1. The driver opens every file: one that is unusable as a whole stops the run before anything is
   written (:class:`moodlake.sources.csd.CsdError`, naming the file; the run is recorded as failed).
   It lists each sequence's videos with their shapes; a (sequence, video) that an earlier file of the
   run already gave fails as ``duplicate_input``.
2. The videos are cut into commits of at most ``ingest.chunk_size`` videos and :data:`COMMIT_BYTES`
   of features. Executors read and check each video (:mod:`moodlake.sources.csd`) and build its rows,
   or its failure; the rows are staged as Parquet once.
3. Per table, each staged video is new (no rows yet), unchanged (same ``record_hash``: nothing is
   written) or changed; one MERGE commits the new and changed ones, and deletes the rows a changed
   video no longer has. New failures (or known ones with a new reason) MERGE into ``ingest_failures``
   on ``failure_id``; a video that lands clears its earlier failures. A video that landed once and
   fails later keeps its rows (as a post does) beside its failure.
4. ``ingest_runs`` records the run, counted in videos (a video of one sequence):
   ``input_records = posts_new (new) + posts_updated (changed) + posts_unchanged + failures``;
   ``args`` adds the segments (``segments = segments_landed + segments_failed``) and the feature steps.

Running it again on the same files changes no row.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake import records
from moodlake.ingest import IngestError, IngestResult, Ingestor
from moodlake.runs import new_run_id, now
from moodlake.sources.csd import FEATURES_ROLE, LABELS_ROLE, CsdFailure, CsdFile, CsdRecord, VideoEntry
from moodlake.tables import (FAILURE_CONTENT, INGEST_FAILURES, INGEST_RUNS, SEGMENT_LABEL_CONTENT, SEGMENT_LABELS,
                             VIDEO_FEATURE_CONTENT, VIDEO_FEATURES, TableSpec)

log = logging.getLogger(__name__)

# features per video_features row, at most (bytes of float32 values; see moodlake.tables.VIDEO_FEATURES)
CHUNK_BYTES = 1 << 20
# features read per commit, at most (with ingest.chunk_size videos): what a killed run redoes
COMMIT_BYTES = 256 << 20

STAGING_SCHEMA = T.StructType([
    T.StructField("kind", T.StringType(), False),
    T.StructField("video", VIDEO_FEATURE_CONTENT, True),
    T.StructField("segment", SEGMENT_LABEL_CONTENT, True),
    T.StructField("failure", FAILURE_CONTENT, True),
])
@dataclass(frozen=True)
class Target:
    """A table the staged rows of one kind go to."""

    spec: TableSpec
    video_key: tuple[str, ...]   # the columns that name one video in it
    first: str                   # the column that is 0 on a video's first row (one row per video)
    role: str                    # the files its rows come from


# staged kind -> its table
TARGETS = {
    "video": Target(VIDEO_FEATURES, ("source", "modality", "video_id"), "chunk", FEATURES_ROLE),
    "segment": Target(SEGMENT_LABELS, ("source", "sequence", "video_id"), "segment", LABELS_ROLE),
}
_SEP = "\x01"  # joins a video's key columns into one string (ids never hold it)


@dataclass(frozen=True)
class CsdItem:
    """One video of one sequence of one file, as listed on the driver."""

    entry: VideoEntry
    role: str                                 # FEATURES_ROLE or LABELS_ROLE
    dims: int | None = None                   # columns every video of the sequence must have
    names: tuple[str, ...] | None = None      # their names
    error: tuple[str, str] | None = None      # (reason_code, reason) known before reading


@dataclass
class CsdRequest:
    """What a run ingests; ``name`` and ``describe()`` as :class:`moodlake.ingest.Source` has them for
    the run ledger."""

    name: str
    features: tuple[str, ...]
    labels: tuple[str, ...]
    counts: dict = field(default_factory=dict)
    sequences: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"source": "csd", "source_name": self.name, "features": list(self.features),
                "labels": list(self.labels), "sequences": self.sequences, **self.counts}


@dataclass
class CsdResult(IngestResult):
    """Counts in videos (a video of one sequence), plus the labels' segments and the features' steps."""

    segments: int = 0
    segments_landed: int = 0
    segments_failed: int = 0
    steps_landed: int = 0

    def reconciles(self) -> bool:
        return super().reconciles() and self.segments == self.segments_landed + self.segments_failed

    def counts(self) -> dict:
        return {"segments": self.segments, "segments_landed": self.segments_landed,
                "segments_failed": self.segments_failed, "steps_landed": self.steps_landed}

    def summary(self) -> str:
        return (f"ingest csd {self.source} run {self.run_id}: {self.input_records:,} videos in = "
                f"{self.posts_new:,} new + {self.posts_updated:,} updated + {self.posts_unchanged:,} unchanged + "
                f"{self.failures:,} failed; {self.segments:,} segments = {self.segments_landed:,} landed + "
                f"{self.segments_failed:,} failed; {self.steps_landed:,} feature steps")


# --------------------------------------------------------------------------- executor side


def _sha256(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else records.canonical_json(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _names_and_hash(rec: CsdRecord, source: str) -> tuple[list[str] | None, str]:
    """(the record's feature names, its record_hash: everything its rows hold, whatever their layout)."""
    names = list(rec.feature_names) if rec.feature_names else None
    return names, _sha256(source, rec.sequence, rec.video_id, names, rec.path, rec.features.shape,
                          rec.intervals.tobytes(), rec.features.tobytes())


def video_rows(rec: CsdRecord, source: str, chunk_bytes: int = CHUNK_BYTES) -> list[dict]:
    """The video_features rows of a feature record: chunks of at most ``chunk_bytes`` of features."""
    n, d = rec.rows, rec.dims
    per = max(1, chunk_bytes // (4 * d))
    chunks = math.ceil(n / per)
    names, record_hash = _names_and_hash(rec, source)
    out = []
    for c in range(chunks):
        a, b = c * per, min(n, (c + 1) * per)
        iv, ft = rec.intervals[a:b], rec.features[a:b]
        row = {"source": source, "modality": rec.sequence, "video_id": rec.video_id, "chunk": c, "chunks": chunks,
               "step_start": a, "steps": b - a, "video_steps": n, "dims": d, "feature_names": names,
               "intervals": iv.tolist(), "features": ft.tolist(), "source_file": rec.path,
               "record_hash": record_hash}
        row["content_hash"] = _sha256(record_hash, c, chunks, a, b, iv.tobytes(), ft.tobytes())
        out.append(row)
    return out


def segment_rows(rec: CsdRecord, source: str) -> list[dict]:
    """The segment_labels rows of a labels record, one per segment."""
    names, record_hash = _names_and_hash(rec, source)
    out = []
    for i in range(rec.rows):
        row = {"source": source, "sequence": rec.sequence, "video_id": rec.video_id, "segment": i,
               "segment_id": f"{rec.video_id}[{i}]", "start_s": float(rec.intervals[i, 0]),
               "end_s": float(rec.intervals[i, 1]), "label_values": rec.features[i].tolist(), "label_names": names,
               "source_file": rec.path, "record_hash": record_hash}
        row["content_hash"] = _sha256(record_hash, i, rec.intervals[i].tobytes(), rec.features[i].tobytes())
        out.append(row)
    return out


def failure_row(source: str, item: CsdItem, code: str, reason: str) -> dict:
    e = item.entry
    return records.failure_row(
        source=source, input_ref=e.input_ref, stage="read" if code in ("duplicate_input", "unreadable") else "validate",
        reason_code=code, reason=reason, permanent=True,
        raw={"file": e.path, "sequence": e.sequence, "video_id": e.video_id, "role": item.role, "rows": e.rows,
             "dims": e.dims})


def item_rows(item: CsdItem, source: str, files: dict[str, CsdFile], chunk_bytes: int = CHUNK_BYTES
              ) -> list[tuple[str, dict]]:
    """(staged kind, row) of one video: its chunks or segments, or its failure."""
    if item.error:
        return [("failure", failure_row(source, item, *item.error))]
    e = item.entry
    f = files.get(e.path)
    if f is None:
        f = files[e.path] = CsdFile(e.path)
    rec = f.read(e.sequence, e.video_id, ordered=item.role == FEATURES_ROLE, dims=item.dims, names=item.names)
    if isinstance(rec, CsdFailure):
        return [("failure", failure_row(source, item, rec.reason_code, rec.reason))]
    if item.role == LABELS_ROLE:
        return [("segment", r) for r in segment_rows(rec, source)]
    return [("video", r) for r in video_rows(rec, source, chunk_bytes)]


def _staging_tuple(kind_row: tuple[str, dict]) -> tuple:
    kind, row = kind_row
    return (kind,) + tuple(None if kind != k else tuple(row[f.name] for f in schema.fields)
                           for k, schema in (("video", VIDEO_FEATURE_CONTENT), ("segment", SEGMENT_LABEL_CONTENT),
                                             ("failure", FAILURE_CONTENT)))


def _run_partition(items: Iterable[CsdItem], source: str, chunk_bytes: int) -> Iterator[tuple]:
    files: dict[str, CsdFile] = {}
    try:
        for item in items:
            yield from map(_staging_tuple, item_rows(item, source, files, chunk_bytes))
    finally:
        for f in files.values():
            f.close()


# --------------------------------------------------------------------------- driver side


def plan(request: CsdRequest) -> list[CsdItem]:
    """Every video of every file, labels first, in the files' order. Raises CsdError for a file that
    cannot be read as a whole (before anything is written)."""
    given = list(request.labels) + list(request.features)
    twice = sorted({p for p in given if given.count(p) > 1})
    if twice:
        raise IngestError(f"ingest csd: {', '.join(twice)} given more than once")
    items: list[CsdItem] = []
    first: dict[tuple[str, str, str], str] = {}
    for role, paths in ((LABELS_ROLE, request.labels), (FEATURES_ROLE, request.features)):
        for path in paths:
            with CsdFile(path) as f:
                for seq in f.sequences:
                    dims, names = f.expected_dims(seq)
                    videos = f.videos(seq)
                    md = f.metadata(seq)
                    request.sequences.setdefault(path, {})[seq] = {
                        "role": role, "videos": len(videos), "dims": dims, "dimension names": bool(names),
                        **{k: md[k] for k in ("dataset name", "dataset version", "computational sequence version")
                           if k in md}}
                    for v in videos:
                        key = (role, seq, v.video_id)
                        error = None
                        if key in first:
                            error = ("duplicate_input", f"video {v.video_id} of {seq!r} appears again in the input "
                                                        f"(first in {first[key]})")
                        else:
                            first[key] = path
                        items.append(CsdItem(v, role, dims, names, error))
    return items


def commits(items: list[CsdItem], max_videos: int, max_bytes: int = COMMIT_BYTES) -> list[list[CsdItem]]:
    """``items`` cut into commits of at most ``max_videos`` videos and about ``max_bytes`` of features."""
    out: list[list[CsdItem]] = []
    size = 0
    for item in items:
        weight = 4 * item.entry.rows * (item.entry.dims or 1)
        if not out or len(out[-1]) >= max_videos or (out[-1] and size + weight > max_bytes):
            out.append([])
            size = 0
        out[-1].append(item)
        size += weight
    return out


# Rows of video_features hold up to CHUNK_BYTES of floats each. Spark's defaults are made for narrow
# rows: the vectorised Parquet reader decodes 4,096 rows per batch (4 GiB of such rows: a driver of
# 2 GiB fails reading the staged chunks of ~200 videos) and the Parquet writer buffers a 128 MiB row
# group per task before it writes it. While the ingest runs, batches hold WIDE_ROWS_BATCH rows
# (64 MiB) and row groups WIDE_ROWS_BLOCK bytes.
WIDE_ROWS_BATCH = 64
WIDE_ROWS_BLOCK = 32 << 20


def wide_rows(spark):
    """The session's Parquet batch and row-group sizes set for rows of ~1 MiB, restored after."""
    from moodlake.spark import session_conf

    return session_conf(spark, {"spark.sql.parquet.columnarReaderBatchSize": str(WIDE_ROWS_BATCH),
                                "parquet.block.size": str(WIDE_ROWS_BLOCK)})


class CsdIngestor(Ingestor):
    """Ingests computational sequences into the lakehouse described by ``cfg``."""

    TABLES = (INGEST_FAILURES, INGEST_RUNS, VIDEO_FEATURES, SEGMENT_LABELS)

    def __init__(self, spark, cfg, chunk_bytes: int = CHUNK_BYTES, commit_bytes: int = COMMIT_BYTES):
        super().__init__(spark, cfg)
        self.chunk_bytes, self.commit_bytes = chunk_bytes, commit_bytes

    def run_csd(self, source_name: str, features: Iterable[str | Path] = (), labels: Iterable[str | Path] = (),
                run_id: str | None = None) -> CsdResult:
        """Ingest feature sequences ``features`` and labels sequences ``labels`` as source ``source_name``.
        Raises CsdError for a file unusable as a whole, IngestError when the counts do not reconcile."""
        with wide_rows(self.spark):
            return self._run_csd(source_name, features, labels, run_id)

    def _run_csd(self, source_name, features, labels, run_id) -> CsdResult:
        request = CsdRequest(source_name, tuple(str(Path(p).resolve()) for p in features),
                             tuple(str(Path(p).resolve()) for p in labels))
        if not request.features and not request.labels:
            raise IngestError("ingest csd: no file given")
        run_id = run_id or new_run_id()
        started = now()
        self._close_interrupted_runs()
        self._record_run(run_id, request, "running", started)
        result = CsdResult(run_id, source_name)
        try:
            items = plan(request)
            result.input_records = len(items)
            result.segments = sum(it.entry.rows for it in items if it.role == LABELS_ROLE)
            roles = {it.role for it in items}
            known = {kind: self._known_videos(t, source_name) for kind, t in TARGETS.items() if t.role in roles}
            failures = self._known_failures(source_name)
            groups = commits(items, self.cfg.ingest.chunk_size, self.commit_bytes)
            for n, group in enumerate(groups):
                self._commit_videos(group, n, run_id, result, known, failures)
                log.info("committed %d/%d of run %s (%d videos landed, %d failed so far)", n + 1, len(groups), run_id,
                         result.landed, result.failures)
        except Exception as e:
            request.counts = result.counts()
            self._record_run(run_id, request, "failed", started, result, f"{type(e).__name__}: {e}")
            self._rmtree(self._staging(run_id))
            raise
        request.counts = result.counts()
        return self._finish(run_id, request, started, result)

    def _known_videos(self, target: Target, source: str) -> dict[str, str]:
        """The record_hash of every video of ``source`` in ``target``'s table, by video key (its first
        rows only: no shuffle)."""
        rows = (self.spark.table(self.cfg.table(target.spec.key))
                .where((F.col("source") == source) & (F.col(target.first) == 0))
                .select(F.concat_ws(_SEP, *target.video_key).alias("key"), "record_hash").collect())
        return {r.key: r.record_hash for r in rows}

    def _known_failures(self, source: str) -> dict[str, tuple[str, str, str]]:
        """This source's failures: failure_id -> (input_ref, reason_code, reason)."""
        rows = (self.spark.table(self.failures).where(F.col("source") == source)
                .select("failure_id", "input_ref", "reason_code", "reason").collect())
        return {r.failure_id: (r.input_ref, r.reason_code, r.reason) for r in rows}

    def _commit_videos(self, items: list[CsdItem], n: int, run_id: str, result: CsdResult,
                       known: dict[str, dict[str, str]], failures: dict[str, tuple[str, str, str]]) -> None:
        """Read, stage and commit one group of videos; ``known`` and ``failures`` (what the tables held
        for the source) are kept up to date."""
        sc = self.spark.sparkContext
        parts = max(1, min(self.cfg.ingest.partitions or sc.defaultParallelism, len(items)))
        rdd = sc.parallelize(items, parts).mapPartitions(
            partial(_run_partition, source=result.source, chunk_bytes=self.chunk_bytes))
        path = f"{self._staging(run_id)}/chunk-{n:05d}"
        # verifySchema=False: a chunk holds ~250k floats; checking each in Python costs more than reading it
        self.spark.createDataFrame(rdd, STAGING_SCHEMA, verifySchema=False).write.mode("overwrite").parquet(path)
        staged = self.spark.read.parquet(path)
        stamp = now()
        # what was staged, in one pass over the small columns: each video's key and hash, steps, failures
        hashes: dict[str, dict[str, str]] = {kind: {} for kind in TARGETS}
        failed_refs, new_failures = set(), []
        for r in staged.select(
                "kind", *[F.concat_ws(_SEP, *[f"{kind}.{c}" for c in t.video_key]).alias(f"{kind}_key")
                          for kind, t in TARGETS.items()],
                F.coalesce("video.record_hash", "segment.record_hash").alias("record_hash"),
                F.col("video.steps").alias("steps"), "failure.failure_id", "failure.input_ref", "failure.reason_code",
                "failure.reason").collect():
            if r.kind == "failure":
                failed_refs.add(r.input_ref)
                if failures.get(r.failure_id) != (r.input_ref, r.reason_code, r.reason):  # new, or a new reason
                    new_failures.append(r.failure_id)
                    failures[r.failure_id] = (r.input_ref, r.reason_code, r.reason)
            else:
                hashes[r.kind][r[f"{r.kind}_key"]] = r.record_hash
                result.steps_landed += r.steps or 0
                result.segments_landed += int(r.kind == "segment")
        for kind, target in TARGETS.items():
            if hashes[kind]:
                states = self._merge_videos(target, staged.where(F.col("kind") == kind).select(f"{kind}.*"),
                                            hashes[kind], known[kind], run_id, stamp)
                result.posts_new += states.count("new")
                result.posts_updated += states.count("changed")
                result.posts_unchanged += states.count("unchanged")
        failed = [it for it in items if it.entry.input_ref in failed_refs]
        result.failures += len(failed)
        result.segments_failed += sum(it.entry.rows for it in failed if it.role == LABELS_ROLE)
        # a video that lands clears its earlier failures (from any file; not a duplicate's)
        landed = {f"{it.entry.sequence}/{it.entry.video_id}" for it in items if it.entry.input_ref not in failed_refs}
        cleared = sorted(fid for fid, (ref, code, _) in failures.items()
                         if code != "duplicate_input" and ref.rsplit("::", 1)[-1] in landed)
        if cleared:
            from delta.tables import DeltaTable

            DeltaTable.forName(self.spark, self.failures).delete(F.col("failure_id").isin(cleared))
            for fid in cleared:
                del failures[fid]
        if new_failures:
            self._merge_failures(staged.where(F.col("kind") == "failure").select("failure.*")
                                 .where(F.col("failure_id").isin(new_failures)), run_id, stamp)
        self._rmtree(path)

    def _merge_videos(self, target: Target, rows: DataFrame, hashes: dict[str, str], known: dict[str, str],
                      run_id: str, stamp: dt.datetime) -> list[str]:
        """MERGE the new and changed videos of ``rows`` (``hashes``: their record hashes by video key)
        into ``target``'s table, whose videos had the hashes ``known`` (updated here); the state of each
        staged video: new, changed or unchanged."""
        from delta.tables import DeltaTable

        states = {k: "new" if k not in known else "unchanged" if known[k] == h else "changed"
                  for k, h in hashes.items()}
        todo = [k for k, state in states.items() if state != "unchanged"]
        if todo:
            content = [f.name for f in rows.schema.fields]
            src = rows if len(todo) == len(states) else rows.where(F.concat_ws(_SEP, *target.video_key).isin(todo))
            src = src.select(*content, F.lit(stamp).alias("first_ingested_at"), F.lit(stamp).alias("ingested_at"),
                             F.lit(run_id).alias("ingest_run_id"))
            m = (DeltaTable.forName(self.spark, self.cfg.table(target.spec.key)).alias("t")
                 .merge(src.alias("s"), " AND ".join(f"t.`{c}` = s.`{c}`" for c in target.spec.primary_key)))
            changed = [k for k in todo if states[k] == "changed"]
            if changed:  # rows rewritten when they differ; rows (chunks, segments) the new version lacks deleted
                update = {c: f"s.`{c}`" for c in content + ["ingested_at", "ingest_run_id"]}
                m = (m.whenMatchedUpdate(condition="t.content_hash <> s.content_hash", set=update)
                     .whenNotMatchedBySourceDelete(
                         condition=F.concat_ws(_SEP, *[F.col(f"t.{c}") for c in target.video_key]).isin(changed)))
            m.whenNotMatchedInsertAll().execute()  # only new videos: an insert-only MERGE
            known.update({k: hashes[k] for k in todo})
        return list(states.values())
