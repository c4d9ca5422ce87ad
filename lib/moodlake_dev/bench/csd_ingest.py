"""``.csd`` ingest (issue #20): segments, videos and MB of features per second, first ingest and re-run.

    .venv/bin/python -m moodlake_dev.bench.csd_ingest [--videos 100] [--segments 5] [--rounds 2] [--driver-memory 2g]

The set (seeded, written before anything is timed): ``--videos`` synthetic videos of
``--segments`` labelled segments each, written by ``moodlake.sources.synthetic_video`` as four
real computational sequences: labels (6 values a segment), audio (100 Hz, 74-d), visual (30 Hz,
35-d) and words (~0.3 s each, 300-d); features float32, intervals float64.

Timed, in one Spark session (``--master``, default ``local[2]``; JVM start excluded) on one
throwaway lakehouse, each implementation writing into its own database of the same tables
(``moodlake.tables``' ``video_features`` and ``segment_labels``, created the same way, empty at the
start of each round):

- **MoodLake, first ingest**: ``CsdIngestor(spark, cfg).run_csd`` on the four files (plan,
  validation of every video, rows with their hashes staged as Parquet, MERGE per table, the run
  ledger), and **second run**: the same call again on the same files (nothing changes: every video
  is read, checked and hashed, no row is written).
- **Baseline (a), plain append**: the same files read with plain h5py on the executors (the same
  task slots), the same rows built as Python tuples (the same chunks of at most ``CHUNK_BYTES`` of
  features a row; the two hash columns left empty) and appended to the tables with
  ``DataFrame.write.format("delta").mode("append")``: no validation, no MERGE, no staging, no run
  or failure rows.
- **Baseline (b), plain append through Arrow**: the same, but each executor turns the NumPy arrays
  into Arrow lists (``mapInArrow``) instead of Python lists: the fastest plain way found to land
  these rows from PySpark.

Both baselines must land as many rows as MoodLake in each table (asserted), and the second run
must land none. Rates: segments (label segments) / wall s, videos / wall s, and MB (10^6 bytes)
of feature values (float32, the three feature sequences) / wall s; medians over ``--rounds``
rounds, the order of the implementations alternating between rounds. A warm-up on a 4-video set
(JIT, Python workers, Delta) runs each implementation once before the first round.

``--driver-memory`` sets the session's (``spark.driver_memory``, the configuration's 2g by default):
on 2026-12-07 MoodLake's first ingest ran out of Java heap with 2g at 150 videos (see BENCHMARKS.md).

Prints a markdown table and writes JSON (machine, load average before and after) to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from moodlake.sources.synthetic_video import SyntheticVideoSpec, write_synthetic_videos
from moodlake.video_ingest import CHUNK_BYTES

SOURCE, WARMUP_SOURCE = "bench-csd", "bench-csd-warmup"
# implementation -> the suffix of its database (beside cfg.lakehouse.database)
DATABASES = {"moodlake": "_bench_csd", "append": "_bench_csd_append", "arrow": "_bench_csd_arrow"}
NAMES = {"append": "baseline (a): h5py + plain Delta append, Python rows",
         "arrow": "baseline (b): h5py + plain Delta append, Arrow (mapInArrow)",
         "moodlake": "MoodLake `run_csd`, first ingest", "moodlake_again": "MoodLake `run_csd`, second run (no change)"}
TABLES = ("video_features", "segment_labels")


# --------------------------------------------------------------------------- the set


def write_set(folder: Path, videos: int, segments: int, seed: int, prefix: str = "BENCH") -> tuple:
    """(files, facts) of a seeded synthetic set of ``videos`` videos written into ``folder``."""
    spec = SyntheticVideoSpec(videos=videos, segments=segments, seed=seed, prefix=prefix)
    files = write_synthetic_videos(folder, spec)
    facts = {"videos": videos, "segments": videos * segments,
             "csd_mb_on_disk": sum(p.stat().st_size for p in [files.labels, *files.features]) / 1e6}
    feature_bytes = 0
    for modality, path in zip(("audio", "visual", "text"), files.features):
        with h5py.File(path, "r") as f:
            shapes = [f[seq]["data"][vid]["features"].shape for seq in f for vid in f[seq]["data"]]
        facts[f"{modality}_steps"] = sum(n for n, _ in shapes)
        feature_bytes += sum(4 * n * d for n, d in shapes)
    facts["feature_mb"] = feature_bytes / 1e6
    return files, facts


def largest_task_share(files, cfg, slices: int) -> float:
    """The share of the feature bytes that the busiest of ``slices`` tasks reads in ``run_csd``: its
    planner's commits, each cut by ``SparkContext.parallelize`` into contiguous partitions."""
    from moodlake.video_ingest import CsdRequest, commits, plan

    items = plan(CsdRequest("plan", tuple(str(Path(p).resolve()) for p in files.features),
                            (str(Path(files.labels).resolve()),)))
    busiest = total = 0
    for group in commits(items, cfg.ingest.chunk_size):
        weights = [4 * it.entry.rows * (it.entry.dims or 1) for it in group]
        n, k = len(weights), max(1, min(slices, len(weights)))
        busiest += max(sum(weights[i * n // k:(i + 1) * n // k]) for i in range(k))
        total += sum(weights)
    return busiest / total


def _videos(path) -> list[tuple[str, str]]:
    """(sequence, video id) of every video of a file, in its order: plain h5py."""
    with h5py.File(path, "r") as f:
        return [(seq, vid) for seq in f for vid in f[seq]["data"]]


# --------------------------------------------------------------------------- the baselines


def _stamp_columns(stamp: dt.datetime, run_id: str) -> tuple:
    return (stamp, stamp, run_id)  # first_ingested_at, ingested_at, ingest_run_id


def _chunks(n: int, d: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """(first, end) steps of each row of a video of ``n`` steps of ``d`` features (video_ingest's layout)."""
    per = max(1, chunk_bytes // (4 * d))
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def _read(f: h5py.File, seq: str, vid: str, names: dict) -> tuple[np.ndarray, np.ndarray, list | None]:
    """(intervals, features, the sequence's dimension names) of a video; ``names`` caches the names."""
    if (f.filename, seq) not in names:
        md = f[seq].get("metadata")
        given = md is not None and "dimension names" in md
        names[f.filename, seq] = json.loads(md["dimension names"][0]) if given else None
    g = f[seq]["data"][vid]
    return (np.asarray(g["intervals"][()], np.float64), np.asarray(g["features"][()], np.float32),
            names[f.filename, seq])


def _python_rows(items, source: str, stamp: dt.datetime, run_id: str, chunk_bytes: int):
    """Rows (tuples, the table's column order) of ``items`` (path, sequence, video, labels?)."""
    files, known = {}, {}
    try:
        for path, seq, vid, labels in items:
            f = files.get(path) or files.setdefault(path, h5py.File(path, "r"))
            iv, ft, names = _read(f, seq, vid, known)
            if labels:
                for i in range(len(ft)):
                    yield (source, seq, vid, i, f"{vid}[{i}]", float(iv[i, 0]), float(iv[i, 1]), ft[i].tolist(),
                           names, path, "", "", *_stamp_columns(stamp, run_id))
                continue
            n, d = ft.shape
            parts = _chunks(n, d, chunk_bytes)
            for c, (a, b) in enumerate(parts):
                yield (source, seq, vid, c, len(parts), a, b - a, n, d, names, iv[a:b].tolist(), ft[a:b].tolist(),
                       path, "", "", *_stamp_columns(stamp, run_id))
    finally:
        for f in files.values():
            f.close()


def _lists(a: np.ndarray):
    """A [n, d] array as an Arrow list<item> array of n rows (no copy of the values)."""
    import pyarrow as pa

    n, d = a.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(a.reshape(-1)))


def _arrow_batches(batches, schema, source: str, stamp: dt.datetime, run_id: str, chunk_bytes: int):
    """mapInArrow: (path, sequence, video, labels) batches in, the table's rows out as Arrow batches."""
    import pyarrow as pa

    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)
    files, known = {}, {}
    try:
        for batch in batches:
            for path, seq, vid, labels in zip(*(batch.column(i).to_pylist() for i in range(4))):
                f = files.get(path) or files.setdefault(path, h5py.File(path, "r"))
                iv, ft, names = _read(f, seq, vid, known)
                n, d = ft.shape
                if labels:
                    cols = [[source] * n, [seq] * n, [vid] * n, list(range(n)), [f"{vid}[{i}]" for i in range(n)],
                            iv[:, 0], iv[:, 1], _lists(ft), [names] * n, [path] * n, [""] * n, [""] * n]
                else:
                    parts = _chunks(n, d, chunk_bytes)
                    k = len(parts)
                    offsets = pa.array(np.asarray([a for a, _ in parts] + [n], np.int32))
                    cols = [[source] * k, [seq] * k, [vid] * k, list(range(k)), [k] * k, [a for a, _ in parts],
                            [b - a for a, b in parts], [n] * k, [d] * k, [names] * k,
                            pa.ListArray.from_arrays(offsets, _lists(iv)),
                            pa.ListArray.from_arrays(offsets, _lists(ft)),
                            [path] * k, [""] * k, [""] * k]
                    n = k
                cols += [[stamp] * n, [stamp] * n, [run_id] * n]
                yield pa.RecordBatch.from_arrays(
                    [c if isinstance(c, pa.Array) else pa.array(c, type=field.type)
                     for c, field in zip(cols, arrow_schema)], schema=arrow_schema)
    finally:
        for f in files.values():
            f.close()


def plain_append(spark, cfg, files, source: str, arrow: bool = False, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Baseline: the files' rows appended to ``cfg``'s video tables, read on the executors (see the
    module docstring), the videos cut into partitions as MoodLake's commits are (contiguous slices of
    the files' order, as many as the session's task slots)."""
    from moodlake.runs import new_run_id, now
    from moodlake.tables import SEGMENT_LABELS, VIDEO_FEATURES

    stamp, run_id = now(), new_run_id()
    sc = spark.sparkContext
    for spec, paths, labels in ((SEGMENT_LABELS, [files.labels], True), (VIDEO_FEATURES, files.features, False)):
        items = [(str(Path(p).resolve()), seq, vid, labels) for p in paths for seq, vid in _videos(p)]
        parts = max(1, min(cfg.ingest.partitions or sc.defaultParallelism, len(items)))
        listing = sc.parallelize(items, parts)  # contiguous slices of the files' order, as MoodLake's commits
        if arrow:
            listing = spark.createDataFrame(listing, "path string, sequence string, video string, labels boolean")
            df = listing.mapInArrow(
                partial(_arrow_batches, schema=spec.schema, source=source, stamp=stamp, run_id=run_id,
                        chunk_bytes=chunk_bytes), spec.schema)
        else:
            rdd = listing.mapPartitions(
                partial(_python_rows, source=source, stamp=stamp, run_id=run_id, chunk_bytes=chunk_bytes))
            df = spark.createDataFrame(rdd, spec.schema, verifySchema=False)
        df.write.format("delta").mode("append").saveAsTable(cfg.table(spec.key))


# --------------------------------------------------------------------------- the runs


def bench_configs(cfg) -> dict:
    """implementation -> ``cfg`` with its own database (same lakehouse, same session)."""
    return {k: dataclasses.replace(cfg, lakehouse=dataclasses.replace(
        cfg.lakehouse, database=cfg.lakehouse.database + suffix)) for k, suffix in DATABASES.items()}


def reset(spark, configs: dict) -> None:
    """Every bench database dropped and made again with its empty tables."""
    from moodlake.tables import VIDEO_TABLES, ensure_tables

    for k, c in configs.items():
        spark.sql(f"DROP DATABASE IF EXISTS {c.lakehouse.database} CASCADE")
        if k != "moodlake":  # (CsdIngestor makes its own tables, the run ledger's included)
            ensure_tables(spark, c, VIDEO_TABLES)


def table_rows(spark, cfg, source: str) -> dict[str, int]:
    """Rows of ``source`` in each of ``cfg``'s video tables (one query)."""
    query = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {cfg.table(t)} WHERE source = :source"
                               for t in TABLES)
    return {r.t: r.n for r in spark.sql(query, args={"source": source}).collect()}


def _versions(spark, cfg) -> dict[str, int]:
    return {t: spark.sql(f"DESCRIBE HISTORY {cfg.table(t)}").count() for t in TABLES}


def _rates(wall: float, facts: dict) -> dict:
    return {"wall_s": wall, "segments_per_s": facts["segments"] / wall, "videos_per_s": facts["videos"] / wall,
            "feature_mb_per_s": facts["feature_mb"] / wall}


def _one_round(spark, configs: dict, files, facts: dict, source: str, order: list[str], chunk_bytes: int) -> dict:
    from moodlake.video_ingest import CsdIngestor

    out = {}
    ingestor = CsdIngestor(spark, configs["moodlake"], chunk_bytes=chunk_bytes)
    for name in order:
        if name == "moodlake":
            for key in ("moodlake", "moodlake_again"):
                before = _versions(spark, configs["moodlake"]) if key == "moodlake_again" else None
                start = time.perf_counter()
                r = ingestor.run_csd(source, files.features, [files.labels])
                out[key] = _rates(time.perf_counter() - start, facts)
                out[key]["result"] = {"input_records": r.input_records, "new": r.posts_new,
                                      "updated": r.posts_updated, "unchanged": r.posts_unchanged,
                                      "failures": r.failures, "segments_landed": r.segments_landed,
                                      "steps_landed": r.steps_landed}
                out[key]["rows"] = table_rows(spark, configs["moodlake"], source)
                if before is not None:
                    out[key]["commits"] = {t: v - before[t] for t, v in _versions(spark, configs["moodlake"]).items()}
        else:
            start = time.perf_counter()
            plain_append(spark, configs[name], files, source, arrow=name == "arrow", chunk_bytes=chunk_bytes)
            out[name] = _rates(time.perf_counter() - start, facts)
            out[name]["rows"] = table_rows(spark, configs[name], source)
    return out


def check_round(runs: dict, facts: dict) -> None:
    """Every implementation landed the same rows; the second run landed none and changed nothing."""
    first, again = runs["moodlake"], runs["moodlake_again"]
    videos = facts["videos"]
    assert first["result"]["new"] == first["result"]["input_records"] == 4 * videos, first["result"]
    assert first["result"]["failures"] == 0 and first["rows"]["segment_labels"] == facts["segments"], first
    steps = sum(facts[f"{m}_steps"] for m in ("audio", "visual", "text"))
    assert first["result"]["steps_landed"] == again["result"]["steps_landed"] == steps, (first, again)
    assert again["result"]["unchanged"] == again["result"]["input_records"] == 4 * videos, again["result"]
    assert again["result"]["new"] == again["result"]["updated"] == 0, again["result"]
    assert again["rows"] == first["rows"] and set(again["commits"].values()) == {0}, again
    for name, r in runs.items():
        assert r["rows"] == first["rows"], f"{name} landed {r['rows']}, MoodLake {first['rows']}"


def measure(spark, cfg, work: Path, videos: int, segments: int, rounds: int = 1, seed: int = 20,
            baselines: tuple[str, ...] = ("append", "arrow"), warmup: bool = True, chunk_bytes: int = CHUNK_BYTES,
            keep: bool = False) -> dict:
    """Write the set under ``work``, time every implementation ``rounds`` times in ``spark`` (on
    ``cfg``'s lakehouse, in databases of its own, dropped at the end unless ``keep``: then they hold
    the last round's rows); the report. ``chunk_bytes``: features per video_features row, at most."""
    configs = {k: c for k, c in bench_configs(cfg).items() if k == "moodlake" or k in baselines}
    files, facts = write_set(work / "set", videos, segments, seed)
    facts["task_slots"] = spark.sparkContext.defaultParallelism
    facts["busiest_task_share_of_bytes"] = largest_task_share(files, cfg, facts["task_slots"])
    runs: list[dict] = []
    try:
        if warmup:
            small, small_facts = write_set(work / "warmup", 4, 2, seed + 1, prefix="WARMUP")
            reset(spark, configs)
            _one_round(spark, configs, small, small_facts, WARMUP_SOURCE, [*baselines, "moodlake"], chunk_bytes)
        for k in range(rounds):
            reset(spark, configs)
            order = [*baselines, "moodlake"] if k % 2 == 0 else ["moodlake", *baselines]
            runs.append(_one_round(spark, configs, files, facts, SOURCE, order, chunk_bytes))
            check_round(runs[-1], facts)
            print(f"round {k + 1}/{rounds}: " + "; ".join(
                f"{name} {r['wall_s']:.1f} s = {r['segments_per_s']:,.0f} segments/s" for name, r in runs[-1].items()),
                flush=True)
    finally:
        if not keep:
            for c in configs.values():
                spark.sql(f"DROP DATABASE IF EXISTS {c.lakehouse.database} CASCADE")
    summary = {}
    for name in runs[0]:
        per = {m: [r[name][m] for r in runs] for m in ("wall_s", "segments_per_s", "videos_per_s", "feature_mb_per_s")}
        summary[name] = {**{f"{m}_median": statistics.median(v) for m, v in per.items()},
                         "segments_per_s_min": min(per["segments_per_s"]),
                         "segments_per_s_max": max(per["segments_per_s"]), "rows": runs[0][name]["rows"]}
    if baselines:
        best = max(baselines, key=lambda b: summary[b]["segments_per_s_median"])
        for s in summary.values():
            s["vs_strongest_baseline"] = s["segments_per_s_median"] / summary[best]["segments_per_s_median"]
        summary["strongest_baseline"] = best
    return {"set": facts, "rounds": runs, "summary": summary}


def markdown(report: dict) -> str:
    facts, summary = report["set"], report["summary"]
    rows = summary["moodlake"]["rows"]
    lines = [f"{facts['videos']:,} videos, {facts['segments']:,} segments, {facts['feature_mb']:,.1f} MB of "
             f"features ({facts['audio_steps']:,} audio, {facts['visual_steps']:,} visual, {facts['text_steps']:,} "
             f"word steps; {facts['csd_mb_on_disk']:,.1f} MB of .csd); {rows['video_features']:,} video_features and "
             f"{rows['segment_labels']:,} segment_labels rows each; median of {len(report['rounds'])} round(s). "
             f"In MoodLake's run the busiest of the {facts['task_slots']} tasks reads "
             f"{100 * facts['busiest_task_share_of_bytes']:.0f} % of the feature bytes.", "",
             "| implementation | wall s | segments/s | range | videos/s | feature MB/s | vs strongest baseline |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("append", "arrow", "moodlake", "moodlake_again"):
        if name not in summary:
            continue
        s = summary[name]
        ratio = f"{s['vs_strongest_baseline']:.2f}×" if "vs_strongest_baseline" in s else ""
        lines.append(f"| {NAMES[name]} | {s['wall_s_median']:.1f} | {s['segments_per_s_median']:,.1f} | "
                     f"{s['segments_per_s_min']:,.1f}-{s['segments_per_s_max']:,.1f} | "
                     f"{s['videos_per_s_median']:.1f} | "
                     f"{s['feature_mb_per_s_median']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from moodlake.config import load_config
    from moodlake.logs import setup_logging
    from moodlake.spark import build_spark
    from moodlake_dev.bench.models import machine_facts, write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--segments", type=int, default=5, help="labelled segments per video")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baselines", default="append,arrow", help="append, arrow, both or '' (none)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default=None, help="spark.driver_memory (default: the configuration's, 2g)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench-results/csd_ingest.json"))
    args = parser.parse_args(argv)
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    unknown = set(baselines) - {"append", "arrow"}
    if unknown:
        parser.error(f"--baselines: unknown {', '.join(sorted(unknown))}")

    setup_logging()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="moodlake-bench-csd-"))
    overrides = {"lakehouse.home": str(work / "lakehouse"), "spark.master": args.master,
                 "ingest.progress_interval_s": 10}
    if args.driver_memory:
        overrides["spark.driver_memory"] = args.driver_memory
    cfg = load_config(overrides=overrides)
    spark = build_spark(cfg, app_name="moodlake-bench-csd-ingest")
    try:
        report = measure(spark, cfg, work, args.videos, args.segments, args.rounds, args.seed, baselines)
    finally:
        from moodlake import metastore

        try:
            spark.stop()  # (raises when the JVM is gone, e.g. out of memory: the rest still runs)
        finally:
            if metastore.enabled(cfg):
                metastore.stop(cfg)  # the lakehouse's metastore server, started by build_spark
            shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "csd_ingest", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_facts(load_before), "args": {k: str(v) for k, v in vars(args).items()}, **report}
    print("\n" + markdown(report))
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
