"""The research sets in ../shared/data, ingested for real into Delta, and ingested again."""
from __future__ import annotations

from collections import Counter

import pytest
from pyspark.sql import functions as F

from moodlake.ingest import Ingestor
from moodlake.sources.datasets import dataset_source

pytestmark = [pytest.mark.spark, pytest.mark.data]


def _posts(spark, cfg, source):
    return spark.table(cfg.table("posts")).where(F.col("source") == source)


def test_vso_twitter_lands_603_and_a_rerun_changes_nothing(spark, cfg, shared_data):
    root = shared_data / "vso_twitter"
    ing = Ingestor(spark, cfg)
    src = dataset_source("vso-twitter", root, cfg)
    r1 = ing.run(src)
    # expectations from the files themselves, not from the code under test
    images = sorted(root.glob("partition*/*.jpg"))
    truth = dict(line.split()[:2] for line in (root / "groundTruthLabel.txt").read_text().splitlines()[1:])
    magic = Counter("gif" if f.read_bytes()[:4] == b"GIF8" else "png" if f.read_bytes()[:4] == b"\x89PNG" else "jpeg"
                    for f in images)
    assert len(images) == 603
    assert (r1.input_records, r1.posts_new, r1.failures) == (603, 603, 0)

    posts = _posts(spark, cfg, "vso-twitter")
    assert posts.count() == 603
    by_split = {r[0]: r[1] for r in posts.groupBy("source_split").count().collect()}
    assert by_split == {p.name: len(list(p.glob("*.jpg"))) for p in root.glob("partition*")}
    labels = {r[0]: r[1] for r in posts.groupBy("label").count().collect()}
    assert labels == dict(Counter(truth[f.name] for f in images))
    mimes = {r[0]: r[1] for r in posts.groupBy("image_mime").count().collect()}
    assert mimes == {"image/" + k: v for k, v in magic.items()}
    assert posts.where("image_status <> 'ok'").count() == 0
    mismatch = posts.where(F.array_contains("quality_flags", "image:extension_mismatch")).count()
    assert mismatch == magic["gif"] + magic["png"]
    one = posts.where("source_id = '100'").first()
    assert one.title == "My baby ..." and one.owner == "blacchyna" and one.tags == ["cairo"]
    assert one.image == (root / "partition1" / "100.jpg").read_bytes()
    assert "Awwwww!!!!!" in one.description and one.label_set == "sentiment2"

    versions_before = spark.sql(f"DESCRIBE HISTORY {cfg.table('posts')}").count()
    r2 = ing.run(src)
    assert (r2.posts_new, r2.posts_updated, r2.posts_unchanged) == (0, 0, 603)
    assert _posts(spark, cfg, "vso-twitter").count() == 603
    assert spark.table(cfg.table("posts")).groupBy("post_id").count().where("count > 1").count() == 0
    runs = spark.table(cfg.table("ingest_runs")).where(F.col("run_id").isin(r1.run_id, r2.run_id)).collect()
    assert {r.status for r in runs} == {"succeeded"}
    for r in runs:
        assert r.input_records == r.skipped + r.posts_new + r.posts_updated + r.posts_unchanged + r.failures
    # an unchanged re-run rewrote no post (a no-op MERGE may still add a commit)
    last = spark.sql(f"DESCRIBE HISTORY {cfg.table('posts')}").where("operation = 'MERGE'").orderBy(F.desc("version")).first()
    assert int(last.operationMetrics.get("numTargetRowsUpdated", "0")) == 0
    assert spark.sql(f"DESCRIBE HISTORY {cfg.table('posts')}").count() >= versions_before


def test_emotion6_labels_votes_and_scores(spark, cfg, shared_data):
    root = shared_data / "emotion6"
    r = Ingestor(spark, cfg).run(dataset_source("emotion6", root, cfg))
    files = sorted((root / "images").glob("*/*.jpg"))
    assert (r.input_records, r.posts_new, r.failures) == (len(files), len(files), 0)
    posts = _posts(spark, cfg, "emotion6")
    assert {x[0]: x[1] for x in posts.groupBy("label").count().collect()} == dict(Counter(f.parent.name for f in files))
    row = posts.where("source_id = 'disgust/1'").first()
    # ground_truth.txt line 2 (readme): disgust/1.jpg 2.5 3.8 0.133333 0.7 0 0.0666667 0.1 0 0
    assert row.label_scores == {"valence": 2.5, "arousal": 3.8}
    assert row.label_dist["disgust"] == pytest.approx(0.7) and row.label_dist["anger"] == pytest.approx(0.133333)
    assert posts.where("abs(aggregate(map_values(label_dist), 0D, (a, x) -> a + x) - 1) > 0.01").count() == 0
    assert posts.where("image_status = 'ok' AND image_mime = 'image/jpeg'").count() == len(files)


def test_goemotions_dev_multilabel(spark, cfg, shared_data):
    root = shared_data / "goemotions"
    src = dataset_source("goemotions", root, cfg, splits=("dev",))
    r = Ingestor(spark, cfg).run(src)
    lines = (root / "ekman" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    names = (root / "ekman" / "labels.txt").read_text().split()
    assert (r.input_records, r.posts_new, r.failures) == (len(lines), len(lines), 0)
    posts = _posts(spark, cfg, "goemotions")
    assert posts.count() == len(lines)
    multi = sum("," in ln.split("\t")[1] for ln in lines)
    assert posts.where("size(labels) > 1").count() == multi
    text, ids, cid = lines[0].split("\t")
    row = posts.where(F.col("source_id") == cid).first()
    assert row.description == text and row.labels == [names[int(i)] for i in ids.split(",")]
    assert row.source_split == "dev" and row.label_set == "ekman7" and row.image_status == "missing"
