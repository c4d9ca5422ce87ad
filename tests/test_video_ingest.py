"""`moodlake ingest csd` on Spark: synthetic videos, a file of broken videos and the real CMU-MOSI
labels into video_features, segment_labels and ingest_failures; counts reconcile, a second run
changes no row, a changed video is replaced whole and a fixed one clears its failure."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from pyspark.sql import functions as F

from moodlake.sources.csd import CsdError, read_csd
from moodlake.sources.synthetic_video import SyntheticVideoSpec, make_video, write_synthetic_videos
from moodlake.video_ingest import CsdIngestor
from tests.helpers import BAD_VIDEOS, write_bad_videos_csd, write_unusable_csds

pytestmark = [pytest.mark.spark, pytest.mark.data]

SOURCE = "test-csd"
SPEC = SyntheticVideoSpec(videos=4, segments=3, segment_s=(1.0, 2.0), pause_s=(0.1, 0.3))
CHUNK = 4 * 74 * 200  # 200 audio steps a row: the audio of every video takes several rows


def _table(spark, cfg, key):
    return spark.table(cfg.table(key)).where(F.col("source") == SOURCE)


def _snapshot(spark, cfg):
    cols = {"video_features": ["modality", "video_id", "chunk", "content_hash", "first_ingested_at", "ingested_at",
                               "ingest_run_id"],
            "segment_labels": ["sequence", "video_id", "segment", "content_hash", "ingested_at", "ingest_run_id"],
            "ingest_failures": ["failure_id", "reason_code", "reason", "failed_at", "ingest_run_id"]}
    return {k: sorted(tuple(r) for r in _table(spark, cfg, k).select(*c).collect()) for k, c in cols.items()}


def _versions(spark, cfg, key) -> int:
    return spark.sql(f"DESCRIBE HISTORY {cfg.table(key)}").count()


def test_csd_ingest_reconciles_is_idempotent_and_replaces_changed_videos(spark, cfg, shared_data, tmp_path):
    files = write_synthetic_videos(tmp_path, SPEC)
    bad = write_bad_videos_csd(tmp_path / "bad.csd")
    mosi = shared_data / "cmu_mosi" / "CMU_MOSI_Opinion_Labels.csd"
    with h5py.File(mosi, "r") as f:  # the file's own counts
        mosi_segments = {v: len(g["intervals"]) for v, g in f["Opinion Segment Labels/data"].items()}
    ing = CsdIngestor(spark, cfg, chunk_bytes=CHUNK)
    features = [*files.features, bad]

    r1 = ing.run_csd(SOURCE, features, [files.labels, mosi])
    videos_in = 3 * 4 + len(BAD_VIDEOS) + 2 + 4 + 93
    assert (r1.input_records, r1.posts_new, r1.posts_updated, r1.posts_unchanged, r1.failures) == \
           (videos_in, videos_in - len(BAD_VIDEOS), 0, 0, len(BAD_VIDEOS))
    assert (r1.segments, r1.segments_landed, r1.segments_failed) == (4 * 3 + 2199, 4 * 3 + 2199, 0)
    assert sum(mosi_segments.values()) == 2199 and len(mosi_segments) == 93

    # video_features: each (modality, video) rebuilds to what the reader reads
    vf = _table(spark, cfg, "video_features")
    landed = {}
    for r in vf.orderBy("chunk").collect():
        landed.setdefault((r.modality, r.video_id), []).append(r)
    assert len(landed) == 3 * 4 + 2 and {v for m, v in landed if m == "bad"} == {"good", "good2"}
    for path in files.features:
        for rec in read_csd(path):
            rows = landed[rec.sequence, rec.video_id]
            assert len(rows) == rows[0].chunks and sum(r.steps for r in rows) == rec.rows
            np.testing.assert_array_equal(np.concatenate([np.asarray(r.features, np.float32) for r in rows]),
                                          rec.features)
            np.testing.assert_array_equal(np.concatenate([np.asarray(r.intervals) for r in rows]), rec.intervals)
            assert rows[0].feature_names == list(rec.feature_names) and rows[0].source_file == str(path)
    assert all(len(rows) >= 2 for (m, _), rows in landed.items() if m == "COVAREP")

    # segment_labels: the real labels, segment by segment
    sl = _table(spark, cfg, "segment_labels")
    got = {r.video_id: r.n for r in sl.where("sequence = 'Opinion Segment Labels'").groupBy("video_id")
           .agg(F.count("*").alias("n")).collect()}
    assert got == mosi_segments
    first = sl.where("segment_id = '03bSnISJMiM[0]'").first()
    assert (first.segment, first.label_names, first.label_values[0]) == (0, ["sentiment score"], pytest.approx(2.4))
    assert first.start_s == pytest.approx(51.904533) and first.end_s == pytest.approx(55.94535)
    assert sl.where("label_values[0] < -3 OR label_values[0] > 3").count() == 0
    assert sl.where("sequence = 'Emotion Labels'").count() == 4 * 3
    # the segments that CMU-MOSI lists out of time order landed, in the file's order
    order = [r.start_s for r in sl.where("video_id = 'VbQk4H8hgr0'").orderBy("segment").collect()]
    assert len(order) == 55 and order[45] < order[44]

    # failures: one per broken video, with its reason; the run recorded and reconciled
    fails = {r.input_ref.rsplit("/", 1)[1]: r for r in _table(spark, cfg, "ingest_failures").collect()}
    assert {k: r.reason_code for k, r in fails.items()} == BAD_VIDEOS
    assert all(r.input_ref == f"{bad}::bad/{k}" and r.reason.startswith(f"video {k} of 'bad': ")
               for k, r in fails.items())
    run = spark.table(cfg.table("ingest_runs")).where(F.col("run_id") == r1.run_id).first()
    assert (run.status, run.source, run.input_records, run.failures) == ("succeeded", SOURCE, videos_in,
                                                                          len(BAD_VIDEOS))
    assert run.input_records == run.skipped + run.posts_new + run.posts_updated + run.posts_unchanged + run.failures
    assert '"segments": 2211' in run.args and '"segments_landed": 2211' in run.args

    # a second run: the same tables, not a row rewritten
    before, versions = _snapshot(spark, cfg), {k: _versions(spark, cfg, k) for k in ("video_features", "segment_labels")}
    r2 = ing.run_csd(SOURCE, features, [files.labels, mosi])
    assert (r2.posts_new, r2.posts_updated, r2.posts_unchanged, r2.failures) == (0, 0, r1.posts_new, len(BAD_VIDEOS))
    assert _snapshot(spark, cfg) == before
    assert {k: _versions(spark, cfg, k) for k in versions} == versions

    # a shorter audio for one video (fewer chunks), and a broken video fixed
    assert make_video(SPEC, 1).sequences["audio"][0].shape[0] > 2 * 200  # 3 rows before
    with h5py.File(files.audio, "a") as f:
        g = f["COVAREP/data/synth0001"]
        iv, ft = g["intervals"][:250], g["features"][:250]
        del g["intervals"], g["features"]
        g["intervals"], g["features"] = iv, ft
    with h5py.File(bad, "a") as f:
        g = f["bad/data/rows_differ"]
        iv = g["intervals"][:3]
        del g["intervals"]
        g["intervals"] = iv
    r3 = ing.run_csd(SOURCE, features, [files.labels, mosi])
    assert (r3.posts_new, r3.posts_updated, r3.failures) == (1, 1, len(BAD_VIDEOS) - 1)
    audio1 = vf.where("modality = 'COVAREP' AND video_id = 'synth0001'").orderBy("chunk").collect()
    assert [(r.chunk, r.chunks, r.steps, r.video_steps) for r in audio1] == [(0, 2, 200, 250), (1, 2, 50, 250)]
    assert {r.ingest_run_id for r in audio1} == {r3.run_id}
    fails = {r.input_ref.rsplit("/", 1)[1] for r in _table(spark, cfg, "ingest_failures").collect()}
    assert fails == set(BAD_VIDEOS) - {"rows_differ"}
    assert vf.where("modality = 'bad' AND video_id = 'rows_differ'").count() == 1


def test_an_unusable_file_stops_the_run_before_anything_is_written(spark, cfg, tmp_path):
    good = write_synthetic_videos(tmp_path, SyntheticVideoSpec(videos=1, segments=1, prefix="ONE"))
    broken = write_unusable_csds(tmp_path / "u")["no_data_group"]
    ing = CsdIngestor(spark, cfg)
    with pytest.raises(CsdError, match=f"^{broken}: sequence 'seq' has no 'data' group$"):
        ing.run_csd("test-csd-unusable", [good.audio, broken])
    assert spark.table(cfg.table("video_features")).where("source = 'test-csd-unusable'").count() == 0
    run = spark.table(cfg.table("ingest_runs")).where("source = 'test-csd-unusable'").first()
    assert run.status == "failed" and run.message == f"CsdError: {broken}: sequence 'seq' has no 'data' group"


def test_wide_rows_sets_the_parquet_sizes_for_the_ingest_and_restores_them(spark):
    from moodlake.video_ingest import WIDE_ROWS_BATCH, WIDE_ROWS_BLOCK, wide_rows

    spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", "4096")
    spark.conf.unset("parquet.block.size")
    with wide_rows(spark):
        assert spark.conf.get("spark.sql.parquet.columnarReaderBatchSize") == str(WIDE_ROWS_BATCH)
        assert spark.conf.get("parquet.block.size") == str(WIDE_ROWS_BLOCK)
    assert spark.conf.get("spark.sql.parquet.columnarReaderBatchSize") == "4096"
    assert spark.conf.get("parquet.block.size", None) is None
