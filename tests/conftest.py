"""Shared fixtures: one Spark session for the whole run, a throwaway lakehouse, the research data."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYTHONHASHSEED", "0")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lakehouse_home():
    d = Path(tempfile.mkdtemp(prefix="moodlake-test-lakehouse-"))
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
    from moodlake.spark import build_spark

    session = build_spark(cfg, app_name="moodlake-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data, read in place; tests that need it skip only where it is absent."""
    d = Path(os.environ.get("MOODLAKE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.skip(f"the public research sets are not at {d} (set MOODLAKE_SHARED_DATA)")
    return d
