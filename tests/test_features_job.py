"""The silver feature job on Spark: every post ends in post_features or feature_failures with a
reason, counts reconcile, re-runs are incremental; splits and vocabularies on Spark."""
from __future__ import annotations

import dataclasses

import pytest
from pyspark.sql import functions as F

from moodlake.config import SplitSpec
from moodlake.data.splits import assign_split, split_column
from moodlake.data.vocab import build_vocab
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.sources.datasets import dataset_source
from tests import helpers

pytestmark = pytest.mark.spark


def _features(spark, cfg, source):
    return {r.post_id: r for r in spark.table(cfg.table("post_features")).where(F.col("source") == source).collect()}


def _failures(spark, cfg, source):
    return {r.post_id: r for r in spark.table(cfg.table("feature_failures")).where(F.col("source") == source).collect()}


def test_every_ingested_bad_row_ends_in_a_table_with_a_reason(spark, cfg, tmp_path):
    root, n_lines, _ = helpers.write_bad_export(tmp_path / "bad")
    extra = tmp_path / "nothing"
    helpers.write_export(extra, [
        helpers.j({"id": "void", "image": "img/t.jpg"}),                      # truncated image, no text, no tags
        helpers.j({"id": "blank", "title": "<br/>", "tags": ["", " "]}),      # text that is only markup, empty tags
        helpers.j({"id": "fine", "title": "all good", "tags": ["a"]}),
    ], {"t.jpg": helpers.truncated_jpeg()})
    ing = Ingestor(spark, cfg)
    r1 = ing.run(dataset_source("export", root, cfg, label_set="ekman7", name="feat-bad"))
    r2 = ing.run(dataset_source("export", extra, cfg, name="feat-void"))

    result = run_features(spark, cfg)
    assert result.reconciles()
    feats, fails = _features(spark, cfg, "feat-bad"), _failures(spark, cfg, "feat-bad")
    assert len(feats) + len(fails) == r1.posts_new == 13  # the 4 ingest failures stay in ingest_failures
    assert fails == {}  # every bad-input post still has some usable part
    f = {k.split(":", 1)[1]: v for k, v in feats.items()}
    assert not f["trunc"].has_image and f["trunc"].image_reason.startswith("image truncated")
    assert not f["corrupt"].has_image and f["corrupt"].has_text
    assert f["gif"].has_image and f["png"].has_image and f["ok"].has_image
    assert f["html"].text == "Hi there x" and f["html"].text_words == ["hi", "there", "x"]
    assert f["tags"].tags == ["beach", "sea"]
    assert len(f["big"].text) == 4096
    assert f["latin1"].text == "café crème"
    assert not f["htmlimage"].has_image and "not_an_image" in f["htmlimage"].image_reason

    void = _failures(spark, cfg, "feat-void")
    assert set(void) == {"feat-void:void", "feat-void:blank"} and r2.posts_new == 3
    assert void["feat-void:void"].reason_code == "no_usable_modality"
    why = void["feat-void:void"].reason
    assert why.startswith("image truncated: ") and why.endswith("; no text; no tags")
    assert void["feat-void:blank"].reason.startswith("image missing")
    assert set(_features(spark, cfg, "feat-void")) == {"feat-void:fine"}

    # nothing new: nothing computed; the same tables
    again = run_features(spark, cfg)
    assert again.processed == 0 and (again.features, again.failures) == (result.features, result.failures)


def test_changed_posts_and_new_rules_are_recomputed(spark, cfg, tmp_path):
    rows = [helpers.j({"id": str(i), "title": f"post {i}", "tags": ["a"]}) for i in range(4)]
    helpers.write_export(tmp_path, rows, {})
    src = dataset_source("export", tmp_path, cfg, name="feat-change")
    Ingestor(spark, cfg).run(src)
    run_features(spark, cfg)
    rows[1] = helpers.j({"id": "1", "title": "edited <b>post</b>", "tags": ["a"]})
    rows[2] = helpers.j({"id": "2", "image": "img/none.jpg"})  # now nothing usable
    helpers.write_export(tmp_path, rows, {})
    Ingestor(spark, cfg).run(src)
    r = run_features(spark, cfg)
    assert r.processed == 2 and r.reconciles()
    feats = _features(spark, cfg, "feat-change")
    assert feats["feat-change:1"].text == "edited post"
    assert "feat-change:2" not in feats and "feat-change:2" in _failures(spark, cfg, "feat-change")

    bumped = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, version=cfg.features.version + 1))
    everything = spark.table(cfg.table("posts")).count()
    r = run_features(spark, bumped)
    assert r.processed == everything and r.reconciles()
    assert spark.table(cfg.table("post_features")).where(F.col("features_version") != bumped.features.version).count() == 0
    run_features(spark, cfg)  # back to the configured version for the other tests


def test_spark_splits_equal_python_splits(spark, cfg):
    ids = [(f"vso-twitter:{i}", f"partition{i % 5 + 1}") for i in range(3000)]
    df = spark.createDataFrame(ids, "post_id string, source_split string")
    sampled = SplitSpec(train=0.3, val=0.1, test=0.1, drop=0.5, seed=3)
    for name, spec in [(n, cfg.dataset(n).split) for n in ("synthetic", "vso-twitter", "goemotions")] + [("sampled", sampled)]:
        got = {r.post_id: r.split for r in df.withColumn("split", split_column(spec)).collect()}
        assert got == {pid: assign_split(pid, ss, spec) for pid, ss in ids}, name


def test_splits_are_stratified_and_stable_when_posts_are_added(spark, cfg):
    spec = cfg.dataset("synthetic").split
    labels = ["joy"] * 3000 + ["fear"] * 600
    df = spark.createDataFrame([(f"s:{i}", lab) for i, lab in enumerate(labels)], "post_id string, label string")
    first = {r.post_id: r.split for r in df.withColumn("split", split_column(spec)).collect()}
    for label, n in (("joy", 3000), ("fear", 600)):
        mine = [first[f"s:{i}"] for i, lab in enumerate(labels) if lab == label]
        tol = 3 * (0.1 * 0.9 / n) ** 0.5  # three standard deviations of a binomial share
        assert mine.count("val") / n == pytest.approx(0.1, abs=tol)
        assert mine.count("test") / n == pytest.approx(0.1, abs=tol)
    more = df.union(spark.createDataFrame([(f"s:new{i}", "joy") for i in range(500)], "post_id string, label string"))
    second = {r.post_id: r.split for r in more.withColumn("split", split_column(spec)).collect()}
    assert all(second[k] == v for k, v in first.items())


def test_vocabulary_comes_from_training_rows_only(spark):
    rows = [("train", "common words here", ["common", "words", "here"], ["sun"])] * 5
    rows += [("train", "rare", ["rare"], ["moon"])] * 4
    rows += [("test", "testonly testonly", ["testonly", "testonly"], ["sun"])] * 10
    df = spark.createDataFrame(rows, "split string, text string, text_words array<string>, tags array<string>")
    v = build_vocab(df.where("split = 'train'"), min_word_count=5, min_tag_count=5)
    assert v.words == ("<PAD>", "<UNK>", "common", "here", "words")
    assert v.tags == ("<PAD>", "<UNK>", "sun")
    assert set(v.chars[2:]) == set("common words here" + "rare")  # no t, l or y: those are only in test rows
    assert v.char_ids("toy") == [1, v.chars.index("o"), 1]
    assert v.word_ids(["rare", "testonly", "common"]) == [1, 1, 2]
