"""Every job of the pipeline, spark-submitted (``moodlake submit``), on a Spark standalone cluster and
on ``local[2]``: the README's cluster table.

    python -m moodlake_dev.bench.cluster [--posts 240] [--score-limit N] [--only standalone|local[2]] [--out bench-results/cluster.json]

Each run gets a lake of its own (:class:`moodlake_dev.cluster.lake.Lake`). The standalone cluster
(:mod:`moodlake_dev.cluster.standalone`) has two workers of one core each; training runs with
``TorchDistributor`` on the executors (``training.local_mode: false``), 2 processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from moodlake_dev.cluster.lake import PIPELINE, Lake, run_pipeline


def main(argv: list[str] | None = None) -> int:
    import argparse

    from moodlake_dev.cluster.standalone import StandaloneCluster

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posts", type=int, default=240)
    p.add_argument("--out", help="write the timings as JSON here too")
    p.add_argument("--only", choices=["standalone", "local[2]"], help="one of the two runs")
    p.add_argument("--score-limit", type=int, help="the score job takes this many posts (default all)")
    args = p.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its cluster
    root = Path(tempfile.mkdtemp(prefix="moodlake-bench-cluster-"))
    results = {"posts": args.posts, "load_before": os.getloadavg()}
    try:
        if args.only != "local[2]":
            with StandaloneCluster(root / "cluster", workers=2, cores=1, memory="2g") as cluster:
                lake = Lake(root / "standalone", cluster.url)
                lake.root.mkdir()
                try:
                    results["standalone"] = run_pipeline(lake, args.posts, args.score_limit)
                finally:
                    lake.stop()
        if args.only != "standalone":
            lake = Lake(root / "local", "local[2]")
            lake.root.mkdir()
            try:
                results["local[2]"] = run_pipeline(lake, args.posts, args.score_limit)
            finally:
                lake.stop()
    finally:
        results["load_after"] = os.getloadavg()
        shutil.rmtree(root, ignore_errors=True)
    runs = [r for r in ("standalone", "local[2]") if r in results]
    print("| job | " + " | ".join(runs) + " |\n|---|" + "---|" * len(runs))
    for label, _, _ in PIPELINE:
        print(f"| {label} | " + " | ".join(f"{results[r][label]:.1f} s" for r in runs) + " |")
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
