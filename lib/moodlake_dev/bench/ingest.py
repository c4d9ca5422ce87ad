"""Flickr ingest benchmark against the local Flickr-compatible server (a separate process).

    .venv/bin/python -m moodlake_dev.bench.ingest [--posts 3000] [--budget-posts 400] [--budget-rate 20]

1. **Rate with the budget lifted** (``calls_per_hour: 0``): MoodLake's ingest of ``--posts``
   photos (getInfo + getSizes + the Medium 640 image each; Spark local[2], committed to Delta),
   side by side with the baseline: the same per-photo work done by plain flickrapi in a thread pool
   of the same concurrency as MoodLake's fetches (Spark's task slots x ``--threads`` per task: 2 x 8
   = 16; ``--baseline-threads`` to change it), one flickrapi client and HTTP session per thread, no
   Spark and no Delta (``--baseline-posts`` photos). Twice: with the server answering
   at once (a CPU-bound measure of MoodLake's own cost) and with ``--latency`` seconds added to
   every request, as over the Internet to the real API. Reported: posts/s end to end (JVM start
   excluded, commits included), posts/s while fetching, and the ratio to the baseline.
2. **Budget use**: an ingest under a configured budget of ``--budget-rate`` calls/s (with
   ``--burst``). From the server's own call log: calls made / calls the budget allowed over the
   fetching window (target >= 95 %), the most calls seen in any 1-second window, and the number
   of duplicate calls (a (method, photo) answered successfully more than once: target 0).

Prints a markdown summary and writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

KEY, SECRET = "bench-key-0123456789", "bench-secret-abcdef"


def _serve(conn, n: int, seed: int, labels: tuple, image_pool: int) -> None:
    """The server process: answers 'stats', 'reset' and 'stop' over a pipe."""
    from moodlake.sources.synthetic import SyntheticSpec
    from moodlake_dev.doubles.fake_flickr import FakeFlickrServer
    from moodlake_dev.doubles.synthetic_flickr import synthetic_corpus

    corpus = synthetic_corpus(n, SyntheticSpec(labels=labels, seed=seed), image_pool=image_pool)
    with FakeFlickrServer(corpus, valid_keys={KEY: SECRET}) as server:
        conn.send(server.rest_url)
        while True:
            cmd = conn.recv()
            if cmd == "stats":
                api = [c for c in server.calls() if c.method.startswith("flickr.")]
                conn.send({"api_call_times": [c.t for c in api], "api_calls": len(api),
                           "images": server.count("image"),
                           "duplicates": sum(v - 1 for v in server.duplicate_successful_calls().values()),
                           "max_concurrency": server.max_concurrency_seen})
            elif cmd == "reset":
                server.reset_log()
                conn.send(True)
            elif isinstance(cmd, tuple) and cmd[0] == "latency":
                server.global_slow_s = float(cmd[1])
                conn.send(True)
            else:
                break


class ServerProcess:
    def __init__(self, n: int, labels: tuple, seed: int = 5, image_pool: int = 64):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, n, seed, labels, image_pool), daemon=True)

    def __enter__(self) -> "ServerProcess":
        self.proc.start()
        self.rest_url = self.conn.recv()
        return self

    def ask(self, cmd: str):
        self.conn.send(cmd)
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=10)


def baseline(rest_url: str, ids: list[str], threads: int) -> dict:
    """The same per-photo work with plain flickrapi in a pool of ``threads`` threads (each with its own
    client and HTTP session, as MoodLake's fetch threads have), no Spark, no Delta, nothing kept."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import flickrapi
    import requests

    local = threading.local()

    def fetch(pid: str) -> int:
        if not hasattr(local, "api"):
            local.api = flickrapi.FlickrAPI(KEY, SECRET, format="parsed-json", store_token=False, timeout=20)
            local.api.REST_URL = rest_url
            local.http = requests.Session()
        local.api.photos.getInfo(photo_id=pid)
        sizes = local.api.photos.getSizes(photo_id=pid)["sizes"]["size"]
        url = next(s["source"] for s in sizes if s["label"] == "Medium 640")
        return len(local.http.get(url, timeout=20).content)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fetch, ids[:threads]))  # each thread's client and connection made before the clock
        t0 = time.perf_counter()
        nbytes = sum(pool.map(fetch, ids[threads:]))
        wall = time.perf_counter() - t0
    n = len(ids) - threads
    return {"posts": n, "wall_s": wall, "posts_per_s": n / wall, "image_bytes": nbytes, "threads": threads}


