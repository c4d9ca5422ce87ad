"""The ingest engine: any :class:`Source` into ``moodlake.posts`` and ``moodlake.ingest_failures``.

A run goes like this:

1. The driver lists the source's work items (cheap: ids, paths, lines). Records without a usable
   id and repeated ids become failures at once; for sources whose fetches cost (Flickr), ids
   already landed or permanently failed are skipped.
2. The pending items are cut into chunks of ``ingest.chunk_size``. Each chunk is spread over
   the executors, which fetch/read, check and build rows (a post, or a failure with its
   reason); the result is written once to a staging folder, so no remote call is ever repeated
   because Spark evaluated a plan twice.
3. From the staged rows, one MERGE per table commits the chunk: posts insert-or-update-when-
   changed on ``post_id``; failures on ``failure_id``; failures that now landed are removed.
   A killed run loses at most the chunk in flight; running it again skips (Flickr) or
   re-reads unchanged (files) what was committed, so the tables end as after one clean run.
4. ``moodlake.ingest_runs`` records the run and its reconciliation:
   ``input_records = skipped + posts_new + posts_updated + posts_unchanged + failures``.
"""
from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake import content, records
from moodlake.config import Config
from moodlake.coordinator import AbortedError, CallBudget, Coordinator, CoordinatorClient, Endpoint
from moodlake.logs import SUMMARY, redact
from moodlake.progress import ProgressReporter
from moodlake.runs import delete_path, mark_interrupted, new_run_id, now
from moodlake.tables import CORE_TABLES, FAILURE_CONTENT, INGEST_FAILURES, INGEST_RUNS, POST_CONTENT, POSTS, ensure_tables

log = logging.getLogger(__name__)

STAGING_SCHEMA = T.StructType([
    T.StructField("kind", T.StringType(), False),
    T.StructField("post", POST_CONTENT, True),
    T.StructField("failure", FAILURE_CONTENT, True),
])


class IngestError(RuntimeError):
    """An ingest run stopped; the message says why (secrets redacted)."""


@dataclass(frozen=True)
class WorkItem:
    """One input record. ``error`` = (stage, reason_code, reason) for a record already known bad."""

    input_ref: str
    source_id: str | None
    payload: dict = field(default_factory=dict)
    error: tuple[str, str, str] | None = None


@dataclass
class ExecContext:
    """What a source's ``process`` gets on the executor."""

    client: CoordinatorClient
    max_image_bytes: int
    max_image_pixels: int = content.MAX_IMAGE_PIXELS

    @property
    def image_limits(self) -> dict:
        """The keyword arguments of :func:`moodlake.records.post_record` that bound an image."""
        return {"max_image_bytes": self.max_image_bytes, "max_image_pixels": self.max_image_pixels}


class Source(abc.ABC):
    """A kind of input. Instances are pickled to executors: keep them small (settings only)."""

    name: str
    #: ids already landed or permanently failed are not processed again (costly fetches)
    skip_existing: bool = False
    #: concurrent items per Spark task (I/O-bound sources)
    threads: int = 1

    @abc.abstractmethod
    def work_items(self, ctx: "ExecContext") -> Iterable[WorkItem]:
        """Driver side: every input record, in input order (``ctx`` for sources that must call
        a remote API to list them, under the same budget as the executors)."""

    @abc.abstractmethod
    def process(self, item: WorkItem, ctx: ExecContext) -> list[tuple[str, dict]]:
        """Executor side: ``[("post", row)]`` or ``[("failure", row)]`` for one item."""

    def describe(self) -> dict:
        """The request, for ``ingest_runs.args`` (no secrets)."""
        return {"source": self.name}

    def budget(self, cfg: Config) -> CallBudget | None:
        return None

    def fatal_error(self, reason: str) -> Exception:
        return IngestError(reason)

    def failure_for(self, item: WorkItem, stage: str, code: str, reason: str, permanent: bool = True) -> tuple[str, dict]:
        return ("failure", records.failure_row(
            source=self.name, input_ref=item.input_ref, stage=stage, reason_code=code, reason=reason,
            permanent=permanent, post_id=records.post_id(self.name, item.source_id) if item.source_id else None,
            raw=item.payload.get("raw") if item.payload else None,
        ))


