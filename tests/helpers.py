"""Bad and good inputs made on the fly (no binary fixtures in the repository)."""
from __future__ import annotations

import io
import json

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def gif(frames: int = 2) -> bytes:
    buf = io.BytesIO()
    ims = [Image.new("RGB", (20, 20), (i * 80 % 256, 255 - i * 60 % 256, 30)) for i in range(frames)]
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:])
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(200, 150)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    data = bytearray(jpeg(200, 150))
    data[200:600] = b"\x00" * 400  # scan data and tables destroyed, header intact
    return bytes(data[:20]) + b"\xff\xda" + bytes(data[600:])


def write_export(root, lines: list[bytes], images: dict[str, bytes]) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (root / "img" / name).write_bytes(data)
    (root / "posts.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def j(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def write_bad_export(tmp_path):
    """An export folder with every kind of bad record; returns (folder, number of lines, the 100 KiB text)."""
    big = "word " * 20_480  # 100 KiB description
    lines = [
        j({"id": "ok", "title": "A fine day", "tags": ["sun"], "image": "img/ok.jpg", "label": "joy"}),
        j({"id": "trunc", "title": "t", "image": "img/trunc.jpg"}),
        j({"id": "corrupt", "title": "c", "image": "img/corrupt.jpg"}),
        j({"id": "gif", "title": "g", "image": "img/gif.jpg"}),
        j({"id": "png", "title": "p", "image": "img/png.jpg"}),
        j({"id": "html", "description": "<p>Hi <b>there</b></p><!-- a comment --> <a href='http://x.org'>x</a>"}),
        json.dumps({"id": "latin1", "title": "café crème"}, ensure_ascii=False).encode("latin-1"),
        j({"id": "tags", "tags": ["Beach", "", "  ", "beach", "sea"]}),
        j({"id": "big", "description": big}),
        j({"id": "ok", "title": "the same id again"}),
        j({"id": "unknown-label", "title": "u", "label": "euphoria"}),
        b'{"id": "broken", "title": ',
        j({"title": "no id at all"}),
        j({"id": "noimage", "title": "n", "image": "img/does-not-exist.jpg"}),
        j({"id": "htmlimage", "title": "h", "image": "img/error.jpg"}),
        j({"id": "extra", "title": "e", "mood": "??"}),
        j(["not", "an", "object"]),
    ]
    images = {"ok.jpg": jpeg(), "trunc.jpg": truncated_jpeg(), "corrupt.jpg": corrupt_jpeg(),
              "gif.jpg": gif(), "png.jpg": png(), "error.jpg": b"<html><body>Not Found</body></html>"}
    write_export(tmp_path, lines, images)
    return tmp_path, len(lines), big


def fast_recipe(max_epochs: int, cache_mb: int = 512, **over):
    """The small multitask recipe the Spark training tests use: Adam 2e-3, batches of 32, the frozen
    ImageNet EfficientNet-Lite0 with its features cached, no augmentation."""
    from moodlake.config import Recipe

    return Recipe(**{"optimizer": "adam", "lr": 2e-3, "batch_size": 32, "max_epochs": max_epochs,
                     "early_stopping_patience": 10, "augment": False, "glove": True, "frozen_cache_mb": cache_mb,
                     "model": {"image_backbone": "efficientnet_lite0", "pretrained": True,
                               "image_trainable_stages": 0}, **over})


def training_config(cfg, root, datasets: dict, recipe, **training):
    """``cfg`` with more dataset definitions, the multitask ``recipe``, and runs and models under
    ``root`` (launcher inline unless ``training`` says otherwise)."""
    import dataclasses

    return dataclasses.replace(
        cfg,
        datasets=dataclasses.replace(cfg.datasets, definitions={**cfg.datasets.definitions, **datasets}),
        training=dataclasses.replace(cfg.training, **{
            "root": str(root / "runs"), "models_root": str(root / "models"),
            "recipes": {**cfg.training.recipes, "multitask": recipe}, "launcher": "inline", **training}))
