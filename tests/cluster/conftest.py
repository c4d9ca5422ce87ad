"""The cluster suite's fixtures: one Spark standalone cluster on 127.0.0.1 for the whole run (a master
and two workers of one core each, each with its own work directory), and a lakehouse whose
warehouse, datasets, registry and training runs are file:// URIs (with spaces in the path). Both are
stopped at the end, also when a test fails: the cluster's process groups (executors and Python
workers with them) and the lakehouse's Derby metastore server."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from moodlake import services
from moodlake_dev.cluster.lake import Lake, run_pipeline
from moodlake_dev.cluster.standalone import StandaloneCluster

POSTS = 240  # synthetic posts (seed 7); the DDP training needs ~100 in its val split (two row groups)
# The pipeline's score job takes the oldest half, unbroken; the fault test scores the other half (about
# as many: a few posts may fail their features) with a worker killed, and compares the two runs' times.
PIPELINE_SCORED = POSTS // 2


@pytest.fixture(scope="session")
def cluster_root():
    d = Path(tempfile.mkdtemp(prefix="moodlake-cluster-suite ")).resolve()  # a space, on purpose
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def standalone(cluster_root):
    cluster = StandaloneCluster(cluster_root / "cluster", workers=2, cores=1, memory="2g")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def event_logs():
    """Spark event logs of the cluster's applications (the fault test reads which tasks were lost)."""
    d = Path(tempfile.mkdtemp(prefix="moodlake-cluster-events-")).resolve()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_lake(standalone, cluster_root, event_logs):
    """A lakehouse on the cluster; task retries as a cluster needs them (spark.task.maxFailures); event logs."""
    lake = Lake(cluster_root / "lake", standalone.url,
                overrides={"scoring": {"partitions": 4},
                           "spark_conf": {"spark.task.maxFailures": "8", "spark.eventLog.enabled": "true",
                                          "spark.eventLog.dir": f"file://{event_logs}",
                                          "spark.eventLog.compress": "false",  # read as text
                                          # the driver's REST API, asked which executor runs a task
                                          "spark.ui.enabled": "true",
                                          "spark.ui.port": str(services.free_port("127.0.0.1"))}})
    lake.root.mkdir(parents=True)
    try:
        yield lake
    finally:
        lake.stop()


@pytest.fixture(scope="session")
def pipeline(cluster_lake):
    """Every job of the pipeline spark-submitted to the cluster, in order: their seconds by job."""
    return run_pipeline(cluster_lake, posts=POSTS, score_limit=PIPELINE_SCORED, timeout=900)
