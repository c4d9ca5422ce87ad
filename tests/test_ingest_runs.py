"""The run ledger: runs whose process died are closed as interrupted; live ones are left alone."""
from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from moodlake.ingest import Ingestor
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.tables import INGEST_RUNS

pytestmark = pytest.mark.spark


def test_only_runs_of_dead_processes_are_marked_interrupted(spark, cfg):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = dt.datetime.now(dt.timezone.utc)
    here = socket.gethostname()

    def run(run_id, host, pid, started):
        return (run_id, "ledger-test", "{}", "running", started, None, 0, 0, 0, 0, 0, 0, 0, None, host, pid)

    rows = [run("dead-here", here, dead.pid, now), run("alive-here", here, 1, now),
            run("elsewhere-old", "other-host", 42, now - dt.timedelta(days=2)),
            run("elsewhere-new", "other-host", 42, now)]
    ing = Ingestor(spark, cfg)
    spark.createDataFrame(rows, INGEST_RUNS.schema).write.format("delta").mode("append").saveAsTable(cfg.table("ingest_runs"))

    r = ing.run(SyntheticSource(n=3, spec=SyntheticSpec(labels=("negative", "positive"), seed=1), name="ledger-synthetic"))
    status = {x.run_id: x.status for x in spark.table(cfg.table("ingest_runs"))
              .where(F.col("source").isin("ledger-test", "ledger-synthetic")).collect()}
    assert status == {"dead-here": "interrupted", "alive-here": "running", "elsewhere-old": "interrupted",
                      "elsewhere-new": "running", r.run_id: "succeeded"}
    # leave the ledger as other tests expect it
    spark.sql(f"DELETE FROM {cfg.table('ingest_runs')} WHERE source = 'ledger-test'")
