"""DDP scaling on the CPU: the multitask model trained by 1 and by 2 gloo processes, one core each.

    .venv/bin/python -m moodlake_dev.bench.ddp [--posts 800] [--epochs 2] [--launcher torchrun]

In a temporary lakehouse: ``--posts`` synthetic posts are ingested, featurised and built into the
``synthetic`` dataset (Spark ``local[2]``), as ``make demo`` does. Then the production multitask
recipe (EfficientNet-Lite0 with its last stage trainable, augmentation, Adam, batch 32) trains for
``--epochs`` epochs with ``training.torch_threads = 1``: once with 1 process, once with 2 DDP
processes (each reading its own Petastorm shard), through ``--launcher``. The throughput of an
epoch is the training samples of all ranks divided by the epoch's wall time (the loop's own
``samples_per_s``); the first epoch is reported apart (start-up), the table uses the later ones.
Efficiency = samples/s with 2 processes / (2 x samples/s with 1). Writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import tempfile
from pathlib import Path

from moodlake_dev.bench.models import machine_facts, write_report


def main(argv: list[str] | None = None) -> dict:
    from moodlake.config import load_config
    from moodlake.data.build import build_dataset
    from moodlake.features import run_features
    from moodlake.ingest import Ingestor
    from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
    from moodlake.spark import build_spark
    from moodlake.train.launch import read_history, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--launcher", default="torchrun", choices=["torchrun", "distributor"])
    parser.add_argument("--out", type=Path, default=Path("bench-results/ddp.json"))
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is start-up)")

    work = Path(tempfile.mkdtemp(prefix="moodlake-bench-ddp-"))
    cfg = load_config(overrides={"lakehouse.home": str(work / "lakehouse"), "spark.master": "local[2]"})
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, launcher=args.launcher, torch_threads=1))
    spark = build_spark(cfg, app_name="moodlake-bench-ddp")
    spec = SyntheticSpec(labels=cfg.label_set("mikels8"), seed=21)
    Ingestor(spark, cfg).run(SyntheticSource(n=args.posts, spec=spec))
    run_features(spark, cfg)
    build = build_dataset(spark, cfg, "synthetic")
    load_before = os.getloadavg()
    rows = []
    for processes in (1, 2):
        outcome = train(spark, cfg, "synthetic", "multitask", epochs=args.epochs, processes=processes, new_run=True)
        history = read_history(Path(cfg.training_root) / outcome.run_id)
        later = [r["samples_per_s"] for r in history[1:]]
        rows.append({"processes": processes, "torch_threads_per_process": 1, "epochs": len(history),
                     "first_epoch_samples_per_s": history[0]["samples_per_s"],
                     "samples_per_s": statistics.mean(later), "min": min(later), "max": max(later),
                     "val_accuracy_last": history[-1]["val_accuracy"]})
        print(rows[-1], flush=True)
    spark.stop()
    efficiency = rows[1]["samples_per_s"] / (2 * rows[0]["samples_per_s"])
    machine = machine_facts(load_before)
    table = ["| processes (1 core each) | samples/s (epochs 2+) | min-max | first epoch |", "|---:|---:|---:|---:|"]
    table += [f"| {r['processes']} | {r['samples_per_s']:.1f} | {r['min']:.1f}-{r['max']:.1f} | "
              f"{r['first_epoch_samples_per_s']:.1f} |" for r in rows]
    print(f"\n{machine['cpu']}, {machine['nproc']} CPUs; train split {build.counts['train']} posts; "
          f"launcher {args.launcher}; load average before/after {load_before[0]:.2f}/{machine['loadavg_after'][0]:.2f}")
    print("\n".join(table))
    print(f"efficiency 2 processes vs 1: {efficiency:.0%}")
    report = {"date": dt.date.today().isoformat(), "machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
              "train_rows": build.counts["train"], "results": rows, "efficiency": efficiency}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
