"""The cluster suite: every job spark-submitted to a Spark standalone cluster (2 workers, 1 core
each), training with TorchDistributor on the executors, the tables checked; then a worker (with its
executor and Python workers) SIGKILLed in the middle of a scoring run, which must finish through task
retry with every selected post scored exactly once.

The lakehouse keeps its warehouse, datasets, model registry and training runs under file:// URIs
(with spaces in the path): what a cluster's executors read goes through moodlake.storage and
Hadoop paths, not through the driver's local paths. (hdfs:// and s3a:// are not exercised here.)
"""
from __future__ import annotations

import os
import time

import pytest

from moodlake import storage
from tests.cluster.conftest import PIPELINE_SCORED, POSTS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DB = "moodlake"
FAULT_POSTS = (POSTS - PIPELINE_SCORED) // 2  # per scoring run (two: one unbroken, one with a worker killed)


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


def test_worker_killed_during_scoring_finishes_through_task_retry(pipeline, cluster_lake, standalone):
    lake = cluster_lake
    marks: dict[str, float] = {}

    def watch(start: float, kill_at: float | None = None):
        def on_output(text: str) -> None:
            now = time.monotonic() - start
            if "selected" not in marks and "posts selected" in text:
                marks["selected"] = now
            if kill_at is not None and "killed" not in marks and "selected" in marks and now >= kill_at:
                marks["executors"] = len(standalone.executor_pids(1))
                standalone.kill_worker(1)
                marks["killed"] = now
        return on_output

    start = time.monotonic()
    unbroken, _ = lake.submit("score", "--limit", str(FAULT_POSTS), on_line=watch(start))
    selected_at = marks.pop("selected")
    # the broken run: worker-1 killed halfway through the unbroken run's scoring time
    kill_at = selected_at + 0.5 * (unbroken - selected_at)
    start = time.monotonic()
    try:
        broken, output = lake.submit("score", "--limit", str(FAULT_POSTS), on_line=watch(start, kill_at))
    finally:
        if standalone.worker(1).proc.poll() is not None:
            standalone.start_worker(1)  # leave the cluster as it was
    assert "killed" in marks, f"the run ended ({broken:.0f} s) before the kill time ({kill_at:.0f} s)"
    assert marks["executors"] >= 1, "worker-1 ran no executor when it was killed"
    assert marks["killed"] < broken

    runs, (feats,), (counts,), (lost,) = lake.probe(
        f"SELECT status, selected, scored, failed, seconds FROM {DB}.scoring_runs ORDER BY started_at",
        f"SELECT count(*) AS n FROM {DB}.post_features",
        f"SELECT count(*) AS n, count(DISTINCT post_id, model_version) AS d FROM {DB}.emotion_scores",
        f"SELECT count(*) AS n FROM {DB}.post_features f LEFT ANTI JOIN "
        f"(SELECT post_id FROM {DB}.emotion_scores UNION ALL SELECT post_id FROM {DB}.scoring_failures) s "
        f"ON f.post_id = s.post_id",
    )
    fault_runs = runs[-2:]
    duplicated = counts["n"] - counts["d"]
    report = (f"worker killed {marks['killed']:.1f} s into the run ({marks['executors']} executor); run {broken:.1f} s "
              f"vs {unbroken:.1f} s unbroken (+{broken - unbroken:.1f} s to recover); rows lost {lost['n']}, "
              f"duplicated {duplicated}; load average {os.getloadavg()}")
    print(report)
    assert [r["status"] for r in fault_runs] == ["succeeded", "succeeded"], report
    assert all(r["selected"] == r["scored"] + r["failed"] for r in fault_runs), (fault_runs, report)
    # the pipeline's run and the two runs here selected every post with features (a synthetic post may
    # be unusable: a feature failure), each once
    assert sum(r["selected"] for r in runs) == feats["n"] > POSTS - 10, (runs, feats, report)
    assert lost["n"] == 0 and duplicated == 0, report
