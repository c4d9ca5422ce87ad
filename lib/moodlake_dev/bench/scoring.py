"""The scoring job's throughput against its two fair alternatives, and its memory as the table grows.

    .venv/bin/python -m moodlake_dev.bench.scoring [--posts 2000] [--repeats 2] [--scale 10000,100000]

One lakehouse (``--home``, kept between runs: the posts, features and model are made once), Spark
``local[2]``: two tasks at once, each with ``--threads`` torch threads.

1. Setup: ``--posts`` seeded synthetic posts (320x240 JPEGs, text, tags; mikels8), the feature job, a
   dataset, and a multitask model (EfficientNet-Lite0 frozen, one epoch) registered and promoted.
2. Speed, on the same feature rows, the same registered model, batch size and threads in total:

   - **job**: ``Scorer.run`` end to end (selection, ``mapInPandas`` over Arrow batches, staging,
     MERGE into ``emotion_scores`` and ``scoring_failures``, the run row, the views); the model's
     rows are deleted before each repeat;
   - **(a) row UDF**: a plain Python UDF, one post per call, the model loaded once per Python worker
     (the job's own cache), over the same rows in the same partitions, written to Spark's ``noop``
     sink (no MERGE: the baseline does less I/O than the job);
   - **(b) torch loop**: the same rows collected to the driver before the clock starts, then
     ``Predictor.predict_rows`` in batches of ``--batch`` with ``2 x --threads`` torch threads (the
     job's two tasks' threads together), outside Spark.

   Posts per second = posts / wall time; the job's ratios to (a) and (b) are the targets (>= 5x and
   >= 0.8x).
3. Memory (``--scale``): text-and-tags posts (no image: the scoring of 100k posts fits in minutes on
   2 cores) ingested up to each size in turn and scored; during each scoring run a sampler reads the
   resident memory of the JVM (driver and executor in local mode) and of every PySpark Python worker
   every 0.25 s. The peaks of the run at the smallest and at the largest size are compared.

Prints a markdown table and writes JSON (machine, load average before and after) to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import threading
import time
from pathlib import Path

from moodlake_dev.bench.models import machine_facts, write_report

SOURCE, TEXT_SOURCE, SCALE_SOURCE = "bench-scoring", "bench-scoring-text", "bench-scale"
SHAPES = {"image": SOURCE, "text": TEXT_SOURCE}


class MemorySampler:
    """Peak RSS of a JVM and of the PySpark Python workers under it, sampled every ``interval`` s."""

    def __init__(self, jvm_pid: int, interval: float = 0.25):
        import psutil

        self.jvm = psutil.Process(jvm_pid)
        self.interval, self.peak_jvm, self.peak_worker, self.peak_workers_total = interval, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.peak_jvm = max(self.peak_jvm, self.jvm.memory_info().rss)
                workers = []
                for p in self.jvm.children(recursive=True):
                    try:
                        if "pyspark" in " ".join(p.cmdline()):
                            workers.append(p.memory_info().rss)
                    except psutil.Error:
                        continue
                if workers:
                    self.peak_worker = max(self.peak_worker, max(workers))
                    self.peak_workers_total = max(self.peak_workers_total, sum(workers))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        mib = 1 << 20
        return {"jvm_peak_mib": round(self.peak_jvm / mib, 1), "worker_peak_mib": round(self.peak_worker / mib, 1),
                "workers_total_peak_mib": round(self.peak_workers_total / mib, 1)}


def _config(home: Path, threads: int, batch: int):
    from moodlake.config import DatasetDefinition, Recipe, SplitSpec, load_config

    cfg = load_config("demo", overrides={"lakehouse.home": str(home), "spark.master": "local[2]",
                                         "spark.shuffle_partitions": 2, "spark.driver_memory": "2g",
                                         "ingest.chunk_size": 20000, "scoring.torch_threads": threads,
                                         "scoring.batch_size": batch, "scoring.partitions": 2,
                                         "scoring.chunk_size": 50000, "training.launcher": "inline"},
                      environ={k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_"))})
    d = DatasetDefinition(sources=(SOURCE,), label_set="mikels8", split=SplitSpec(train=0.8, val=0.1, test=0.1, seed=0))
    fast = Recipe(optimizer="adam", lr=1e-3, batch_size=32, max_epochs=1, augment=False, frozen_cache_mb=1024,
                  model={"image_backbone": "efficientnet_lite0", "pretrained": True, "image_trainable_stages": 0})
    return dataclasses.replace(
        cfg, datasets=dataclasses.replace(cfg.datasets, definitions={**cfg.datasets.definitions, "bench-scoring": d}),
        training=dataclasses.replace(cfg.training, recipes={**cfg.training.recipes, "multitask": fast}))


def _setup(spark, cfg, posts: int) -> str:
    """The production model's version (trained once; later runs find it)."""
    from pyspark.sql import functions as F

    from moodlake.data.build import build_dataset
    from moodlake.features import run_features
    from moodlake.ingest import Ingestor
    from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
    from moodlake.train.launch import train

    labels = cfg.label_set("mikels8")
    Ingestor(spark, cfg).run(SyntheticSource(n=posts, spec=SyntheticSpec(labels=labels, seed=3), name=SOURCE))
    Ingestor(spark, cfg).run(SyntheticSource(n=posts, name=TEXT_SOURCE, spec=SyntheticSpec(
        labels=labels, seed=6, p_image_missing=1.0, p_text_missing=0.0, p_tags_missing=0.1)))
    run_features(spark, cfg)
    models = spark.table(cfg.table("models")).where(F.col("stage") == "production").collect()
    if models:
        return models[0].version
    build_dataset(spark, cfg, "bench-scoring")
    return train(spark, cfg, "bench-scoring", "multitask", promote=True).version


