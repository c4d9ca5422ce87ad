"""A Spark application for tests/test_spark_s3a.py: the nightly chain's tables on an ``s3a://``
warehouse, in one fresh process (its configuration from the environment the test sets).

Ingests synthetic posts, computes their features, registers a small character CNN (initialised
from a fixed seed: the test is about where the tables live, not about accuracy) under the s3a models
root, scores twice (the second run must select nothing new) and prints one ``S3A-JSON`` line with
what it did."""
from __future__ import annotations

import json
import sys

import torch

from moodlake import storage
from moodlake.config import load_config
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.models import get_model
from moodlake.scoring import score
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.spark import build_spark
from moodlake.train import registry

LABELS = ("negative", "positive")


def main(n: int) -> None:
    cfg = load_config()
    spark = build_spark(cfg, app_name="moodlake-s3a-test")
    ingested = Ingestor(spark, cfg).run(SyntheticSource(
        n=n, spec=SyntheticSpec(labels=LABELS, seed=3), label_set_name="sentiment2", name="s3a-synthetic"))
    features = run_features(spark, cfg)

    vocab = storage.join(cfg.models_root, "vocab-for-test.json")
    storage.write_text(vocab, json.dumps({"words": ["<PAD>", "<UNK>"], "tags": ["<PAD>", "<UNK>"],
                                          "chars": ["<PAD>", "<UNK>", *"abcdefghijklmnopqrstuvwxyz "]}))
    build_kwargs = {"num_classes": len(LABELS), "channels": 8, "embedding_dim": 8}
    torch.manual_seed(0)
    model = get_model("stpierre_char", **build_kwargs)
    config = {"model": "stpierre_char", "build_kwargs": build_kwargs, "labels": list(LABELS),
              "label_set": "sentiment2", "dataset": {"name": "none", "version": "none"}, "run_id": "s3a-test"}
    version, folder = registry.save_model(model.state_dict(), config, vocab, cfg.models_root)
    registry.register(spark, cfg, version, folder, {**config, "version": version})
    registry.promote(spark, cfg, version)

    first = score(spark, cfg)
    again = score(spark, cfg)
    location = spark.sql(f"DESCRIBE DETAIL {cfg.table('emotion_scores')}").first()["location"]
    print("S3A-JSON " + json.dumps({
        "ingest": {"input": ingested.input_records, "new": ingested.posts_new, "failures": ingested.failures},
        "features": {"posts": features.posts, "features": features.features, "failures": features.failures},
        "model": {"version": version, "folder": str(folder)},
        "first": {"selected": first.selected, "scored": first.scored, "failed": first.failed},
        "again": {"selected": again.selected, "scored": again.scored, "failed": again.failed},
        "scores_location": location,
        "failure_reasons": {r["reason"]: r["n"] for r in spark.sql(
            f"SELECT reason, count(*) AS n FROM {cfg.table('scoring_failures')} GROUP BY reason").collect()},
    }), flush=True)
    spark.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
