"""The cluster suite: every job spark-submitted to a Spark standalone cluster (2 workers, 1 core
each), training with TorchDistributor on the executors, the tables checked; then a worker (with its
executor and Python workers) SIGKILLed in the middle of a scoring run, which must finish through task
retry with every selected post scored exactly once.

The lakehouse keeps its warehouse, datasets, model registry and training runs under file:// URIs
(with spaces in the path): what a cluster's executors read goes through moodlake.storage and
Hadoop paths, not through the driver's local paths. (s3a:// is tests/test_spark_s3a.py's; hdfs:// is
not exercised.)
"""
from __future__ import annotations

import json
import os
import time

import pytest

from moodlake import storage
from tests.cluster.conftest import PIPELINE_SCORED, POSTS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DB = "moodlake"


def test_every_job_runs_on_the_cluster_and_the_tables_reconcile(pipeline, cluster_lake):
    (posts,), (ingest_failed,), (feats,), datasets, runs, models, (evals,), (scores,), (scoring_failed,), score_runs = \
        cluster_lake.probe(
            f"SELECT count(*) AS n, count(DISTINCT post_id) AS d FROM {DB}.posts",
            f"SELECT count(*) AS n FROM {DB}.ingest_failures",
            f"SELECT (SELECT count(*) FROM {DB}.post_features) AS f, (SELECT count(*) FROM {DB}.feature_failures) AS ff",
            f"SELECT name, path, train_rows, val_rows, test_rows, excluded_rows FROM {DB}.datasets",
            f"SELECT run_id, epoch, processes FROM {DB}.training_runs",
            f"SELECT version, path, stage FROM {DB}.models",
            f"SELECT count(*) AS n FROM {DB}.evaluations",
            f"SELECT count(*) AS n, count(DISTINCT post_id, model_version) AS d FROM {DB}.emotion_scores",
            f"SELECT count(*) AS n FROM {DB}.scoring_failures",
            f"SELECT status, selected, scored, failed FROM {DB}.scoring_runs",
        )
    print("job seconds on the cluster:", {k: round(v, 1) for k, v in pipeline.items()})
    assert posts == {"n": POSTS, "d": POSTS} and ingest_failed["n"] == 0
    assert feats["f"] + feats["ff"] == POSTS and feats["f"] > 0
    # the dataset, the registry and the training run live under the file:// URIs, and are complete there
    (ds,) = datasets
    assert ds["path"].startswith(cluster_lake.uri("datasets") + "/")
    assert ds["train_rows"] + ds["val_rows"] + ds["test_rows"] + ds["excluded_rows"] == feats["f"]
    assert storage.exists(storage.join(ds["path"], "manifest.json"))
    assert [(r["epoch"], r["processes"]) for r in runs] == [(1, 2)]  # TorchDistributor: 2 processes, 1 epoch
    assert storage.listdir(storage.join(cluster_lake.uri("training"), runs[0]["run_id"], "checkpoints")) == ["epoch-0001.pt"]
    (model,) = models
    assert model["stage"] == "production" and model["path"] == storage.join(cluster_lake.uri("models"), model["version"])
    assert storage.listdir(model["path"]) == ["config.json", "model.safetensors", "vocab.json"]
    assert evals["n"] >= 1
    # the posts selected (the oldest PIPELINE_SCORED) scored once (or failed with a reason); counts reconcile
    assert scores["n"] == scores["d"] and scores["n"] + scoring_failed["n"] == PIPELINE_SCORED
    assert [r["status"] for r in score_runs] == ["succeeded"]
    assert score_runs[0]["selected"] == score_runs[0]["scored"] + score_runs[0]["failed"] == PIPELINE_SCORED


def _lost_tasks(logs: list) -> list[dict]:
    """The TaskEnd events of the event logs ``logs`` whose task was running on an executor that was lost."""
    lost = []
    files = [f for path in logs for f in ([path] if path.is_file() else sorted(path.rglob("events_*")))]
    for path in files:  # rolling event logs (Spark 4's default): a folder of events_N_<app> files
        for line in path.read_text(errors="replace").splitlines():
            if '"SparkListenerTaskEnd"' in line and "ExecutorLostFailure" in line:
                event = json.loads(line)
                lost.append({"stage": event["Stage ID"], "task": event["Task Info"]["Task ID"],
                             "executor": event["Task Info"]["Executor ID"]})
    return lost