def task_slots(master: str) -> int:
    """Spark's concurrent tasks on ``local[N]`` (``local[*]``: the cores; ``local``: 1)."""
    if master == "local":
        return 1
    inner = master[len("local["):-1] if master.startswith("local[") else ""
    if inner == "*":
        return os.cpu_count() or 1
    if inner.isdigit():
        return int(inner)
    raise SystemExit(f"--master {master}: give --baseline-threads (the concurrency to compare with)")


def moodlake_ingest(spark, cfg, rest_url: str, ids: list[str], workdir: Path, name: str, **flickr) -> dict:
    from moodlake.config import Secret
    from moodlake.ingest import Ingestor
    from moodlake.sources.flickr import FlickrSource

    f = workdir / f"{name}.txt"
    f.write_text("\n".join(ids) + "\n")
    settings = dataclasses.replace(cfg.flickr, rest_url=rest_url, api_key=Secret(KEY), api_secret=Secret(SECRET),
                                   **flickr)
    c = dataclasses.replace(cfg, flickr=settings)
    t0 = time.perf_counter()
    result = Ingestor(spark, c).run(FlickrSource(settings=settings, ids_path=str(f), name=name))
    wall = time.perf_counter() - t0
    assert result.reconciles() and result.posts_new == len(ids), result.summary()
    return {"posts": result.posts_new, "wall_s": wall, "posts_per_s": result.posts_new / wall,
            "api_calls": result.api_calls}