@dataclass
class IngestResult:
    run_id: str
    source: str
    input_records: int = 0
    skipped: int = 0
    posts_new: int = 0
    posts_updated: int = 0
    posts_unchanged: int = 0
    failures: int = 0
    api_calls: int = 0

    @property
    def landed(self) -> int:
        return self.posts_new + self.posts_updated + self.posts_unchanged

    def reconciles(self) -> bool:
        return self.input_records == self.skipped + self.landed + self.failures

    def summary(self) -> str:
        return (f"ingest {self.source} run {self.run_id}: {self.input_records:,} input records = "
                f"{self.skipped:,} skipped + {self.posts_new:,} new + {self.posts_updated:,} updated + "
                f"{self.posts_unchanged:,} unchanged + {self.failures:,} failed"
                + (f"; {self.api_calls:,} API calls" if self.api_calls else ""))


def _now() -> dt.datetime:
    return now()


# --------------------------------------------------------------------------- executor side


def _as_tuple(schema: T.StructType, row: dict | None):
    return None if row is None else tuple(row[f.name] for f in schema.fields)


def _run_partition(source: Source, endpoint: Endpoint, limits: tuple[int, int], items: Iterator[WorkItem]):
    client = endpoint.client()
    ctx = ExecContext(client, *limits)

    def one(item: WorkItem) -> list[tuple[str, dict]]:
        if client.abort_reason:
            raise AbortedError(client.abort_reason)
        rows = source.process(item, ctx)
        client.add(posts=sum(k == "post" for k, _ in rows), failures=sum(k == "failure" for k, _ in rows))
        return rows

    try:
        if source.threads > 1:
            with ThreadPoolExecutor(source.threads, thread_name_prefix=f"ingest-{source.name}") as pool:
                results = pool.map(one, items)
                for rows in results:
                    yield from ((k, r) for k, r in rows)
        else:
            for item in items:
                yield from one(item)
    finally:
        client.flush()


def _to_staging_tuple(kind_row: tuple[str, dict]):
    kind, row = kind_row
    return (kind, _as_tuple(POST_CONTENT, row) if kind == "post" else None,
            _as_tuple(FAILURE_CONTENT, row) if kind == "failure" else None)


# --------------------------------------------------------------------------- driver side


