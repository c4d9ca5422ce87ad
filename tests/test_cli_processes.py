"""The moodlake command in fresh processes: named tables across processes, and a real kill.

Each test's subprocesses have their own lakehouse (with its own Derby metastore server, which
they share); the test's own Spark session reads their Delta tables by path to compare them.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moodlake.sources.synthetic import SyntheticSpec
from moodlake_dev.doubles.fake_flickr import FakeFlickrServer
from moodlake_dev.doubles.synthetic_flickr import photo_id, synthetic_corpus

pytestmark = [pytest.mark.spark, pytest.mark.slow]

MOODLAKE = [sys.executable, "-m", "moodlake.cli"]
KEY, SECRET = "cli-key-1234567890", "cli-secret-abcdef"


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
    env.update({"MOODLAKE_HOME": str(home), "MOODLAKE__SPARK__MASTER": "local[2]",
                "MOODLAKE__SPARK__SHUFFLE_PARTITIONS": "2", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _run(args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(MOODLAKE + args, env=env, capture_output=True, text=True, timeout=timeout)


def _table(spark, home: Path, name: str):
    return spark.read.format("delta").load(str(home / "warehouse" / "moodlake.db" / name))


@pytest.mark.data
def test_vso_ingest_and_sql_from_fresh_processes(tmp_path, shared_data):
    """The issue's 'Show': ingest in one process, query by name from another: 603. (That a second
    ingest changes nothing is tested in process by test_ingest_datasets; the cluster suite runs every
    job in processes of its own.)"""
    env = _env(tmp_path / "lh")
    first = _run(["ingest", "dataset", "vso-twitter", "--path", str(shared_data / "vso_twitter")], env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "603 input records" in first.stdout and "603 new" in first.stdout
    out = _run(["sql", "select source, count(*) as n from moodlake.posts group by source"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [ln.split() for ln in out.stdout.splitlines() if ln.startswith("vso-twitter")] == [["vso-twitter", "|", "603"]]


def test_bad_configuration_fails_at_start_with_file_and_key(tmp_path):
    env = _env(tmp_path / "lh", MOODLAKE__INGEST__CHUNK_SIZE="many")
    out = _run(["sql", "select 1"], env, timeout=60)
    assert out.returncode == 2
    assert "MOODLAKE__INGEST__CHUNK_SIZE: ingest.chunk_size: expected an integer" in out.stderr


LOG4J_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|INFO) ")  # Spark's console format


def test_console_shows_moodlakes_lines_and_sparks_start_up_goes_to_the_log_file(tmp_path):
    """A Spark start in a fresh process: no log4j warnings (NativeCodeLoader, ...) and no Python
    FutureWarning on the console; Spark's log file under <home>/logs keeps them."""
    home = tmp_path / "lh"
    out = _run(["sql", "select 41 + 1 as answer", "--spark"], _env(home, MOODLAKE__SPARK__MASTER="local[1]"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert [ln.strip() for ln in out.stdout.splitlines()][-2:] == ["42", "(1 row)"], out.stdout
    noise = [ln for ln in out.stderr.splitlines()
             if LOG4J_LINE.match(ln) or "org.apache" in ln or "log4j" in ln or "Warning" in ln or "setLogLevel" in ln]
    assert noise == [], out.stderr
    spark_log = (home / "logs" / "spark.log").read_text()
    assert re.search(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d \[pid \d+\] WARN ", spark_log, re.M), spark_log[-3000:]


def test_killed_flickr_ingest_resumes_to_the_same_tables(spark, tmp_path):
    n, chunk = 90, 15
    spec = SyntheticSpec(labels=("negative", "positive"), seed=21)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(photo_id(i) for i in range(n)) + "\n99999\n")  # the last one does not exist
    with FakeFlickrServer(synthetic_corpus(n, spec), valid_keys={KEY: SECRET}, global_slow_s=0.01) as server:
        flickr = dict(FLICKR_API_KEY=KEY, FLICKR_API_SECRET=SECRET, MOODLAKE__FLICKR__REST_URL=server.rest_url,
                      MOODLAKE__FLICKR__CALLS_PER_HOUR="0", MOODLAKE__INGEST__CHUNK_SIZE=str(chunk))
        killed, clean = tmp_path / "killed", tmp_path / "clean"
        args = ["ingest", "flickr", "--ids", str(ids)]

        # 1. start, wait until two chunks are committed, then SIGKILL the whole process group
        proc = subprocess.Popen(MOODLAKE + args, env=_env(killed, **flickr), stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True, start_new_session=True)
        seen: list[str] = []

        def read():
            for line in proc.stderr:
                seen.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.time() + 600  # a wait, not a cost: seconds on a quiet machine
        while not any("committed chunk 2/" in ln for ln in seen) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert any("committed chunk 2/" in ln for ln in seen), "".join(seen[-40:])
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        partial = _table(spark, killed, "posts").count()
        assert 2 * chunk <= partial < n, partial  # killed halfway

        # 2. run it again to the end; 3. one clean run elsewhere, in one chunk (the tables do not depend on it)
        t0 = time.monotonic()
        resumed = _run(args, _env(killed, **flickr), timeout=600)  # a cap: seconds on a quiet machine
        recover_s = time.monotonic() - t0
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"{partial} skipped" in resumed.stdout
        once = _run(args, _env(clean, **{**flickr, "MOODLAKE__INGEST__CHUNK_SIZE": str(n + 1)}), timeout=600)
        assert once.returncode == 0, once.stderr[-3000:]

    def content(home, name, key):
        df = _table(spark, home, name)
        return sorted(tuple(r) for r in df.select(*key).collect())

    lost = duplicated = 0
    for name, key in (("posts", "post_id"), ("ingest_failures", "failure_id")):
        got = [r[0] for r in _table(spark, killed, name).select(key).collect()]
        expected = {r[0] for r in _table(spark, clean, name).select(key).collect()}
        lost += len(expected - set(got))
        duplicated += len(got) - len(set(got)) + len(set(got) - expected)
    print(f"\nreliability: driver killed during a Flickr ingest (SIGKILL after chunk 2): {lost} rows lost, "
          f"{duplicated} duplicated; the next run took {recover_s:.1f} s")
    assert (lost, duplicated) == (0, 0)
    post_cols = ["post_id", "content_hash", "title", "image_sha256", "image_status"]
    assert content(killed, "posts", post_cols) == content(clean, "posts", post_cols)
    assert _table(spark, killed, "posts").count() == n  # nothing lost, nothing twice
    fail_cols = ["failure_id", "reason_code", "permanent"]
    assert content(killed, "ingest_failures", fail_cols) == content(clean, "ingest_failures", fail_cols) != []
    runs = {r.status for r in _table(spark, killed, "ingest_runs").collect()}
    assert runs == {"interrupted", "succeeded"}