def _window_max(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    j, best = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def _machine() -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        model = platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--baseline-posts", type=int, default=800)
    ap.add_argument("--baseline-threads", type=int, default=None,
                    help="the baseline's thread pool (default: MoodLake's concurrency, task slots x --threads)")
    ap.add_argument("--budget-posts", type=int, default=400)
    ap.add_argument("--budget-rate", type=float, default=20.0, help="calls per second allowed")
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--threads", type=int, default=8, help="concurrent fetches per Spark task")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds added to every request in the latency runs")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", default="bench-results/ingest.json")
    args = ap.parse_args(argv)
    if args.baseline_threads is None:
        args.baseline_threads = task_slots(args.master) * args.threads

    from moodlake.config import load_config
    from moodlake.logs import setup_logging
    from moodlake.spark import build_spark
    from moodlake_dev.doubles.synthetic_flickr import photo_id

    setup_logging()
    machine = _machine()
    work = Path(tempfile.mkdtemp(prefix="moodlake-bench-"))
    cfg = load_config(overrides={"lakehouse.home": str(work / "lakehouse"), "spark.master": args.master,
                                 "ingest.chunk_size": 2000, "ingest.progress_interval_s": 10})
    labels = cfg.label_set("mikels8")
    total = args.posts + args.budget_posts + args.baseline_posts
    report: dict = {"date": dt.date.today().isoformat(), "machine": machine, "args": vars(args)}
    spark = build_spark(cfg, app_name="moodlake-bench-ingest")
    try:
        with ServerProcess(total, labels) as server:
            ids = [photo_id(i) for i in range(total)]
            warm = ids[-20:]  # JIT, Delta and worker start-up, so the timed runs compare fairly
            moodlake_ingest(spark, cfg, server.rest_url, warm, work, "flickr-warmup", calls_per_hour=0,
                            threads_per_task=args.threads)
            base_ids = ids[args.posts + args.budget_posts:][: args.baseline_posts - 20]
            lifted_ids = ids[: args.posts]
            half = len(lifted_ids) // 2
            for label, latency, chunk_ids in (("no_latency", 0.0, lifted_ids[:half]),
                                               ("latency", args.latency, lifted_ids[half:])):
                server.ask(("latency", latency))
                server.ask("reset")
                b = baseline(server.rest_url, base_ids[: len(base_ids) // 2] if latency == 0 else base_ids[len(base_ids) // 2:],
                             args.baseline_threads)
                server.ask("reset")
                m = moodlake_ingest(spark, cfg, server.rest_url, chunk_ids, work, f"flickr-{label}",
                                    calls_per_hour=0, threads_per_task=args.threads)
                s = server.ask("stats")
                t = sorted(s["api_call_times"])
                m.update({"latency_s": latency, "fetch_window_s": t[-1] - t[0],
                          "fetch_posts_per_s": len(chunk_ids) / (t[-1] - t[0]), "duplicates": s["duplicates"],
                          "ratio_to_baseline": m["posts_per_s"] / b["posts_per_s"],
                          "fetch_ratio_to_baseline": len(chunk_ids) / (t[-1] - t[0]) / b["posts_per_s"]})
                report[label] = {"baseline": b, "moodlake": m}

            server.ask(("latency", args.latency))
            server.ask("reset")
            rate = args.budget_rate
            m2 = moodlake_ingest(spark, cfg, server.rest_url, ids[args.posts: args.posts + args.budget_posts], work,
                                 "flickr-budget", calls_per_hour=int(rate * 3600), burst=args.burst,
                                 threads_per_task=args.threads)
            s = server.ask("stats")
            t = sorted(s["api_call_times"])
            window = t[-1] - t[0]
            allowed = args.burst + rate * window
            m2.update({
                "latency_s": args.latency, "budget_calls_per_s": rate, "burst": args.burst,
                "api_calls": s["api_calls"], "fetch_window_s": window, "allowed_in_window": allowed,
                "budget_share_used": s["api_calls"] / allowed,
                "budget_share_used_whole_run": s["api_calls"] / (args.burst + rate * m2["wall_s"]),
                "max_calls_in_any_1s": _window_max(t), "duplicates": s["duplicates"],
            })
            report["budget"] = m2
    finally:
        spark.stop()
    report["machine"]["load_avg_at_end"] = os.getloadavg()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    m2 = report["budget"]
    print(f"\n### Flickr ingest against the local server ({report['date']}, {machine['cpu']}, {machine['cores']} cores)\n")
    print("| run | request latency | posts | wall s | posts/s | notes |\n|---|---|---|---|---|---|")
    for label in ("no_latency", "latency"):
        b, m = report[label]["baseline"], report[label]["moodlake"]
        lat = f"{1000 * m['latency_s']:.0f} ms"
        print(f"| baseline: flickrapi in {b['threads']} threads, no Spark/Delta | {lat} | {b['posts']} | {b['wall_s']:.1f} | "
              f"{b['posts_per_s']:.1f} | |")
        print(f"| MoodLake, budget lifted ({args.master}, {args.threads} threads/task) | {lat} | {m['posts']} | "
              f"{m['wall_s']:.1f} | {m['posts_per_s']:.1f} | {m['ratio_to_baseline']:.2f}x baseline end to end; "
              f"fetch phase {m['fetch_posts_per_s']:.1f} posts/s = {m['fetch_ratio_to_baseline']:.2f}x; "
              f"{m['duplicates']} duplicate calls |")
    print(f"| MoodLake, budget {m2['budget_calls_per_s']:.0f} calls/s, burst {m2['burst']} | "
          f"{1000 * m2['latency_s']:.0f} ms | {m2['posts']} | {m2['wall_s']:.1f} | {m2['posts_per_s']:.1f} | "
          f"{m2['api_calls']} calls in {m2['fetch_window_s']:.1f} s = {100 * m2['budget_share_used']:.1f}% of the "
          f"budget ({100 * m2['budget_share_used_whole_run']:.1f}% over the whole run); max "
          f"{m2['max_calls_in_any_1s']} calls in any 1 s; {m2['duplicates']} duplicate calls |")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
