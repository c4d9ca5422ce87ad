"""Run ledgers (``moodlake.ingest_runs``, ``moodlake.scoring_runs``): run ids, and telling a live run
from one whose process was killed."""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from moodlake.services import pid_alive

log = logging.getLogger(__name__)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id() -> str:
    return now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def delete_path(spark, path: str) -> None:
    """Delete a folder (a run's staging) on any Hadoop filesystem."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)


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
        DeltaTable.forName(spark, table).update(
            F.col("run_id").isin(stale),
            {"status": F.lit("interrupted"), "message": F.lit("the process stopped before the run finished"),
             "finished_at": F.lit(now())})
    return stale
