"""Shared fixtures: one Spark session for the whole run, a throwaway lakehouse, the research data."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.video_lake import video_lake  # noqa: F401 - a session fixture of its own module

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYTHONHASHSEED", "0")
# The run's short-lived JVMs (the jobs' spark-submit drivers, the cluster suite's master, workers and
# executors, Derby, the JDBC server) live seconds to a few minutes on 2 cores: the C1 compiler alone
# and the serial collector leave the cores to the work instead of to C2's compiler and parallel GC
# threads. One `moodlake submit ingest synthetic --n 240` on the test cluster took 45.8 s with these
# options on its driver and executors against 69.3 s without (a fresh cluster each, one after the
# other). The run's own session JVM, which lives the whole run, keeps the defaults (the `spark`
# fixture starts it without them). Test speed only: the product's JVMs keep the JDK's defaults.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

REPO = Path(__file__).resolve().parents[1]


_TEST_HOMES: list[Path] = []  # lakehouses of this run outside pytest's basetemp


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_services(tmp_path_factory):
    """At the end of the run, stop every MoodLake service process (the Derby metastore server that
    each lakehouse's first Spark session starts, a JDBC server) that this run started for one of
    its temporary lakehouses, whatever failed. Processes that ran before the run are left alone."""
    from moodlake import services

    before = {p.pid for p in services.find_processes()}
    yield
    roots = [tmp_path_factory.getbasetemp().resolve(), *_TEST_HOMES]
    for p in services.find_processes():
        home = Path(p.home)
        if p.pid not in before and any(home == r or r in home.parents for r in roots):
            services.terminate(p.pid, timeout=20)


def stop_services(cfg) -> None:
    """Stop the JDBC server and the metastore server of ``cfg``'s lakehouse, if they run."""
    from moodlake import metastore, sql_server

    for stop in (sql_server.stop, metastore.stop):
        try:
            stop(cfg)
        except Exception as e:  # noqa: BLE001 - teardown goes on; the sweep above is the backstop
            print(f"teardown: {stop.__module__}.stop: {e}")


@pytest.fixture(scope="session")
def lakehouse_home():
    d = Path(tempfile.mkdtemp(prefix="moodlake-test-lakehouse-")).resolve()
    _TEST_HOMES.append(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cfg(lakehouse_home):
    """The demo configuration pointed at a temporary lakehouse, on local[2]."""
    from moodlake.config import load_config

    return load_config(
        "demo",
        overrides={
            "lakehouse.home": str(lakehouse_home),
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.driver_memory": "2g",
            "ingest.progress_interval_s": 1.0,
        },
        environ={k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_"))},
    )


@pytest.fixture(scope="session")
def spark(cfg):
    """The run's Spark session on the test lakehouse. Its metastore is the lakehouse's Derby network
    server (moodlake.metastore), which other processes of a test may share; the teardown stops it
    and a JDBC server of the lakehouse, also when the session failed to start."""
    from moodlake.spark import build_spark

    session = None
    short_lived = os.environ.pop("JAVA_TOOL_OPTIONS", None)  # see the top of this file
    try:
        try:
            session = build_spark(cfg, app_name="moodlake-tests")
        finally:
            if short_lived is not None:
                os.environ["JAVA_TOOL_OPTIONS"] = short_lived
        yield session
    finally:
        if session is not None:
            session.stop()
        stop_services(cfg)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data, read in place; tests that need it skip only where it is absent."""
    d = Path(os.environ.get("MOODLAKE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.skip(f"the public research sets are not at {d} (set MOODLAKE_SHARED_DATA)")
    return d


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free 127.0.0.1 port for a test module (tests/test_storage_s3.py,
    tests/test_spark_s3a.py): its http:// URL."""
    import logging

    moto_server = pytest.importorskip("moto.server", reason="moto (requirements.txt) is not installed")
    requests_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        requests_log.setLevel(level)


@pytest.fixture
def fresh_logging():
    """The root logger as setup_logging finds it in a new process; restored afterwards."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    root.handlers = [h for h in before if not getattr(h, "_moodlake", False)]
    yield
    for h in root.handlers:
        if h not in before:
            h.close()
    root.handlers, root.level = before, level
    logging.captureWarnings(False)