def _speed(spark, cfg, version: str, repeats: int, threads: int, batch: int, source: str) -> dict:
    import torch
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from moodlake.inference import Predictor
    from moodlake.scoring import FEATURE_COLUMNS, Scorer, worker_predictor

    scorer = Scorer(spark, cfg)
    folder, _, _ = scorer.model(version)
    feats = spark.table(cfg.table("post_features")).where(F.col("source") == source)
    n = feats.count()
    out = {"posts": n, "job": [], "row_udf": [], "torch_loop": []}
    for _ in range(repeats):
        for table in (cfg.table("emotion_scores"), cfg.table("scoring_failures")):
            DeltaTable.forName(spark, table).delete((F.col("model_version") == version) & (F.col("source") == source))
        result = scorer.run(version, sources=(source,))
        assert result.selected == n, (result.selected, n)
        out["job"].append({"posts": result.selected, "seconds": result.seconds,
                           "posts_per_s": result.selected / result.seconds})

    bf16 = cfg.scoring.gpu_bf16

    @F.udf(T.ArrayType(T.DoubleType()))
    def one_post(post_id, text, text_words, tags, image, has_image, has_text, has_tags):
        predictor = worker_predictor(folder, threads, bf16)
        row = {"post_id": post_id, "text": text, "text_words": text_words, "tags": tags, "image": image,
               "has_image": has_image, "has_text": has_text, "has_tags": has_tags}
        preds, _ = predictor.predict_rows([row], batch_size=1)
        return preds[0].probs[0].astype(float).tolist() if preds else None

    cols = ["post_id", "text", "text_words", "tags", "image", "has_image", "has_text", "has_tags"]
    for _ in range(repeats):
        start = time.perf_counter()
        (feats.repartition(2).select("post_id", one_post(*cols).alias("probs"))
         .write.format("noop").mode("overwrite").save())
        seconds = time.perf_counter() - start
        out["row_udf"].append({"posts": n, "seconds": seconds, "posts_per_s": n / seconds})

    rows = [r.asDict() for r in feats.select(*FEATURE_COLUMNS).collect()]
    torch.set_num_threads(2 * threads)
    predictor = Predictor.load(folder)
    for _ in range(repeats):
        start = time.perf_counter()
        preds, rejected = predictor.predict_rows(rows, batch_size=batch)
        seconds = time.perf_counter() - start
        assert sum(len(p.post_ids) for p in preds) + len(rejected) == n
        out["torch_loop"].append({"posts": n, "seconds": seconds, "posts_per_s": n / seconds})
    return out


def _batch_sweep(spark, cfg, version: str, sizes: list[int], threads: int) -> dict:
    """Posts per second of the model alone (rows in memory, ``threads`` torch threads) per batch size."""
    import torch
    from pyspark.sql import functions as F

    from moodlake.inference import Predictor
    from moodlake.scoring import FEATURE_COLUMNS, Scorer

    folder, _, _ = Scorer(spark, cfg).model(version)
    rows = [r.asDict() for r in spark.table(cfg.table("post_features")).where(F.col("source") == SOURCE)
            .select(*FEATURE_COLUMNS).limit(256).collect()]
    torch.set_num_threads(threads)
    predictor = Predictor.load(folder)
    predictor.predict_rows(rows[:8], batch_size=8)  # warm-up
    out = {}
    for b in sizes:
        start = time.perf_counter()
        predictor.predict_rows(rows, batch_size=b)
        out[b] = len(rows) / (time.perf_counter() - start)
    return out


