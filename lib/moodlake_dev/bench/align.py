"""Word alignment and segment sequences (issue #20): segments per second on a synthetic video set.

    .venv/bin/python -m moodlake_dev.bench.align [--videos 100] [--segments-per-video 20] [--maxlen 20] [--rounds 5]

The set (seeded, made before anything is timed) has CMU-MOSEI's rates: per video,
``--segments-per-video`` labelled segments of 3-7 s (about 5 s) with 0.2-2 s between them;
COVAREP-like audio, 10 ms frames of 74 features over the whole video; FACET-like visual, 30 Hz
frames of 35 features with 5 % of the frames missing (no face found); words of 0.1-0.4 s with
0-0.16 s between them (about 3 per second), 2 % of them zero-length, 300 features (GloVe);
six label values per segment. Features float32, intervals float64, as the ingest's tables hold them.
The defaults make 2,000 segments over about 12,000 s of video.

Timed: ``moodlake.data.align.build_segments`` over every video, from the label rows and the
streams to the model's arrays (audio and visual aligned to the words by overlap-weighted average,
each segment's words, cut or padded to ``--maxlen``). Segments/s = segments / wall time, median
and range over ``--rounds`` rounds.

Baseline: the same result computed the way the SDK's ``mmdataset.align`` goes (a Python loop over
the words, each comparing the word with every row of the video, crop, then a weighted mean; then a
loop over the segments comparing each with every word), on the first ``--baseline-videos`` videos;
its largest difference from the vectorised arrays is reported (it should be ~1e-6, float32).

Prints a markdown table and writes JSON (machine, load average before and after) to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from pathlib import Path

import numpy as np

from moodlake.data.align import EPS, build_segments
from moodlake_dev.bench.models import machine_facts, write_report

DIMS = {"audio": 74, "visual": 35, "text": 300}
LABELS = 6


def _frames(duration: float, rate: float, dim: int, rng: np.random.Generator, missing: float = 0.0) -> tuple:
    n = int(duration * rate)
    start = np.arange(n) / rate
    keep = rng.random(n) >= missing
    intervals = np.stack([start, start + 1 / rate], 1)[keep]
    return intervals, rng.standard_normal((len(intervals), dim), dtype=np.float32)


def _words(duration: float, rng: np.random.Generator) -> tuple:
    lengths = rng.uniform(0.1, 0.4, int(duration * 4) + 8)
    lengths[rng.random(len(lengths)) < 0.02] = 0.0
    gaps = rng.uniform(0.0, 0.16, len(lengths))
    start = np.cumsum(gaps + lengths) - lengths
    keep = start + lengths <= duration
    intervals = np.stack([start, start + lengths], 1)[keep]
    return intervals, rng.standard_normal((len(intervals), DIMS["text"]), dtype=np.float32)


def synthetic_set(videos: int, segments_per_video: int, seed: int = 20) -> tuple[dict, dict]:
    """``(streams per video, label columns)`` of a seeded synthetic set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    streams, labels = {}, {"video": [], "segment": [], "intervals": [], "values": []}
    for v in range(videos):
        name = f"video{v:04d}"
        lengths = rng.uniform(3.0, 7.0, segments_per_video)
        gaps = rng.uniform(0.2, 2.0, segments_per_video)
        start = np.cumsum(gaps + lengths) - lengths
        duration = float(start[-1] + lengths[-1] + 1.0)
        streams[name] = {"audio": _frames(duration, 100.0, DIMS["audio"], rng),
                         "visual": _frames(duration, 30.0, DIMS["visual"], rng, missing=0.05),
                         "text": _words(duration, rng)}
        labels["video"] += [name] * segments_per_video
        labels["segment"] += list(range(segments_per_video))
        labels["intervals"].append(np.stack([start, start + lengths], 1))
        labels["values"].append(rng.uniform(0, 3, (segments_per_video, LABELS)))
    labels["intervals"] = np.concatenate(labels["intervals"])
    labels["values"] = np.concatenate(labels["values"])
    return streams, labels


