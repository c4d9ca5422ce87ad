"""Table maintenance: OPTIMIZE and VACUUM every MoodLake Delta table (``moodlake maintain``).

Every table of :data:`moodlake.tables.ALL_TABLES` that exists (tables not created yet are
skipped) gets, in this order:

1. ``delta.deletedFileRetentionDuration`` and ``delta.logRetentionDuration`` set to
   ``maintenance.retention_days`` (only when they differ), so that time travel really covers that
   many days: Delta refuses time travel beyond the first, and drops log entries older than the
   second at checkpoints;
2. ``OPTIMIZE``: small files compacted (clustered tables are clustered);
3. ``VACUUM ... RETAIN N HOURS``: data files no longer referenced by any version of the last N
   hours deleted. VACUUM lists and compares files with
   ``spark.sql.sources.parallelPartitionDiscovery.parallelism`` tasks, 10,000 by default: minutes
   for a small table; ``maintenance.listing_parallelism`` (default: the session's parallelism)
   sets it for this command.

Delta's safety check refuses a VACUUM retention under its default of 168 hours (7 days), unless
``spark.databricks.delta.retentionDurationCheck.enabled`` is false. A smaller configured retention
sets that flag for the duration of this command only, and the log says so. (Delta 4 compares the
retention with the table's own ``delta.deletedFileRetentionDuration``, which step 1 has already
lowered; the flag makes the command independent of that detail.)

Run it weekly, when no other job writes: OPTIMIZE conflicts with a concurrent MERGE on the same
files (one of the two fails and can simply be run again).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
DELTA_DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class TableMaintenance:
    table: str
    exists: bool
    retention_hours: int = 0
    properties_changed: bool = False
    files_removed: int = 0      # by OPTIMIZE (compacted away)
    files_added: int = 0        # by OPTIMIZE
    files_vacuumed: int | None = None  # deleted by VACUUM (None: not reported by Delta)
    seconds: float = 0.0
    error: str | None = None    # why maintenance of this table failed

    def summary(self) -> str:
        if not self.exists:
            return f"{self.table}: does not exist yet, skipped"
        if self.error:
            return f"{self.table}: FAILED after {self.seconds:.1f}s: {self.error}"
        vacuumed = "?" if self.files_vacuumed is None else str(self.files_vacuumed)
        props = "; retention properties set" if self.properties_changed else ""
        return (f"{self.table}: OPTIMIZE removed {self.files_removed} files, added {self.files_added}; "
                f"VACUUM deleted {vacuumed} files (retain {self.retention_hours} h){props}; "
                f"{self.seconds:.1f}s")


def retention_properties(hours: int) -> dict[str, str]:
    interval = f"interval {hours} hours"
    return {"delta.deletedFileRetentionDuration": interval, "delta.logRetentionDuration": interval}


def _set_retention(spark, name: str, hours: int) -> bool:
    """Set the retention properties of ``name`` where they differ; True when they changed."""
    current = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    wanted = retention_properties(hours)
    if all(current.get(k) == v for k, v in wanted.items()):
        return False
    pairs = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
    spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({pairs})")
    return True


def _vacuumed_files(spark, name: str) -> int | None:
    """numDeletedFiles of the latest VACUUM END commit (vacuum logging is on for this command)."""
    for row in spark.sql(f"DESCRIBE HISTORY {name} LIMIT 5").select("operation", "operationMetrics").collect():
        if row["operation"] == "VACUUM END":
            value = (row["operationMetrics"] or {}).get("numDeletedFiles")
            return int(value) if value is not None else None
    return None


def maintain_table(spark, name: str, hours: int) -> TableMaintenance:
    """OPTIMIZE and VACUUM one existing Delta table; the session's confs are the caller's concern."""
    t0 = time.time()
    changed = _set_retention(spark, name, hours)
    metrics = spark.sql(f"OPTIMIZE {name}").first()["metrics"]
    spark.sql(f"VACUUM {name} RETAIN {hours} HOURS").collect()
    return TableMaintenance(
        table=name, exists=True, retention_hours=hours, properties_changed=changed,
        files_removed=int(metrics["numFilesRemoved"]), files_added=int(metrics["numFilesAdded"]),
        files_vacuumed=_vacuumed_files(spark, name), seconds=time.time() - t0,
    )


def maintain(spark, cfg, specs=None, report: Callable[[TableMaintenance], None] | None = None
             ) -> list[TableMaintenance]:
    """Maintain every table of ``specs`` (default: all of :data:`moodlake.tables.ALL_TABLES`) that exists.

    ``report`` gets each table's result as soon as it is done. A table that fails is recorded with
    its error and the next one is maintained all the same.
    """
    from moodlake import tables
    from moodlake.spark import session_conf

    specs = tables.ALL_TABLES if specs is None else specs
    hours = cfg.maintenance.retention_days * 24
    parallelism = cfg.maintenance.listing_parallelism or max(
        spark.sparkContext.defaultParallelism, int(spark.conf.get("spark.sql.shuffle.partitions")))
    # vacuum logging: VACUUM START / END commits whose metrics count the files deleted
    overrides = {VACUUM_LOGGING: "true", LISTING_PARALLELISM: str(parallelism)}
    if hours < DELTA_DEFAULT_RETENTION_HOURS:
        overrides[RETENTION_CHECK] = "false"
        log.warning("maintenance.retention_days=%d (%d h) is under Delta's 168 h safety minimum: "
                    "%s=false for this command only; readers of snapshots older than %d h may fail",
                    cfg.maintenance.retention_days, hours, RETENTION_CHECK, hours)
    results = []
    with session_conf(spark, overrides):
        for spec in specs:
            name = cfg.table(spec.key)
            t0 = time.time()
            if not spark.catalog.tableExists(name):
                result = TableMaintenance(table=name, exists=False)
            else:
                log.info("maintaining %s (retain %d h)", name, hours)
                try:
                    result = maintain_table(spark, name, hours)
                except Exception as e:  # noqa: BLE001 - reported per table, the others still run
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    log.error("maintenance of %s failed: %s", name, e)
                    result = TableMaintenance(table=name, exists=True, retention_hours=hours,
                                              seconds=time.time() - t0, error=first[:500])
            results.append(result)
            if report:
                report(result)
    return results
