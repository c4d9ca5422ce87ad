"""A Spark application for tests/test_spark_s3a.py: a lakehouse whose warehouse, datasets and model
registry are ``s3a://``, in one fresh process (its configuration from the environment the test sets).

Ingests synthetic posts, computes their features, builds a Petastorm dataset, trains a small
character CNN for one epoch in this process (the test is about where things live, not about
accuracy) and registers it, reads the dataset's test split back through the Petastorm loader
(evaluation's path), scores twice (the second run must select nothing new) and prints one
``S3A-JSON`` line with what it did."""
from __future__ import annotations

import dataclasses
import json
import sys

from moodlake.config import DatasetDefinition, SplitSpec, load_config
from moodlake.data.build import build_dataset
from moodlake.evaluation.job import predict_split
from moodlake.inference import Predictor
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.scoring import score
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.spark import build_spark
from moodlake.train.launch import train

LABELS = ("negative", "positive")


def main(n: int) -> None:
    cfg = load_config()
    spark = build_spark(cfg, app_name="moodlake-s3a-test")
    ingested = Ingestor(spark, cfg).run(SyntheticSource(
        n=n, spec=SyntheticSpec(labels=LABELS, seed=3), label_set_name="sentiment2", name="s3a-synthetic"))
    features = run_features(spark, cfg)

    split = SplitSpec(train=0.5, val=0.2, test=0.3, seed=1)
    definition = DatasetDefinition(sources=("s3a-synthetic",), label_set="sentiment2", split=split)
    cfg = dataclasses.replace(cfg, datasets=dataclasses.replace(
        cfg.datasets, definitions={**cfg.datasets.definitions, "s3a-ds": definition}))
    built = build_dataset(spark, cfg, "s3a-ds")

    # one epoch of a small character CNN in this process: its loader reads the dataset from the bucket,
    # its checkpoint, history and registered weights go there
    recipe = dataclasses.replace(cfg.recipe("stpierre_char"), batch_size=8, max_epochs=1, glove=False,
                                 model={"channels": 8, "embedding_dim": 8})
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(
        cfg.training, recipes={**cfg.training.recipes, "stpierre_char": recipe}, launcher="inline", processes=1))
    trained = train(spark, cfg, "s3a-ds", "stpierre_char", promote=True)
    version, folder = trained.version, trained.path
    test_split = predict_split(Predictor.load(folder), built.url("test"))

    first = score(spark, cfg)
    again = score(spark, cfg)
    location = spark.sql(f"DESCRIBE DETAIL {cfg.table('emotion_scores')}").first()["location"]
    print("S3A-JSON " + json.dumps({
        "ingest": {"input": ingested.input_records, "new": ingested.posts_new, "failures": ingested.failures},
        "features": {"posts": features.posts, "features": features.features, "failures": features.failures},
        "dataset": {"path": built.path, "counts": built.counts, "excluded": built.excluded,
                    "test_rows_read": len(test_split.post_ids), "test_ids_distinct": len(set(test_split.post_ids))},
        "model": {"version": version, "folder": str(folder), "run_id": trained.run_id, "epochs": trained.epochs},
        "first": {"selected": first.selected, "scored": first.scored, "failed": first.failed},
        "again": {"selected": again.selected, "scored": again.scored, "failed": again.failed},
        "scores_location": location,
        "failure_reasons": {r["reason"]: r["n"] for r in spark.sql(
            f"SELECT reason, count(*) AS n FROM {cfg.table('scoring_failures')} GROUP BY reason").collect()},
    }), flush=True)
    spark.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