class Ingestor:
    """Runs sources into the lakehouse described by ``cfg``."""

    #: the tables it makes sure exist
    TABLES = CORE_TABLES

    def __init__(self, spark: SparkSession, cfg: Config):
        self.spark, self.cfg = spark, cfg
        ensure_tables(spark, cfg, self.TABLES)
        self.posts = cfg.table(POSTS.key)
        self.failures = cfg.table(INGEST_FAILURES.key)
        self.runs = cfg.table(INGEST_RUNS.key)

    # -- run ledger
    def _record_run(self, run_id: str, source: Source, status: str, started: dt.datetime,
                    result: IngestResult | None = None, message: str | None = None) -> None:
        finished = None if status == "running" else _now()
        r = result or IngestResult(run_id, source.name)
        row = (run_id, source.name, json.dumps(source.describe(), sort_keys=True, default=str), status, started, finished,
               r.input_records, r.skipped, r.posts_new, r.posts_updated, r.posts_unchanged, r.failures, r.api_calls,
               redact(message), socket.gethostname(), os.getpid())
        df = self.spark.createDataFrame([row], INGEST_RUNS.schema)
        self._merge(self.runs, df, "t.run_id = s.run_id", update_all=True)

    def _close_interrupted_runs(self) -> None:
        """Runs left 'running' by a process that is gone (killed): mark them and drop their staging."""
        for run_id in mark_interrupted(self.spark, self.runs):
            self._rmtree(self._staging(run_id))

    def _staging(self, run_id: str) -> str:
        """Staging folder of a run, beside the tables (any Hadoop filesystem)."""
        return f"{self.cfg.lakehouse.warehouse.rstrip('/')}/_staging/{run_id}"

    def _rmtree(self, path: str) -> None:
        delete_path(self.spark, path)

    # -- merges
    def _merge(self, table: str, source_df: DataFrame, cond: str, update_all: bool = False,
               update_when: str | None = None, update_set: dict | None = None):
        from delta.tables import DeltaTable

        m = DeltaTable.forName(self.spark, table).alias("t").merge(source_df.alias("s"), cond)
        if update_all:
            m = m.whenMatchedUpdateAll()
        elif update_set is not None:
            m = m.whenMatchedUpdate(condition=update_when, set=update_set)
        m.whenNotMatchedInsertAll().execute()
        return self._last_metrics(table)

    def _last_metrics(self, table: str) -> dict:
        from delta.tables import DeltaTable

        h = DeltaTable.forName(self.spark, table).history(1).select("operationMetrics").collect()[0][0]
        return {k: int(v) for k, v in (h or {}).items() if v and v.isdigit()}

    def _commit(self, staged: DataFrame, run_id: str, result: IngestResult, failed_before: set[str]) -> None:
        """MERGE one staged chunk into posts and failures.

        ``failed_before``: post ids with a failure row from earlier runs; those that land now have
        it removed (duplicate-input records stay: they describe the input, not the post).
        """
        now = _now()
        counts = {r["kind"]: r["count"] for r in staged.groupBy("kind").count().collect()}
        n_posts, n_fails = counts.get("post", 0), counts.get("failure", 0)
        if n_posts:
            posts = staged.where("kind = 'post'").select("post.*")
            src = posts.select(*POST_CONTENT.fieldNames(),
                               F.lit(now).alias("first_ingested_at"), F.lit(now).alias("ingested_at"),
                               F.lit(run_id).alias("ingest_run_id"))
            update = {c: f"s.{c}" for c in POST_CONTENT.fieldNames()}
            update.update({"ingested_at": "s.ingested_at", "ingest_run_id": "s.ingest_run_id"})
            m = self._merge(self.posts, src, "t.post_id = s.post_id",
                            update_when="t.content_hash <> s.content_hash", update_set=update)
            inserted, updated = m.get("numTargetRowsInserted", 0), m.get("numTargetRowsUpdated", 0)
            result.posts_new += inserted
            result.posts_updated += updated
            result.posts_unchanged += n_posts - inserted - updated
            if failed_before:
                landed = {r.post_id for r in posts.select("post_id").collect()} & failed_before
                if landed:
                    from delta.tables import DeltaTable

                    DeltaTable.forName(self.spark, self.failures).delete(
                        F.col("post_id").isin(sorted(landed)) & (F.col("reason_code") != "duplicate_input"))
        if n_fails:
            self._merge_failures(staged.where("kind = 'failure'").select("failure.*"), run_id, now)
            result.failures += n_fails

    def _merge_failures(self, fails: DataFrame, run_id: str, stamp: dt.datetime) -> None:
        """MERGE failure rows (FAILURE_CONTENT) into ingest_failures on ``failure_id``: a new one is
        inserted, a known one updated when its reason changed."""
        src = fails.select(*FAILURE_CONTENT.fieldNames(), F.lit(stamp).alias("failed_at"),
                           F.lit(run_id).alias("ingest_run_id"))
        changed = "t.reason_code <> s.reason_code OR t.reason <> s.reason OR t.permanent <> s.permanent"
        self._merge(self.failures, src, "t.failure_id = s.failure_id", update_when=changed,
                    update_set={c: f"s.{c}" for c in INGEST_FAILURES.columns})

    def _failed_post_ids(self, source: Source) -> set[str]:
        """Post ids of this source that have a failure row an eventual landing should clear."""
        rows = (self.spark.table(self.failures)
                .where((F.col("source") == source.name) & F.col("post_id").isNotNull()
                       & (F.col("reason_code") != "duplicate_input"))
                .select("post_id").distinct().toLocalIterator())
        return {r.post_id for r in rows}

    def _existing_ids(self, source: Source) -> set[str]:
        """Ids of this source that landed, or failed for good: not to be fetched again."""
        landed = self.spark.table(self.posts).where(F.col("source") == source.name).select("source_id")
        failed = (self.spark.table(self.failures)
                  .where((F.col("source") == source.name) & F.col("permanent") & F.col("post_id").isNotNull()
                         & (F.col("reason_code") != "duplicate_input"))
                  .select(F.substring_index("post_id", ":", -1).alias("source_id")))
        return {r.source_id for r in landed.union(failed).distinct().toLocalIterator()}

    def run(self, source: Source, run_id: str | None = None, refresh: bool = False) -> IngestResult:
        """Ingest ``source``; return the reconciled counts. Raises IngestError on a fatal error."""
        run_id = run_id or new_run_id()
        started = _now()
        self._close_interrupted_runs()
        self._record_run(run_id, source, "running", started)
        result = IngestResult(run_id, source.name)
        coordinator = Coordinator(source.budget(self.cfg), host=self._driver_host())
        try:
            with coordinator:
                ctx = ExecContext(coordinator.endpoint.client(), self.cfg.ingest.max_image_bytes,
                                  self.cfg.ingest.max_image_pixels)
                pending, early_failures = self._plan(source, ctx, result, refresh)
                ctx.client.flush()
                with ProgressReporter(
                    f"ingest {source.name}", len(pending) + len(early_failures),
                    lambda: (coordinator.progress.posts, coordinator.progress.failures + len(early_failures),
                             coordinator.progress.calls or None),
                    self.cfg.ingest.progress_interval_s,
                ):
                    failed_before = self._failed_post_ids(source)
                    if early_failures:
                        df = self.spark.createDataFrame([_to_staging_tuple(f) for f in early_failures], STAGING_SCHEMA)
                        self._commit(df, run_id, result, failed_before)
                    size = self.cfg.ingest.chunk_size
                    chunks = (len(pending) + size - 1) // size
                    for n, start in enumerate(range(0, len(pending), size)):
                        self._run_chunk(source, pending[start:start + size], n, run_id, coordinator, result,
                                        failed_before)
                        log.info("committed chunk %d/%d of run %s (%d posts, %d failures so far)",
                                 n + 1, chunks, run_id, result.landed, result.failures)
            result.api_calls = coordinator.progress.calls
        except Exception as e:
            reason = coordinator.abort_reason
            err = source.fatal_error(reason) if reason else e
            result.api_calls = coordinator.progress.calls
            self._record_run(run_id, source, "failed", started, result, f"{type(err).__name__}: {err}")
            self._rmtree(self._staging(run_id))
            if err is e:
                raise
            raise err from None
        return self._finish(run_id, source, started, result)

    def _finish(self, run_id: str, source: Source, started: dt.datetime, result: IngestResult) -> IngestResult:
        """Record a run that went through: succeeded when its counts reconcile (IngestError otherwise)."""
        if not result.reconciles():
            msg = f"counts do not reconcile: {result.summary()}"
            self._record_run(run_id, source, "failed", started, result, msg)
            raise IngestError(msg)
        self._record_run(run_id, source, "succeeded", started, result)
        self._rmtree(self._staging(run_id))
        log.info(result.summary(), extra=SUMMARY)
        return result

    def _driver_host(self) -> str:
        return self.spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")

    def _plan(self, source: Source, ctx: ExecContext, result: IngestResult, refresh: bool):
        items = list(source.work_items(ctx))
        result.input_records = len(items)
        early: list[tuple[str, dict]] = []
        pending: list[WorkItem] = []
        first_ref: dict[str, str] = {}
        for item in items:
            if item.error:
                early.append(source.failure_for(item, *item.error))
            elif item.source_id in first_ref:
                early.append(source.failure_for(
                    item, "read", "duplicate_input",
                    f"id {item.source_id} appears again in the input (first at {first_ref[item.source_id]})"))
            else:
                first_ref[item.source_id] = item.input_ref
                pending.append(item)
        if source.skip_existing and not refresh and pending:
            done = self._existing_ids(source)
            kept = [it for it in pending if it.source_id not in done]
            result.skipped = len(pending) - len(kept)
            pending = kept
        log.info("ingest %s: %d input records, %d to process, %d skipped, %d rejected before processing",
                 source.name, len(items), len(pending), result.skipped, len(early))
        return pending, early

    def _run_chunk(self, source: Source, chunk: list[WorkItem], n: int, run_id: str,
                   coordinator: Coordinator, result: IngestResult, failed_before: set[str]) -> None:
        sc = self.spark.sparkContext
        parts = self.cfg.ingest.partitions or sc.defaultParallelism
        parts = max(1, min(parts, len(chunk)))
        endpoint = coordinator.endpoint
        limits = (self.cfg.ingest.max_image_bytes, self.cfg.ingest.max_image_pixels)
        rdd = (sc.parallelize(chunk, parts)
               .mapPartitions(lambda it: _run_partition(source, endpoint, limits, it))
               .map(_to_staging_tuple))
        path = f"{self._staging(run_id)}/chunk-{n:05d}"
        self.spark.createDataFrame(rdd, STAGING_SCHEMA).write.mode("overwrite").parquet(path)
        self._commit(self.spark.read.parquet(path), run_id, result, failed_before)
        self._rmtree(path)
