"""A lakehouse on ``s3a://``: the Delta tables (posts, features, datasets, models, scores, run
ledgers), a Petastorm dataset and the model registry in a bucket of a local S3-compatible server
(moto's, on 127.0.0.1), written by a fresh Spark application (Delta and Petastorm's Parquet through
Hadoop's S3A connector, the jars ``make setup`` resolves; Petastorm's metadata, the reader and the
registry through moodlake.storage's pyarrow S3), then read by name from another process
(``moodlake sql``).

What the application wrote is checked with boto3, which talks to the server on its own: the tables'
Delta logs and data files and the dataset's Parquet files are objects in the bucket, and nothing of
them is on the local disk."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto (requirements.txt) is not installed")
boto3 = pytest.importorskip("boto3")

pytestmark = [pytest.mark.slow]

JOB = Path(__file__).with_name("s3a_lake_job.py")
N = 40


def _env(home: Path, endpoint: str, bucket: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY", "AWS_"))}
    s3a = "MOODLAKE__SPARK__CONF__spark.hadoop.fs.s3a."
    env.update({
        "MOODLAKE_HOME": str(home), "MOODLAKE__SPARK__MASTER": "local[2]", "MOODLAKE__SPARK__SHUFFLE_PARTITIONS": "2",
        "MOODLAKE__LAKEHOUSE__WAREHOUSE_DIR": f"s3a://{bucket}/warehouse",
        "MOODLAKE__TRAINING__MODELS_ROOT": f"s3a://{bucket}/models",
        "MOODLAKE__TRAINING__ROOT": f"s3a://{bucket}/training",
        "MOODLAKE__DATASETS__ROOT": f"s3a://{bucket}/datasets",
        f"{s3a}endpoint": endpoint, f"{s3a}path.style.access": "true", f"{s3a}endpoint.region": "us-east-1",
        # the standard AWS chain, and nothing from ~/.aws
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1",
    })
    return env


def test_the_nightly_tables_live_in_the_bucket_and_reconcile(tmp_path, s3_endpoint):
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    home = tmp_path / "driver home"
    env = _env(home, s3_endpoint, bucket)

    try:
        _run_and_check(env, s3, bucket, home)
    finally:  # the lakehouse's Derby metastore server, which the first application started
        subprocess.run([sys.executable, "-m", "moodlake.cli", "metastore", "stop"], env=env, capture_output=True,
                       timeout=120)


def _run_and_check(env: dict, s3, bucket: str, home: Path) -> None:
    job = subprocess.run([sys.executable, str(JOB), str(N)], env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, (job.stdout + job.stderr)[-5000:]
    (line,) = [ln for ln in job.stdout.splitlines() if ln.startswith("S3A-JSON ")]
    did = json.loads(line[len("S3A-JSON "):])
    assert did["ingest"]["input"] == N == did["ingest"]["new"] + did["ingest"]["failures"]
    assert did["features"]["features"] + did["features"]["failures"] == N
    first, again = did["first"], did["again"]
    assert first["selected"] == first["scored"] + first["failed"] == did["features"]["features"]
    # a character CNN scores every post with text (about two in three); the others fail with their reason
    assert first["scored"] > N // 2 and set(did["failure_reasons"]) <= {
        "no usable image, no text words and no tags", "stpierre_char cannot score a post with these modalities"}, did
    assert again["selected"] == 0  # exactly once: the second run finds nothing new
    assert did["scores_location"] == f"s3a://{bucket}/warehouse/moodlake.db/emotion_scores"
    assert did["model"]["folder"] == f"s3a://{bucket}/models/{did['model']['version']}"
    assert did["model"]["epochs"] == 1
    ds = did["dataset"]
    assert ds["path"].startswith(f"s3a://{bucket}/datasets/")
    assert sum(ds["counts"].values()) + sum(ds["excluded"].values()) == did["features"]["features"]
    # the Petastorm loader read the whole test split back from the bucket, each row once
    assert ds["test_rows_read"] == ds["test_ids_distinct"] == ds["counts"]["test"] > 0, ds

    # what the application wrote is in the bucket ...
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    for table in ("posts", "post_features", "datasets", "training_runs", "models", "emotion_scores", "scoring_runs"):
        prefix = f"warehouse/moodlake.db/{table}/"
        assert f"{prefix}_delta_log/00000000000000000000.json" in keys, (table, sorted(keys)[:40])
        assert any(k.startswith(prefix) and k.endswith(".parquet") for k in keys), (table, json.dumps(did), [k for k in keys if k.startswith(prefix)])
    assert {f"models/{did['model']['version']}/{f}" for f in ("config.json", "model.safetensors", "vocab.json")} <= set(keys)
    dataset_prefix = ds["path"][len(f"s3a://{bucket}/"):]
    for split in ("train", "val", "test"):
        split_keys = [k for k in keys if k.startswith(f"{dataset_prefix}/{split}/")]
        assert f"{dataset_prefix}/{split}/_common_metadata" in split_keys, split_keys  # petastorm's schema
        assert any(k.endswith(".parquet") for k in split_keys), split_keys
    assert f"{dataset_prefix}/manifest.json" in keys
    assert f"training/{did['model']['run_id']}/checkpoints/epoch-0001.pt" in keys  # the training run's checkpoint
    # ... and none of it on the driver's disk (which holds the metastore, ledgers' state and logs)
    assert not [p for p in home.rglob("*") if p.suffix == ".parquet" or p.name == "_delta_log"]

    # another application reads the tables by name through the shared metastore and s3a
    out = subprocess.run([sys.executable, "-m", "moodlake.cli", "sql",
                          "SELECT count(*) AS n, count(DISTINCT post_id) AS d FROM moodlake.emotion_scores"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip() and ln.split()[0].isdigit()]
    assert rows == [[str(first["scored"]), "|", str(first["scored"])]], out.stdout