def _active_tasks_on_worker(lake, standalone, i: int) -> int:
    """Tasks running now on worker ``i``'s executors, by the driver's REST API (spark.ui.port)."""
    import urllib.request

    base = f"http://127.0.0.1:{lake.overrides['spark_conf']['spark.ui.port']}/api/v1/applications"
    try:
        with urllib.request.urlopen(base, timeout=2) as r:
            apps = json.load(r)
        app_id = apps[0]["id"]
        with urllib.request.urlopen(f"{base}/{app_id}/executors", timeout=2) as r:
            executors = json.load(r)
    except (OSError, ValueError, IndexError, KeyError):
        return 0
    mine = standalone.executor_ids(i, app_id)
    return sum(e.get("activeTasks", 0) for e in executors if str(e.get("id")) in mine)


def test_worker_killed_during_scoring_finishes_through_task_retry(pipeline, cluster_lake, standalone, event_logs):
    """The pipeline's score job (the oldest half of the posts, unbroken) is the reference; this run scores
    the other half and SIGKILLs worker-1 (with its executor and Python workers) once its Python workers
    use CPU, a quarter of the reference time in at the earliest. The tasks the event log shows lost with
    the executor are counted; every post must be scored exactly once."""
    lake = cluster_lake
    unbroken = pipeline["score"]
    marks: dict[str, float] = {}

    def on_output(text: str) -> None:
        now = time.monotonic() - start
        if "killed" in marks or "posts selected" not in text or now < 0.25 * unbroken:
            return
        if _active_tasks_on_worker(lake, standalone, 1) > 0:  # a task is running on worker-1's executor now
            marks["executors"] = len(standalone.executor_pids(1))
            standalone.kill_worker(1)
            marks["killed"] = time.monotonic() - start

    logs_before = set(event_logs.iterdir())
    start = time.monotonic()
    try:
        broken, output = lake.submit("score", on_line=on_output)
    finally:
        if standalone.worker(1).proc.poll() is not None:
            standalone.start_worker(1)  # leave the cluster as it was
    assert "killed" in marks, f"the run ended ({broken:.0f} s) before a Python task ran on worker-1 to kill"
    assert marks["executors"] >= 1, "worker-1 ran no executor when it was killed"
    lost_tasks = _lost_tasks(sorted(set(event_logs.iterdir()) - logs_before))

    runs, (feats,), (counts,), (lost,) = lake.probe(
        f"SELECT status, selected, scored, failed, seconds FROM {DB}.scoring_runs ORDER BY started_at",
        f"SELECT count(*) AS n FROM {DB}.post_features",
        f"SELECT count(*) AS n, count(DISTINCT post_id, model_version) AS d FROM {DB}.emotion_scores",
        f"SELECT count(*) AS n FROM {DB}.post_features f LEFT ANTI JOIN "
        f"(SELECT post_id FROM {DB}.emotion_scores UNION ALL SELECT post_id FROM {DB}.scoring_failures) s "
        f"ON f.post_id = s.post_id",
    )
    duplicated = counts["n"] - counts["d"]
    reference, fault_run = runs
    report = (f"worker killed {marks['killed']:.1f} s into the run ({marks['executors']} executor, "
              f"{len(lost_tasks)} task(s) lost with it and retried); run {broken:.1f} s for {fault_run['selected']} "
              f"posts vs {unbroken:.1f} s for {reference['selected']} unbroken (+{broken - unbroken:.1f} s); "
              f"rows lost {lost['n']}, duplicated {duplicated}; load average {os.getloadavg()}")
    print(report)
    assert marks["killed"] < broken
    assert lost_tasks, f"no task was running on the killed worker's executor: {report}"
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], report
    assert all(r["selected"] == r["scored"] + r["failed"] for r in runs), (runs, report)
    # the two runs selected every post with features (a synthetic post may be unusable: a feature
    # failure), each once
    assert reference["selected"] == PIPELINE_SCORED and sum(r["selected"] for r in runs) == feats["n"] > POSTS - 10, \
        (runs, feats, report)
    assert lost["n"] == 0 and duplicated == 0, report
