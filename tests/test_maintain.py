"""`moodlake maintain`: OPTIMIZE and VACUUM with maintenance.retention_days of time travel.

Each test works in its own database, where only the `posts` table exists (a small Delta table
written in several commits), so every other table of ALL_TABLES is one that does not exist yet.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from moodlake.maintenance import (LISTING_PARALLELISM, RETENTION_CHECK, VACUUM_LOGGING, maintain,
                                  retention_properties)
from moodlake.tables import ALL_TABLES

pytestmark = [pytest.mark.spark]

COMMITS, FILES_PER_COMMIT, ROWS_PER_COMMIT = 3, 2, 10


def _cfg(cfg, database: str, days: int):
    return dataclasses.replace(cfg, lakehouse=dataclasses.replace(cfg.lakehouse, database=database),
                               maintenance=dataclasses.replace(cfg.maintenance, retention_days=days))


def _small_table(spark, cfg) -> str:
    """cfg.table('posts') written in COMMITS appends of FILES_PER_COMMIT files each."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.lakehouse.database}")
    name = cfg.table("posts")
    for i in range(COMMITS):
        (spark.range(i * ROWS_PER_COMMIT, (i + 1) * ROWS_PER_COMMIT).selectExpr("id", "concat('post ', id) AS text")
         .repartition(FILES_PER_COMMIT).write.format("delta").mode("append").saveAsTable(name))
    return name


def _data_files(spark, name: str) -> set[str]:
    location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
    root = Path(location.removeprefix("file:"))
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


def _properties(spark, name: str) -> dict:
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def test_retention_zero_compacts_vacuums_and_ends_time_travel(spark, cfg):
    c = _cfg(cfg, "maintain_zero", 0)
    name = _small_table(spark, c)
    before_files = _data_files(spark, name)
    assert len(before_files) == COMMITS * FILES_PER_COMMIT
    current = _rows(spark.table(name))
    assert _rows(spark.read.option("versionAsOf", 0).table(name)) == [(i, f"post {i}") for i in range(ROWS_PER_COMMIT)]
    check_before = spark.conf.get(RETENTION_CHECK, None)

    reported = []
    results = maintain(spark, c, report=reported.append)

    assert reported == results
    assert [r.table for r in results] == [c.table(s.key) for s in ALL_TABLES]
    by_name = {r.table: r for r in results}
    assert all(not r.exists for t, r in by_name.items() if t != name)
    r = by_name[name]
    assert (r.exists, r.error, r.retention_hours, r.properties_changed) == (True, None, 0, True)
    assert (r.files_removed, r.files_added, r.files_vacuumed) == (COMMITS * FILES_PER_COMMIT, 1, COMMITS * FILES_PER_COMMIT)
    assert "OPTIMIZE removed 6 files, added 1; VACUUM deleted 6 files (retain 0 h)" in r.summary()
    # on disk: one compacted file, none of the old ones
    after_files = _data_files(spark, name)
    assert len(after_files) == 1 and not after_files & before_files
    # the current data is unchanged; the old version is gone
    assert _rows(spark.table(name)) == current
    with pytest.raises(Exception, match="(?i)time travel|not exist|FileNotFound"):
        spark.read.option("versionAsOf", 0).table(name).collect()
    props = _properties(spark, name)
    assert {k: props.get(k) for k in retention_properties(0)} == retention_properties(0)
    # the relaxed safety check and the vacuum logging were for this command only
    assert spark.conf.get(RETENTION_CHECK, None) == check_before
    assert spark.conf.get(VACUUM_LOGGING, None) is None and spark.conf.get(LISTING_PARALLELISM, None) is None


def test_retention_seven_days_keeps_old_versions_and_is_idempotent(spark, cfg):
    c = _cfg(cfg, "maintain_week", 7)
    name = _small_table(spark, c)
    before_files = _data_files(spark, name)

    r = {x.table: x for x in maintain(spark, c)}[name]

    assert (r.retention_hours, r.files_removed, r.files_added, r.files_vacuumed) == (168, COMMITS * FILES_PER_COMMIT, 1, 0)
    # the replaced files stay on disk for time travel
    assert before_files < _data_files(spark, name)
    assert _rows(spark.read.option("versionAsOf", 0).table(name)) == [(i, f"post {i}") for i in range(ROWS_PER_COMMIT)]
    assert _rows(spark.table(name)) == [(i, f"post {i}") for i in range(COMMITS * ROWS_PER_COMMIT)]
    props = _properties(spark, name)
    assert {k: props.get(k) for k in retention_properties(168)} == retention_properties(168)

    # again: nothing to compact, nothing to delete, properties not rewritten
    again = {x.table: x for x in maintain(spark, c)}[name]
    assert (again.properties_changed, again.files_removed, again.files_added, again.files_vacuumed) == (False, 0, 0, 0)
    assert _rows(spark.read.option("versionAsOf", 0).table(name)) == [(i, f"post {i}") for i in range(ROWS_PER_COMMIT)]


def test_a_failing_table_is_reported_and_the_others_still_run(spark, cfg, monkeypatch):
    from moodlake import maintenance

    c = _cfg(cfg, "maintain_fail", 7)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {c.lakehouse.database}")
    name = c.table("posts")
    for table in (name, c.table("ingest_runs")):
        spark.sql(f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT) USING delta")
    real = maintenance.maintain_table

    def flaky(spark_, table, hours):
        if table == name:
            raise RuntimeError("ConcurrentAppendException: a MERGE committed first\nmore detail")
        return real(spark_, table, hours)

    monkeypatch.setattr(maintenance, "maintain_table", flaky)
    results = {x.table: x for x in maintain(spark, c)}
    assert results[name].error == "ConcurrentAppendException: a MERGE committed first"
    assert "FAILED" in results[name].summary()
    runs = results[c.table("ingest_runs")]
    assert runs.exists and runs.error is None and runs.properties_changed


def test_maintenance_configuration_is_validated():
    from moodlake.config import ConfigError, load_config

    assert load_config("demo", environ={}).maintenance.retention_days == 7
    with pytest.raises(ConfigError, match=r"maintenance.retention_days: must be >= 0"):
        load_config("demo", overrides={"maintenance.retention_days": "-1"}, environ={})
    with pytest.raises(ConfigError, match=r"maintenance.retention_days: expected an integer"):
        load_config("demo", overrides={"maintenance.retention_days": "0.5"}, environ={})