def sdk_style(streams: dict, segments: np.ndarray, maxlen: int, eps: float = EPS) -> dict:
    """One video's segments the SDK's way: per word, every row of the video compared with it
    (``__intersect_and_copy``), cropped, then the overlap-weighted mean; per segment, every word
    compared with it, the last ``maxlen`` kept, zeros after. Returns modality -> [s, maxlen, d]."""
    words, text = streams["text"]
    order = np.lexsort((words[:, 1], words[:, 0]))
    aligned = {"text": text}
    for m in ("audio", "visual"):
        iv, f = streams[m]
        out = np.zeros((len(words), f.shape[1]))
        for j, (s, e) in enumerate(words):
            hit = (iv[:, 0] < e + eps) & (iv[:, 1] > s - eps)
            overlap = np.minimum(iv[hit, 1], e) - np.maximum(iv[hit, 0], s)
            keep = overlap > eps
            if keep.any():
                out[j] = overlap[keep] @ f[hit][keep] / overlap[keep].sum()
        aligned[m] = out
    result = {m: np.zeros((len(segments), maxlen, a.shape[1]), dtype=np.float32) for m, a in aligned.items()}
    for k, (s, e) in enumerate(segments):
        inside = order[(np.minimum(words[order, 1], e) - np.maximum(words[order, 0], s)) > eps][-maxlen:]
        for m, a in aligned.items():
            result[m][k, :len(inside)] = a[inside]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--segments-per-video", type=int, default=20)
    parser.add_argument("--maxlen", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-videos", type=int, default=5, help="videos timed the SDK's way (0: skip)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench-results/align.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    streams, labels = synthetic_set(args.videos, args.segments_per_video, args.seed)
    n = len(labels["video"])
    facts = {"segments": n, "video_seconds": float(sum(s["audio"][0][-1, 1] for s in streams.values())),
             **{f"{m}_rows": int(sum(len(s[m][0]) for s in streams.values())) for m in DIMS}}

    def run():
        return build_segments(streams, labels["video"], labels["segment"], labels["intervals"], labels["values"],
                              reference="text", maxlen=args.maxlen)

    speeds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        result = run()
        speeds.append(n / (time.perf_counter() - start))
    facts.update(words_per_segment_median=float(np.median(result.steps)),
                 segments_cut=int((result.steps > args.maxlen).sum()), empty_segments=int((result.lengths == 0).sum()))
    rows = [{"implementation": "vectorised (build_segments)", "segments": n, "segments_per_s_median": statistics.median(speeds),
             "segments_per_s_min": min(speeds), "segments_per_s_max": max(speeds)}]
    if args.baseline_videos:
        names = list(streams)[: args.baseline_videos]
        rows_of = {name: np.flatnonzero(np.asarray(labels["video"]) == name) for name in names}
        start = time.perf_counter()
        baseline = {name: sdk_style(streams[name], labels["intervals"][r], args.maxlen) for name, r in rows_of.items()}
        seconds = time.perf_counter() - start
        count = sum(len(r) for r in rows_of.values())
        difference = max(float(np.abs(baseline[name][m] - result.features[m][r]).max())
                         for name, r in rows_of.items() for m in DIMS)
        rows.append({"implementation": "SDK-style loops (baseline)", "segments": count,
                     "segments_per_s_median": count / seconds, "segments_per_s_min": count / seconds,
                     "segments_per_s_max": count / seconds, "max_abs_difference": difference})
    base = rows[-1]["segments_per_s_median"]
    print(f"\n{n} segments, {args.videos} videos, {facts['video_seconds']:,.0f} s of video "
          f"({facts['audio_rows']:,} audio, {facts['visual_rows']:,} visual, {facts['text_rows']:,} word rows), "
          f"maxlen {args.maxlen}; median of {args.rounds} rounds\n")
    print("| implementation | segments | segments/s (median) | range | vs baseline |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['implementation']} | {r['segments']} | {r['segments_per_s_median']:,.0f} | "
              f"{r['segments_per_s_min']:,.0f}-{r['segments_per_s_max']:,.0f} | {r['segments_per_s_median'] / base:.1f}x |")
    if args.baseline_videos:
        print(f"\nLargest difference, baseline vs vectorised: {rows[-1]['max_abs_difference']:.2e}")
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "numpy": np.__version__,
              "machine": machine_facts(load_before), "args": vars(args), "set": facts, "results": rows}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
