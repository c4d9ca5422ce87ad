"""Run ledgers (``moodlake.ingest_runs``, ``moodlake.scoring_runs``): run ids, and telling a live run
from one whose process was killed."""
from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from typing import Callable, TypeVar

from moodlake.services import pid_alive

log = logging.getLogger(__name__)

T = TypeVar("T")

# Delta's commit conflicts: another writer committed to the table between this transaction's read
# and its commit (io.delta.exceptions.*; delta-spark raises them as the classes of delta.exceptions)
CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
             "ConcurrentWriteException", "ConcurrentTransactionException", "DeltaConcurrentModificationException")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id() -> str:
    return now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def delete_path(spark, path: str) -> None:
    """Delete a folder (a run's staging) on any Hadoop filesystem."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a Delta commit conflict with a concurrent writer."""
    if type(error).__name__ in CONFLICTS:
        return True
    head = str(error).lstrip().split(":", 1)[0]
    return any(head.endswith(name) for name in CONFLICTS)


def retry_conflicts(action: Callable[[], T], what: str, attempts: int = 8, base_s: float = 0.5,
                    error: type[Exception] = RuntimeError) -> T:
    """``action()``, run again after a Delta commit conflict, with exponential backoff and jitter (at
    most 15 s a wait). ``action`` must be idempotent: a MERGE on the table's key is, so running it
    again on the newer snapshot writes what one run would. Still conflicting after ``attempts``: one
    clear line, as ``error``. Other errors pass through."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as e:
            if not is_conflict(e):
                raise
            name = type(e).__name__ if type(e).__name__ in CONFLICTS else "commit conflict"
            if attempt == attempts:
                raise error(f"{what}: {name} with a concurrent writer, still after {attempts} attempts; "
                            "run it again when the other job has finished") from None
            delay = min(15.0, base_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s: %s with a concurrent writer; retrying in %.1f s (attempt %d of %d)", what, name, delay,
                        attempt + 1, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")


def live_runs(spark, table: str, where: str) -> list:
    """The runs of ``table`` matching ``where`` that are 'running' in a process still alive (or on
    another host, started less than a day ago): call :func:`mark_interrupted` first."""
    host, day_ago = socket.gethostname(), now() - dt.timedelta(days=1)
    out = []
    for r in spark.table(table).where(f"status = 'running' AND ({where})").collect():
        if r.driver_host == host:
            if r.driver_pid != os.getpid() and pid_alive(r.driver_pid):
                out.append(r)
        elif r.started_at.replace(tzinfo=dt.timezone.utc) >= day_ago:
            out.append(r)
    return out


def mark_interrupted(spark, table: str) -> list[str]:
    """Mark the runs of ``table`` left 'running' by a process that is gone (killed) as 'interrupted';
    returns their ids.

    A run whose driver still lives (same host, pid alive) is left alone; so is one from another
    host, unless it started more than a day ago.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    host, day_ago = socket.gethostname(), now() - dt.timedelta(days=1)
    stale = []
    for r in spark.table(table).where("status = 'running'").collect():
        if r.driver_host == host:
            if r.driver_pid != os.getpid() and not pid_alive(r.driver_pid):
                stale.append(r.run_id)
        elif r.started_at.replace(tzinfo=dt.timezone.utc) < day_ago:
            stale.append(r.run_id)
    if stale:
        log.warning("marking %d interrupted run(s) of %s as such: %s", len(stale), table, ", ".join(stale))
        retry_conflicts(lambda: DeltaTable.forName(spark, table).update(  # the same UPDATE again is harmless
            F.col("run_id").isin(stale) & (F.col("status") == "running"),
            {"status": F.lit("interrupted"), "message": F.lit("the process stopped before the run finished"),
             "finished_at": F.lit(now())}), f"marking interrupted runs of {table}")
    return stale
