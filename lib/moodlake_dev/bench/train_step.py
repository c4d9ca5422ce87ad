"""Training-step throughput of the multitask model: samples (images) per second per device.

    .venv/bin/python -m moodlake_dev.bench.train_step [--batch 32 ...] [--threads 2] [--no-cpu]

One step is what the training loop does per batch: forward over a trimodal batch (224-px images,
150-word texts, 10 tags, every head), the summed head losses, backward, and an Adam update. The
batches are made once and kept on the device, so this is the model's side only; what the Petastorm
reader delivers is measured by ``moodlake_dev.bench.reader``. Two image settings:

- ``recipe``: the production recipe (conf/base/training.yaml): EfficientNet-Lite0 with its last
  stage trainable, the earlier stages frozen;
- ``full``: every backbone stage trainable (full fine-tuning).

On the CPU: eager fp32. On CUDA (when available): eager fp32, bf16 autocast + channels_last, and
the same under ``torch.compile``, side by side. Each configuration runs ``--warmup`` untimed steps
(compilation happens there) and ``--repeats`` timed ones; the table shows the median rate and the
min-max spread. Writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from moodlake_dev.bench.models import _multitask_batch, machine_facts, write_report
from moodlake.models import get_model

SETTINGS = {"recipe": 1, "full": None}  # image_trainable_stages


def measure(setting: str, mode: str, device: torch.device, batch: int, warmup: int, repeats: int) -> dict:
    torch.manual_seed(0)
    channels_last = mode != "eager-fp32"
    model = get_model("multitask", num_classes=8, vocab_size=20000, tag_vocab_size=5000, pretrained=False,
                      image_trainable_stages=SETTINGS[setting]).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = _multitask_batch(batch, 224, device, channels_last)
    data["label"] = torch.randint(0, 8, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    forward = torch.compile(model) if mode.endswith("compile") else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode.startswith("bf16") else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        with autocast:
            loss = model.loss(forward(data), data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{setting} {mode}: the loss is {loss.item()}")
    rates = sorted(batch / t for t in times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return {"setting": setting, "device": device.type, "mode": mode, "batch": batch, "warmup": warmup,
            "repeats": repeats, "samples_per_s_median": statistics.median(rates), "samples_per_s_min": rates[0],
            "samples_per_s_max": rates[-1], "seconds_per_step_median": statistics.median(times),
            "peak_gpu_memory_gib": peak, "final_loss": loss.item()}


def markdown(rows: list[dict]) -> str:
    lines = ["| image stages trained | device | mode | batch | samples/s (median) | min-max | peak GPU memory |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        mem = f"{r['peak_gpu_memory_gib']:.1f} GiB" if r.get("peak_gpu_memory_gib") else "-"
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['device']} | {r['mode']} | {r['batch']} | failed: {r['error']} | | |")
            continue
        lines.append(f"| {r['setting']} | {r['device']} | {r['mode']} | {r['batch']} | {r['samples_per_s_median']:.1f} | "
                     f"{r['samples_per_s_min']:.1f}-{r['samples_per_s_max']:.1f} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--gpu-batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--modes", nargs="+", default=["eager-fp32", "bf16-cl", "bf16-cl-compile"],
                        help="CUDA modes")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-results/train_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []

    def run(setting, mode, device, batch, warmup, repeats):
        try:
            rows.append(measure(setting, mode, device, batch, warmup, repeats))
        except Exception as e:  # noqa: BLE001  (a failed mode is a row of the table, not the end of the run)
            rows.append({"setting": setting, "device": device.type, "mode": mode, "batch": batch,
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"})
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)

    if not args.no_cpu:
        for setting in args.settings:
            for batch in args.batch:
                run(setting, "eager-fp32", torch.device("cpu"), batch, args.warmup, args.repeats)
    if torch.cuda.is_available():
        for setting in args.settings:
            for batch in args.gpu_batch:
                for mode in args.modes:
                    run(setting, mode, torch.device("cuda"), batch, max(args.warmup, 5), max(args.repeats, 20))
    machine = machine_facts(load_before)
    print(f"\n{machine['cpu']}, {machine['nproc']} CPUs, torch {machine['torch']}, CUDA: "
          f"{machine['cuda_device'] or 'none'}; load average before/after {load_before[0]:.2f}/"
          f"{machine['loadavg_after'][0]:.2f}")
    print(markdown(rows))
    write_report(args.out, {"date": dt.date.today().isoformat(), "machine": machine, "results": rows})
    return rows


if __name__ == "__main__":
    main()
