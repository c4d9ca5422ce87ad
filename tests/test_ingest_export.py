"""Bad input lands marked or fails with a reason; nothing is dropped; counts reconcile;
a changed post is updated in place."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from moodlake.ingest import Ingestor
from moodlake.sources.datasets import dataset_source
from tests import helpers

pytestmark = pytest.mark.spark


@pytest.fixture
def bad_export(tmp_path):
    return helpers.write_bad_export(tmp_path)


def test_every_bad_record_lands_marked_or_fails_with_a_reason(spark, cfg, bad_export):
    root, n_lines, big = bad_export
    src = dataset_source("export", root, cfg, label_set="ekman7", name="export-bad")
    r = Ingestor(spark, cfg).run(src)
    assert r.input_records == n_lines == 17
    assert r.reconciles() and r.posts_new == 13 and r.failures == 4

    posts = {p.source_id: p for p in spark.table(cfg.table("posts")).where("source = 'export-bad'").collect()}
    fails = {f.input_ref: f for f in spark.table(cfg.table("ingest_failures")).where("source = 'export-bad'").collect()}
    assert len(posts) + len(fails) == n_lines

    assert posts["ok"].image_status == "ok" and posts["ok"].label == "joy" and posts["ok"].title == "A fine day"
    assert posts["trunc"].image_status == "truncated" and "image:truncated" in posts["trunc"].quality_flags
    assert posts["corrupt"].image_status in ("corrupt", "truncated") and posts["corrupt"].image_error
    assert (posts["gif"].image_mime, posts["gif"].image_status) == ("image/gif", "ok")
    assert "image:extension_mismatch" in posts["png"].quality_flags and posts["png"].image_mime == "image/png"
    assert posts["html"].description.startswith("<p>Hi <b>there</b></p>")  # bronze keeps it; features clean it
    assert posts["latin1"].title == "café crème" and "record:non_utf8" in posts["latin1"].quality_flags
    assert posts["tags"].tags == ["Beach", "beach", "sea"]
    assert {"tags:empty_removed", "tags:duplicates"} <= set(posts["tags"].quality_flags)
    assert len(posts["big"].description) == len(big)
    assert posts["ok"].title == "A fine day"  # the first of the duplicated ids won
    assert posts["unknown-label"].label is None and "label:unknown" in posts["unknown-label"].quality_flags
    assert "euphoria" in posts["unknown-label"].raw  # kept in the raw payload
    assert posts["noimage"].image_status == "missing" and posts["noimage"].image_error == "file not found"
    assert posts["htmlimage"].image_status == "not_an_image"
    assert "record:unknown_fields" in posts["extra"].quality_flags

    reasons = {ref.split(":")[-1]: (f.reason_code, f.stage) for ref, f in fails.items()}
    assert reasons == {"10": ("duplicate_input", "read"), "12": ("invalid_json", "parse"),
                       "13": ("missing_id", "parse"), "17": ("invalid_record", "parse")}
    assert all(f.reason and f.permanent for f in fails.values())
    assert '"title": ' in fails["posts.jsonl:12"].raw

    # the same input again: nothing new, nothing lost, the same failures
    r2 = Ingestor(spark, cfg).run(src)
    assert (r2.posts_new, r2.posts_updated, r2.posts_unchanged, r2.failures) == (0, 0, 13, 4)
    assert spark.table(cfg.table("ingest_failures")).where("source = 'export-bad'").count() == 4


def test_a_changed_post_is_updated_and_keeps_its_first_landing(spark, cfg, tmp_path):
    lines = [helpers.j({"id": str(i), "title": f"post {i}", "tags": ["a"]}) for i in range(5)]
    helpers.write_export(tmp_path, lines, {})
    src = dataset_source("export", tmp_path, cfg, name="export-change")
    ing = Ingestor(spark, cfg)
    assert ing.run(src).posts_new == 5
    before = {p.source_id: p for p in spark.table(cfg.table("posts")).where("source = 'export-change'").collect()}

    lines[2] = helpers.j({"id": "2", "title": "post 2, edited", "tags": ["a", "b"]})
    helpers.write_export(tmp_path, lines, {})
    r = ing.run(src)
    assert (r.posts_new, r.posts_updated, r.posts_unchanged) == (0, 1, 4)
    after = {p.source_id: p for p in spark.table(cfg.table("posts")).where("source = 'export-change'").collect()}
    assert after["2"].title == "post 2, edited" and after["2"].tags == ["a", "b"]
    assert after["2"].first_ingested_at == before["2"].first_ingested_at
    assert after["2"].ingested_at > before["2"].ingested_at and after["2"].ingest_run_id == r.run_id
    assert after["1"].ingest_run_id == before["1"].ingest_run_id  # untouched rows keep their version


def test_missing_folder_is_a_clear_error(spark, cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Ingestor(spark, cfg).run(dataset_source("vso-twitter", tmp_path / "nope", cfg))
    failed = spark.table(cfg.table("ingest_runs")).where("status = 'failed'").orderBy(F.desc("started_at")).first()
    assert "no such folder" in failed.message
