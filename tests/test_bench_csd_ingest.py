"""The .csd ingest benchmark (lib/moodlake_dev/bench/csd_ingest.py) at a tiny size: its baselines land
the same rows as MoodLake's ingest (the hash and landing columns aside), its rates are positive, and
MoodLake's second run lands nothing."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from moodlake.tables import SEGMENT_LABEL_CONTENT, VIDEO_FEATURE_CONTENT
from moodlake_dev.bench.csd_ingest import SOURCE, bench_configs, check_round, markdown, measure

CHUNK = 4 * 74 * 300  # 300 audio steps a row: every video's audio takes several rows


def _rows(spark, cfg, table: str, cols: list[str]) -> list[tuple]:
    """The bench's rows of ``table`` in ``cfg``'s database, sorted (the key columns come first: no ties)."""
    df = spark.table(cfg.table(table)).where(F.col("source") == SOURCE).select(*cols)
    return sorted(tuple(r) for r in df.collect())


@pytest.mark.spark
@pytest.mark.slow
def test_the_csd_bench_compares_the_same_rows(spark, cfg, tmp_path):
    report = measure(spark, cfg, tmp_path, videos=3, segments=2, rounds=1, warmup=False, chunk_bytes=CHUNK, keep=True)
    configs = bench_configs(cfg)
    try:
        s = report["summary"]
        rows = s["moodlake"]["rows"]
        assert rows["segment_labels"] == 3 * 2 and rows["video_features"] > 3 * 3  # audio in several chunks
        assert all(s[k]["rows"] == rows for k in ("append", "arrow", "moodlake_again"))
        for k in ("append", "arrow", "moodlake", "moodlake_again"):
            assert s[k]["segments_per_s_median"] > 0 and s[k]["videos_per_s_median"] > 0
            assert s[k]["feature_mb_per_s_median"] > 0
        again = report["rounds"][0]["moodlake_again"]
        assert again["result"]["new"] == again["result"]["updated"] == 0
        assert set(again["commits"].values()) == {0}
        assert s["strongest_baseline"] in ("append", "arrow")
        # the same content, value for value (hashes aside: the baselines leave them empty)
        for table, content in (("video_features", VIDEO_FEATURE_CONTENT), ("segment_labels", SEGMENT_LABEL_CONTENT)):
            cols = [c for c in content.fieldNames() if c not in ("record_hash", "content_hash")]
            ours = _rows(spark, configs["moodlake"], table, cols)
            assert len(ours) == s["moodlake"]["rows"][table]
            assert _rows(spark, configs["append"], table, cols) == ours, table
            assert _rows(spark, configs["arrow"], table, cols) == ours, table
        assert "| MoodLake `run_csd`, second run (no change) |" in markdown(report)
    finally:
        for c in configs.values():
            spark.sql(f"DROP DATABASE IF EXISTS {c.lakehouse.database} CASCADE")


def test_a_baseline_that_lands_other_rows_fails_the_round():
    facts = {"videos": 2, "segments": 4, "audio_steps": 100, "visual_steps": 30, "text_steps": 9}
    result = {"input_records": 8, "new": 8, "updated": 0, "unchanged": 0, "failures": 0, "steps_landed": 139}
    rows = {"video_features": 6, "segment_labels": 4}
    runs = {"moodlake": {"result": result, "rows": rows},
            "moodlake_again": {"result": {**result, "new": 0, "unchanged": 8}, "rows": rows,
                               "commits": {"video_features": 0, "segment_labels": 0}},
            "append": {"rows": rows}}
    check_round(runs, facts)
    runs["append"]["rows"] = {**rows, "video_features": 5}
    with pytest.raises(AssertionError, match="append landed"):
        check_round(runs, facts)
    runs["append"]["rows"] = rows
    runs["moodlake_again"]["commits"]["video_features"] = 1
    with pytest.raises(AssertionError):
        check_round(runs, facts)
