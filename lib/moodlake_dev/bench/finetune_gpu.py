"""Fine-tune the multitask model's image head on a built single-label image dataset (Emotion6) on a GPU.

    python -m moodlake_dev.bench.finetune_gpu --dataset DATASET_DIR --weights efficientnet-lite0.pth \
        [--configs recipe full full-lr1e-4 frozen] [--seeds 3] [--epochs 20] [--out finetune.json]

Why this exists: the CPU runs of BENCHMARKS.md cannot afford augmentation or a deeper fine-tune of
the backbone (12-25 images/s), and the GPU machine cannot install the Petastorm stack (pyarrow 14
needs NumPy 1.x; pyspark is larger than what can be carried there). So this reads the Parquet files
that ``moodlake datasets build`` wrote (``DATASET_DIR/{train,val,test}``, the JPEG bytes and labels
that the Petastorm reader would decode) with plain pyarrow and PIL, and trains with the pieces of
the pipeline itself: ``get_model("multitask")``, the training augmentation of
:mod:`moodlake.data.transforms` (the PostLoader's), the backbone's preprocessing, the recipe's
optimizer, inverse-frequency class weights, learning-rate halving on a validation-loss plateau and
early stopping, bf16 autocast and channels_last on CUDA. The model of the epoch with the lowest
validation loss is scored on the test split (image head accuracy). The numbers answer "what does
the recipe reach with augmentation and deeper fine-tuning", not "what does the production job do".

Configurations (``--configs``): ``recipe`` (last backbone stage trained, Adam 1e-3), ``full``
(every stage, Adam 1e-3), ``full-lr1e-4`` and ``full-lr3e-5`` (every stage, Adam 1e-4 / 3e-5),
``last3-lr1e-4`` (the last three stages, Adam 1e-4), ``frozen`` (backbone frozen); all with
augmentation. Each run also records its validation accuracy at the selected epoch, which is what a
configuration should be chosen by (the test split only reports).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moodlake_dev.bench.models import machine_facts, write_report
from moodlake.data.transforms import random_crop_flip, to_tensor
from moodlake.models import PREPROCESSING, get_model

CONFIGS = {  # name: (image_trainable_stages, lr)
    "recipe": (1, 1e-3),
    "full": (None, 1e-3),
    "full-lr1e-4": (None, 1e-4),
    "full-lr3e-5": (None, 3e-5),
    "last3-lr1e-4": (3, 1e-4),
    "frozen": (0, 1e-3),
}


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H, W, 3] (RGB) and int labels [N] of one split's Parquet files, rows with an image and a label."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    files = sorted(p for p in path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}")
    table = pa.concat_tables([pq.read_table(f, columns=["image", "label"]) for f in files])
    images, labels = [], []
    for jpeg, label in zip(table.column("image").to_pylist(), table.column("label").to_pylist()):
        if jpeg is None or label is None or label < 0:
            continue
        images.append(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _batch(images: np.ndarray, device, preprocessing, channels_last: bool) -> dict:
    n = len(images)
    x = to_tensor(images, preprocessing.mean, preprocessing.std, np.ones(n, bool)).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(n, 3, dtype=torch.bool, device=device)
    mask[:, 0] = True
    return {"image": x, "mask": mask}


@torch.no_grad()
def _score(model, images, labels, device, preprocessing, channels_last, autocast, batch=128) -> tuple[float, float]:
    """(mean log loss, accuracy) of the image head."""
    model.eval()
    nll, correct = 0.0, 0
    for s in range(0, len(images), batch):
        b = _batch(images[s:s + batch], device, preprocessing, channels_last)
        with autocast():
            logits = model(b)["image"].float()
        y = torch.as_tensor(labels[s:s + batch], device=device)
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return nll / len(images), correct / len(images)


def train_one(data: dict, labels: list[str], weights: str, config: str, seed: int, epochs: int, device,
              batch_size: int = 32, patience: int = 3, stop_after: int = 6) -> dict:
    stages, lr = CONFIGS[config]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cuda = device.type == "cuda"
    model = get_model("multitask", labels=labels, vocab_size=2, tag_vocab_size=2, pretrained=weights,
                      image_trainable_stages=stages).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    pre = PREPROCESSING["efficientnet_lite0"]
    x_train, y_train = data["train"]
    counts = np.bincount(y_train, minlength=len(labels)).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(labels), 0.0)
    class_weights = torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(model.param_groups(lr), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=patience)
    best, best_state, history, since_best, seen, train_seconds = None, None, [], 0, 0, 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(x_train))
        started = time.perf_counter()
        for s in range(0, len(order) - batch_size + 1, batch_size):  # drop_last, as the training loader
            rows = order[s:s + batch_size]
            b = _batch(random_crop_flip(x_train[rows], rng), device, pre, cuda)
            b["label"] = torch.as_tensor(y_train[rows], device=device)
            with autocast():
                loss = model.loss(model(b), b, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(rows)
        if cuda:
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - started
        val_loss, val_acc = _score(model, *data["val"], device, pre, cuda, autocast)
        scheduler.step(val_loss)
        history.append({"epoch": epoch, "val_loss": round(val_loss, 4), "val_accuracy": round(val_acc, 4)})
        if best is None or val_loss < best["val_loss"]:
            best, since_best = history[-1], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= stop_after:
                break
    model.load_state_dict(best_state)
    test_loss, test_acc = _score(model, *data["test"], device, pre, cuda, autocast)
    return {"config": config, "seed": seed, "image_trainable_stages": stages, "lr": lr, "epochs": len(history),
            "best_epoch": best["epoch"], "val_accuracy": best["val_accuracy"], "test_accuracy": test_acc, "test_loss": test_loss,
            "train_images_per_s": seen / train_seconds, "history": history}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a built dataset's folder (manifest.json, train/ val/ test/)")
    parser.add_argument("--weights", required=True, help="the EfficientNet-Lite0 ImageNet .pth")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=0, help="use only this many rows per split (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/finetune_gpu.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    manifest = json.loads((args.dataset / "manifest.json").read_text())
    labels = list(manifest["labels"])
    data = {}
    for split in ("train", "val", "test"):
        x, y = load_split(args.dataset / split)
        data[split] = (x[: args.limit], y[: args.limit]) if args.limit else (x, y)
    print({s: len(v[1]) for s, v in data.items()}, "images", flush=True)
    runs: list[dict] = []
    report = {"date": dt.date.today().isoformat(), "dataset": manifest["name"], "dataset_version": manifest["version"],
              "counts": {s: len(v[1]) for s, v in data.items()}, "runs": runs}
    for config in args.configs:
        for seed in range(args.seeds):
            run = train_one(data, labels, args.weights, config, seed, args.epochs, device)
            runs.append(run)
            print(f"{config} seed {seed}: test accuracy {run['test_accuracy']:.3f} (best epoch {run['best_epoch']}"
                  f" of {run['epochs']}), {run['train_images_per_s']:.0f} train images/s", flush=True)
            report.update(machine=machine_facts(load_before), summary=summarise(runs))
            write_report(args.out, report)  # after every run: a cut-short session keeps what finished
    for config, m in report["summary"].items():
        print(f"| {config} | val {m['val_accuracy_mean']:.3f} | {m['test_accuracy_mean']:.3f} ± {m['std']:.3f} (n={m['n']}) | {m['train_images_per_s']:.0f} |")
    return report


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == config]
        acc = np.array([r["test_accuracy"] for r in mine])
        summary[config] = {"val_accuracy_mean": float(np.mean([r["val_accuracy"] for r in mine])),
                           "test_accuracy_mean": float(acc.mean()),
                           "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, "n": int(len(acc)),
                           "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in mine]))}
    return summary


if __name__ == "__main__":
    main()