def _scale(spark, cfg, version: str, sizes: list[int]) -> list[dict]:
    from moodlake.features import run_features
    from moodlake.ingest import Ingestor
    from moodlake.scoring import Scorer
    from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec

    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    spec = SyntheticSpec(labels=cfg.label_set("mikels8"), seed=4, p_image_missing=1.0, p_text_missing=0.0,
                         p_tags_missing=0.1)
    runs = []
    for size in sizes:
        t0 = time.perf_counter()
        Ingestor(spark, cfg).run(SyntheticSource(n=size, spec=spec, name=SCALE_SOURCE))
        run_features(spark, cfg)
        prepared = time.perf_counter() - t0
        with MemorySampler(jvm_pid) as sampler:
            result = Scorer(spark, cfg).run(version)
        table_rows = spark.table(cfg.table("emotion_scores")).count()
        runs.append({"scale_posts": size, "scored_now": result.scored, "table_rows": table_rows,
                     "seconds": round(result.seconds, 1), "prepare_seconds": round(prepared, 1), **sampler.result()})
        print(runs[-1], flush=True)
    return runs


def main(argv: list[str] | None = None) -> dict:
    from moodlake.spark import build_spark

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path("bench-results/scoring-lakehouse"))
    p.add_argument("--posts", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per Spark task")
    p.add_argument("--batch", type=int, default=4, help="posts per forward pass (scoring.batch_size)")
    p.add_argument("--shapes", default="image,text", help="post shapes of the speed runs: image (and text, tags), "
                                                           "text (text and tags, no image)")
    p.add_argument("--sweep", default="1,2,4,8,16,32,64", help="batch sizes of the model-alone sweep ('' to skip)")
    p.add_argument("--scale", default="10000,100000", help="sizes of the memory runs ('' to skip)")
    p.add_argument("--out", type=Path, default=Path("bench-results/scoring.json"))
    args = p.parse_args(argv)

    load = os.getloadavg()
    cfg = _config(args.home.resolve(), args.threads, args.batch)
    spark = build_spark(cfg, app_name="moodlake-bench-scoring")
    try:
        version = _setup(spark, cfg, args.posts)
        speed = {shape: _speed(spark, cfg, version, args.repeats, args.threads, args.batch, SHAPES[shape])
                 for shape in args.shapes.split(",") if shape.strip()}
        sweep = _batch_sweep(spark, cfg, version, [int(b) for b in args.sweep.split(",") if b.strip()],
                             args.threads) if args.sweep.strip() else {}
        sizes = [int(s) for s in args.scale.split(",") if s.strip()]
        scale = _scale(spark, cfg, version, sizes) if sizes else []
    finally:
        spark.stop()
        from moodlake import metastore

        if metastore.enabled(cfg):
            metastore.stop(cfg)  # the lakehouse's metastore server, started by build_spark

    report = {"benchmark": "scoring", "date": dt.date.today().isoformat(), "machine": machine_facts(load),
              "args": {k: str(v) for k, v in vars(args).items()}, "model_version": version, "speed": {},
              "batch_sweep_posts_per_s": sweep, "scale": scale}
    for shape, runs in speed.items():
        best = {k: max(r["posts_per_s"] for r in runs[k]) for k in ("job", "row_udf", "torch_loop")}
        report["speed"][shape] = {**runs, "best_posts_per_s": best, "job_vs_row_udf": best["job"] / best["row_udf"],
                                  "job_vs_torch_loop": best["job"] / best["torch_loop"]}
        print(f"\n| {shape} posts ({runs['posts']:,}) | posts/s (best of {args.repeats}) | runs |")
        print("|---|---|---|")
        for k, name in (("job", "scoring job (mapInPandas, MERGE)"), ("row_udf", "(a) row-at-a-time Python UDF"),
                        ("torch_loop", "(b) plain PyTorch loop, rows in memory")):
            runs_s = ", ".join(f"{r['posts_per_s']:.1f}" for r in runs[k])
            print(f"| {name} | {best[k]:.1f} | {runs_s} |")
        print(f"job / (a) = {best['job'] / best['row_udf']:.2f}x, job / (b) = {best['job'] / best['torch_loop']:.2f}x")
    if sweep:
        print("\nmodel alone, " + str(args.threads) + " thread(s), posts/s by batch size: "
              + ", ".join(f"{b}: {v:.1f}" for b, v in sweep.items()))
    if len(scale) >= 2:
        first, last = scale[0], scale[-1]
        report["memory_growth"] = {k: last[k] / first[k] for k in ("jvm_peak_mib", "worker_peak_mib")}
    for r in scale:
        print(f"scale {r['scale_posts']:,}: table {r['table_rows']:,} rows, JVM peak {r['jvm_peak_mib']} MiB, "
              f"Python worker peak {r['worker_peak_mib']} MiB (all workers {r['workers_total_peak_mib']} MiB)")
    if "memory_growth" in report:
        print(f"memory at the largest / smallest size: {report['memory_growth']}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
