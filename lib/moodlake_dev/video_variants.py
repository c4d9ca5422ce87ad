"""Williams et al.'s BLSTM variants on synthetic video segments (issue #20): the metrics table of BENCHMARKS.md.

    .venv/bin/python -m moodlake_dev.video_variants [--videos 200] [--segments 8] [--epochs 30] [--seed 20]
        [--home ./lakehouse-video] [--out video_variants.json] [--variants all|unimodal]

Writes seeded synthetic ``.csd`` files (:mod:`moodlake.sources.synthetic_video`: the emotion signal
split across audio, visual and text, so that each modality alone sees part of it), ingests them
(``moodlake ingest csd``), builds the ``synthetic-video`` segment dataset (aligned to the words,
split by video), trains every variant of the model (the three unimodal, the three bimodal and the
trimodal one, or with ``--variants unimodal`` the trimodal and the unimodal ones:
``training.recipes.williams_blstm.model.modalities``) with the recipe of
conf/base/training.yaml for ``--epochs`` epochs (inline: one process), and evaluates each on the test
split with ``moodlake evaluate`` (the random baselines drawn from the training split's intensities,
and uniform). Prints a markdown table (mean over the emotions) and writes the figures as JSON.
Everything runs through the product's jobs in a lakehouse of its own (``--home``); run again, every
step finds its result and nothing is redone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

VARIANTS = (("audio", "visual", "text"), ("audio", "visual"), ("audio", "text"), ("visual", "text"),
            ("audio",), ("visual",), ("text",))
KEYS = ("mae", "binary_accuracy", "four_class_accuracy", "pearson_r")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--segments", type=int, default=8, help="segments per video")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--home", default="lakehouse-video")
    p.add_argument("--out", default="video_variants.json")
    p.add_argument("--variants", default="all", choices=["all", "unimodal"],
                   help="all seven, or the trimodal and the three unimodal ones")
    args = p.parse_args(argv)

    from moodlake.config import load_config
    from moodlake.data.segments import build_segment_dataset
    from moodlake.evaluation.job import evaluate
    from moodlake.sources.synthetic_video import SyntheticVideoSpec, write_synthetic_videos
    from moodlake.spark import build_spark
    from moodlake.train.launch import train
    from moodlake.video_ingest import CsdIngestor
    from moodlake_dev.bench.models import machine_facts

    load_before = os.getloadavg()
    home = Path(args.home).resolve()
    cfg = load_config("demo", environ={"MOODLAKE_HOME": str(home)})
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, launcher="inline"))
    spark = build_spark(cfg, app_name="moodlake-video-variants")
    t0 = time.perf_counter()
    files = write_synthetic_videos(home / "incoming" / "synthetic-video",
                                   SyntheticVideoSpec(videos=args.videos, segments=args.segments, seed=args.seed))
    print(CsdIngestor(spark, cfg).run_csd("synthetic-video", files.features, [files.labels]).summary(), flush=True)
    build = build_segment_dataset(spark, cfg, "synthetic-video")
    print(build.summary(), flush=True)

    rows, baselines = {}, None
    variants = VARIANTS if args.variants == "all" else [v for v in VARIANTS if len(v) in (1, 3)]
    for i, modalities in enumerate(variants, 1):
        name = "+".join(modalities)
        print(f"[{i}/{len(variants)}] {name}: training {args.epochs} epochs", flush=True)
        started = time.perf_counter()
        outcome = train(spark, cfg, "synthetic-video", "williams_blstm", epochs=args.epochs,
                        model_kwargs={"modalities": list(modalities)})
        result = evaluate(spark, cfg, outcome.version)
        rows[name] = {"version": outcome.version, "best_epoch": outcome.best.get("epoch"),
                      "seconds": round(time.perf_counter() - started, 1), **result.metrics["overall"]["mean"]}
        baselines = {who: m["mean"] for who, m in result.metrics["random_baselines"].items()}
        print(f"    {result.summary()}", flush=True)

    n = build.counts
    lines = [f"synthetic-video: {args.videos} videos x {args.segments} segments (seed {args.seed}); segments "
             f"train {n['train']:,} / val {n['val']:,} / test {n['test']:,}; {args.epochs} epochs; test split",
             "", "| predictor | MAE | binary accuracy | 4-class accuracy | Pearson r |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for who, m in {**{f"BLSTM {k}": v for k, v in rows.items()}, **baselines}.items():
        lines.append(f"| {who} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
    print("\n" + "\n".join(lines))
    Path(args.out).write_text(json.dumps({
        "args": vars(args), "counts": n, "variants": rows, "random_baselines": baselines,
        "seconds": round(time.perf_counter() - t0, 1), "machine": machine_facts(load_before)}, indent=2, default=str))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
