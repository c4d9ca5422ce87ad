"""Forward throughput of the model zoo: images per second at batch 32.

    .venv/bin/python -m moodlake_dev.bench.models [--batch 32] [--size 224] [--repeats 10] [--threads 2]

Measures each image backbone (EfficientNet-Lite0, DenseNet-121, AlexNet; random init, which
runs at the speed of the pretrained weights) and the multitask model on a trimodal batch (images,
150-word texts, 10 tags), in eval mode under ``torch.inference_mode``:

- CPU: eager fp32 with ``--threads`` torch threads;
- CUDA, when ``torch.cuda.is_available()``: eager fp32, and bf16 autocast + channels_last +
  ``torch.compile`` side by side.

Each configuration gets ``--warmup`` untimed passes (compilation happens there), then
``--repeats`` timed passes; the table shows the median throughput and the min-max spread. Prints a
markdown table and writes JSON (with the machine and the load average) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from moodlake.models import get_model, image_backbone

BACKBONES = ("efficientnet_lite0", "densenet121", "alexnet")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def machine_facts(load_before: tuple[float, float, float]) -> dict:
    """The machine a benchmark ran on, with the load average before it and now."""
    return {"cpu": _cpu_model(), "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def _multitask_batch(batch: int, size: int, device: torch.device, channels_last: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return {"image": image, "text": torch.randint(1, 20000, (batch, 150), generator=g).to(device),
            "tags": torch.randint(1, 5000, (batch, 10), generator=g).to(device),
            "mask": torch.ones(batch, 3, dtype=torch.bool, device=device)}


def _build(name: str, device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, Callable]:
    """The model and a function of (model, batch size, image size) that makes its input."""
    if name == "multitask":
        model = get_model("multitask", num_classes=8, pretrained=False)
        make = lambda b, s: _multitask_batch(b, s, device, channels_last)  # noqa: E731
    else:
        model = image_backbone(name, pretrained=False)

        def make(b, s):
            x = torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(0)).to(device)
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, make


def measure(name: str, mode: str, device: torch.device, batch: int, size: int, warmup: int,
            repeats: int) -> dict:
    """Time ``repeats`` forward passes of ``name`` in ``mode`` (``eager-fp32`` or ``bf16-cl-compile``)."""
    optimised = mode == "bf16-cl-compile"
    model, make = _build(name, device, channels_last=optimised)
    run = torch.compile(model) if optimised else model
    x = make(batch, size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if optimised else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), autocast:
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            run(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    rates = sorted(batch / t for t in times)
    return {"model": name, "device": device.type, "mode": mode, "batch": batch, "image_size": size,
            "repeats": repeats, "warmup": warmup, "images_per_s_median": statistics.median(rates),
            "images_per_s_min": rates[0], "images_per_s_max": rates[-1],
            "seconds_per_batch_median": statistics.median(times)}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | device | mode | images/s (median) | min-max | s/batch (median) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['mode']} | {r['images_per_s_median']:.1f} | "
                     f"{r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f} | {r['seconds_per_batch_median']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--models", nargs="+", default=[*BACKBONES, "multitask"])
    parser.add_argument("--no-cpu", action="store_true", help="measure CUDA only")
    parser.add_argument("--out", type=Path, default=Path("bench-results/models.json"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []
    if not args.no_cpu:
        for name in args.models:
            rows.append(measure(name, "eager-fp32", torch.device("cpu"), args.batch, args.size, args.warmup,
                                args.repeats))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        for name in args.models:
            for mode in ("eager-fp32", "bf16-cl-compile"):
                rows.append(measure(name, mode, cuda, args.batch, args.size, max(args.warmup, 5), args.repeats))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    machine = machine_facts(load_before)
    print()
    print(f"{machine['cpu']}, {machine['nproc']} CPUs, torch {machine['torch']} with "
          f"{machine['torch_threads']} threads, CUDA: {machine['cuda_device'] or 'none'}; "
          f"load average before/after {load_before[0]:.2f}/{machine['loadavg_after'][0]:.2f}")
    print(markdown(rows))
    write_report(args.out, {"machine": machine, "results": rows})
    return rows


if __name__ == "__main__":
    main()
