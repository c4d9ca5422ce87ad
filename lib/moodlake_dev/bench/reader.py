"""Reader throughput next to the multitask model's CPU training-step throughput, in one run.

    .venv/bin/python -m moodlake_dev.bench.reader [--posts 2000] [--batch 32] [--threads 2] [--steps 8]

1. Builds a train split of ``--posts`` seeded synthetic posts (``moodlake.sources.synthetic``:
   320x240 JPEGs, descriptions, tags, mikels8 labels) through the feature job's own code
   (``featurize``: the image resized to 256 on its shorter side, centre-cropped to 224 and
   re-encoded at JPEG quality 90; text cleaned and tokenised; tags normalised) and the dataset
   builder's ``to_record`` (word, tag and character ids of a vocabulary of these posts), written
   with ``write_split`` on Spark ``local[2]``. Spark is stopped before anything is timed.
2. Reader: ``--epochs`` epochs of ``PostLoader`` (batch ``--batch``, shuffle, augmentation,
   ``drop_last``) consumed by an empty loop, for each configuration: petastorm's thread pool, its
   process pool, and the thread pool with text-length buckets (2 workers each). Samples per
   second = rows yielded / wall time, reader start and stop included.
3. Training: the multitask model (EfficientNet-Lite0 image extractor, random init, ``--threads``
   torch threads), Adam; one step = forward + loss + backward + optimizer step on a batch from the
   thread-pool loader. ``--warmup`` untimed steps, then ``--steps`` timed steps, first on batches
   read beforehand (what training consumes), then with the loader feeding the steps live.

The ratio reader / training is the issue's target (the reader must sustain at least 2x). Prints a
markdown table and writes JSON (machine, load average before and after) to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from moodlake_dev.bench.models import machine_facts, write_report

READER_CONFIGS = {
    "thread pool": {"reader_pool_type": "thread"},
    "process pool": {"reader_pool_type": "process"},
    "thread pool + text buckets": {"reader_pool_type": "thread", "bucket_by_text_length": True},
}


def build_split(n: int, url: str, seed: int = 11) -> tuple[tuple[str, ...], int, int, dict]:
    """Write ``n`` synthetic posts as a Petastorm train split at ``url``.

    Returns (labels, word vocabulary size, tag vocabulary size, facts about the split)."""
    from moodlake.config import load_config
    from moodlake.data.build import to_record
    from moodlake.data.petastorm_io import row_groups, write_split
    from moodlake.data.schema import post_schema
    from moodlake.data.vocab import SPECIALS, Vocab
    from moodlake.features import featurize
    from moodlake.sources.synthetic import SyntheticSpec, synthetic_post
    from moodlake.spark import build_spark

    work = Path(tempfile.mkdtemp(prefix="moodlake-bench-reader-"))
    cfg = load_config(overrides={"lakehouse.home": str(work / "lakehouse"), "spark.master": "local[2]"})
    labels = cfg.label_set("mikels8")
    spec = SyntheticSpec(labels=labels, seed=seed)
    features = []
    for i in range(n):
        p = synthetic_post(i, spec)
        f = featurize({"post_id": f"s{seed}-{i:07d}", "source": "synthetic", "content_hash": "", "title": p.title,
                       "description": p.description, "tags": list(p.tags), "image": p.image,
                       "label_set": "mikels8", "label": p.label}, cfg.features)
        if f["failure_code"] is None:
            k = labels.index(p.label)
            features.append({**f, "label_index": k, "multi_hot": np.eye(len(labels))[k], "dist": np.zeros(len(labels))})
    vocab = Vocab(SPECIALS + tuple(sorted({w for f in features for w in f["text_words"]})),
                  SPECIALS + tuple(sorted({t for f in features for t in f["tags"]})),
                  SPECIALS + tuple(sorted({c for f in features for c in f["text"] or ""})))
    records = [to_record(f, vocab) for f in features]
    spark = build_spark(cfg, app_name="moodlake-bench-reader")
    try:
        write_split(spark, records, url, post_schema(len(labels)))
    finally:
        spark.stop()
    groups = row_groups(url)
    facts = {"rows": len(records), "posts_generated": n, "row_groups": len(groups),
             "rows_per_row_group_median": statistics.median(g.num_rows for g in groups),
             "jpeg_kb_mean": round(statistics.mean(len(r["image"]) for r in records if r["image"]) / 1024, 1),
             "share_with_image": round(np.mean([r["mask"][0] for r in records]), 3),
             "share_with_text": round(np.mean([r["mask"][1] for r in records]), 3),
             "share_with_tags": round(np.mean([r["mask"][2] for r in records]), 3)}
    return labels, len(vocab.words), len(vocab.tags), facts


def measure_reader(url: str, name: str, num_labels: int, batch: int, epochs: int, workers: int, **options) -> dict:
    """Rows per second of ``epochs`` epochs of a training loader, consumed by an empty loop."""
    from moodlake.data.loader import PostLoader

    loader = PostLoader(url, batch_size=batch, num_labels=num_labels, augment=True, drop_last=True,
                        workers_count=workers, **options)
    rates, rows = [], 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for b in loader:
            n += len(b["post_id"])
        rates.append(n / (time.perf_counter() - start))
        rows += n
        if n != len(loader) * batch:
            raise RuntimeError(f"{name}: epoch {epoch} yielded {n} rows, not {len(loader) * batch}")
    return {"what": f"reader: {name}", "workers": workers, "epochs": epochs, "rows": rows,
            "samples_per_s": statistics.mean(rates), "min": min(rates), "max": max(rates)}


def measure_training(url: str, labels, vocab_size: int, tag_vocab_size: int, batch: int, warmup: int,
                     steps: int, workers: int) -> list[dict]:
    """Training-step throughput on batches read beforehand, then with the loader feeding live."""
    from moodlake.data.loader import PostLoader
    from moodlake.models import get_model

    torch.manual_seed(0)
    model = get_model("multitask", labels=labels, pretrained=False, vocab_size=vocab_size,
                      tag_vocab_size=tag_vocab_size).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(b: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(model(b), b).backward()
        optimizer.step()

    def timed(batches) -> list[float]:
        times = []
        for b in batches:
            start = time.perf_counter()
            step(b)
            times.append(time.perf_counter() - start)
        return times

    loader = PostLoader(url, batch_size=batch, num_labels=len(labels), augment=True, drop_last=True,
                        workers_count=workers)
    if len(loader) < warmup + steps:
        raise ValueError(f"the split makes {len(loader)} batches, fewer than --warmup + --steps")
    batches = list(islice(iter(loader), warmup + steps))
    for b in batches[:warmup]:
        step(b)
    rows = [{"what": "training step, batches read beforehand", "times": timed(batches[warmup:])}]
    loader.set_epoch(1)
    start = time.perf_counter()
    live = iter(loader)
    for b in islice(live, warmup):
        step(b)
    times = timed(islice(live, steps))
    live.close()  # stops the reader
    rows.append({"what": "training step, loader feeding live", "times": times,
                 "wall_s_with_reading": time.perf_counter() - start})
    for r in rows:
        r.update(samples_per_s=batch * len(r["times"]) / sum(r["times"]), steps=len(r["times"]),
                 min=batch / max(r["times"]), max=batch / min(r["times"]))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| what | samples/s (mean) | min-max |", "|---|---:|---:|"]
    lines += [f"| {r['what']} | {r['samples_per_s']:.1f} | {r['min']:.1f}-{r['max']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=2000, help="synthetic posts generated for the split")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="reader epochs per configuration")
    parser.add_argument("--workers", type=int, default=2, help="petastorm decoding workers")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--out", type=Path, default=Path("bench-results/reader.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # pyarrow 14's legacy API, also in workers
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    url = Path(tempfile.mkdtemp(prefix="moodlake-bench-reader-split-")).as_uri() + "/train"
    start = time.perf_counter()
    labels, vocab_size, tag_vocab_size, split = build_split(args.posts, url)
    split["build_s"] = round(time.perf_counter() - start, 1)
    print(f"split: {split}", flush=True)

    rows = []
    for name, options in READER_CONFIGS.items():
        rows.append(measure_reader(url, name, len(labels), args.batch, args.epochs, args.workers, **options))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    training = measure_training(url, labels, vocab_size, tag_vocab_size, args.batch, args.warmup, args.steps,
                                args.workers)
    for r in training:
        print(markdown([r]).splitlines()[-1], flush=True)
    rows += training
    consumed = training[0]["samples_per_s"]
    ratio = {r["what"]: r["samples_per_s"] / consumed for r in rows if r["what"].startswith("reader")}

    machine = machine_facts(load_before)
    print()
    print(f"{machine['cpu']}, {machine['nproc']} CPUs, torch {machine['torch']} with {machine['torch_threads']} "
          f"threads; load average before/after {load_before[0]:.2f}/{machine['loadavg_after'][0]:.2f}")
    print(f"split: {split['rows']} posts in {split['row_groups']} row groups, batch {args.batch}")
    print(markdown(rows))
    for what, r in ratio.items():
        print(f"- {what}: {r:.1f}x what training consumes")
    report = {"date": dt.date.today().isoformat(), "machine": machine,
              "args": {k: str(v) for k, v in vars(args).items()}, "split": split, "results": rows, "reader_over_training": ratio}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
