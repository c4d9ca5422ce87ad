"""The GPU fine-tuning benchmark (moodlake_dev.bench.finetune_gpu) reads a dataset's Parquet files and learns, on the CPU too."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from moodlake_dev.bench.finetune_gpu import load_split, main, train_one
from moodlake.models.weights import efficientnet_lite0_checkpoint


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), rgb, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _write_dataset(root, n: int = 32):
    """Two classes: reddish (0) and bluish (1) images; one row without an image and one without a label."""
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"name": "colours", "version": "v1", "labels": ["red", "blue"]}))
    for split in ("train", "val", "test"):
        labels = [i % 2 for i in range(n)]
        images = [_jpeg((200 + rng.integers(0, 50), 30, 30) if y == 0 else (30, 30, 200 + rng.integers(0, 50)))
                  for y in labels]
        table = pa.table({"post_id": [f"{split}{i}" for i in range(n + 2)], "image": images + [None, _jpeg((0, 0, 0))],
                          "label": pa.array(labels + [0, -1], pa.int32())})
        (root / split).mkdir(exist_ok=True)
        pq.write_table(table.slice(0, n // 2), root / split / "part-0.parquet")
        pq.write_table(table.slice(n // 2), root / split / "part-1.parquet")


def test_reads_the_images_and_labels_of_a_split_and_skips_unusable_rows(tmp_path):
    _write_dataset(tmp_path / "ds")
    images, labels = load_split(tmp_path / "ds" / "train")
    assert images.shape == (32, 64, 64, 3) and images.dtype == np.uint8
    assert labels.tolist() == [i % 2 for i in range(32)]
    assert images[0, ..., 0].mean() > 150 and images[1, ..., 2].mean() > 150  # RGB order kept


def test_the_image_head_learns_and_the_report_is_written(tmp_path):
    _write_dataset(tmp_path / "ds")
    data = {s: load_split(tmp_path / "ds" / s) for s in ("train", "val", "test")}
    torch.set_num_threads(2)
    run = train_one(data, ["red", "blue"], str(efficientnet_lite0_checkpoint()), "frozen", seed=0, epochs=4,
                    device=torch.device("cpu"), batch_size=8)
    assert run["test_accuracy"] == 1.0 and 1 <= run["best_epoch"] <= run["epochs"] == 4
    assert run["history"][-1]["val_loss"] < run["history"][0]["val_loss"] or run["best_epoch"] == 1
    out = tmp_path / "report.json"
    main(["--dataset", str(tmp_path / "ds"), "--weights", str(efficientnet_lite0_checkpoint()), "--configs", "recipe",
          "--seeds", "2", "--epochs", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1] and report["summary"]["recipe"]["n"] == 2
    assert report["counts"] == {"train": 32, "val": 32, "test": 32}
