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


# --------------------------------------------------------------------------- computational sequences (.csd)

# video id -> the reason_code moodlake.sources.csd gives it, in the file write_bad_videos_csd writes
# (beside the good videos "good" and "good2")
BAD_VIDEOS = {
    "no_features": "missing_dataset",
    "no_intervals": "missing_dataset",
    "a_dataset": "not_a_group",
    "rows_differ": "rows_mismatch",
    "intervals_3_columns": "bad_shape",
    "features_1d": "bad_shape",
    "text_features": "not_numeric",
    "empty": "no_rows",
    "three_columns": "dims_mismatch",
    "nan_feature": "non_finite",
    "inf_interval": "non_finite",
    "ends_before_start": "interval_end_before_start",
    "goes_back": "intervals_out_of_order",
}


def _steps(n: int, dims: int = 4, start: float = 0.0):
    import numpy as np

    starts = start + np.arange(n) * 0.5
    return np.stack([starts, starts + 0.5], 1), np.arange(n * dims, dtype=np.float32).reshape(n, dims) / 10


def write_bad_videos_csd(path):
    """A .csd (sequence "bad") whose videos "good" and "good2" are fine and every other video is broken
    in one way (BAD_VIDEOS); the dimension names give 4 feature columns."""
    import h5py
    import numpy as np

    from moodlake.sources.csd import write_csd

    videos = {"good": _steps(3), "good2": _steps(5, start=10)}
    iv, ft = _steps(4)
    videos.update({
        "rows_differ": (iv, ft[:3]),
        "intervals_3_columns": (np.c_[iv, iv[:, :1]], ft),
        "features_1d": (iv, ft[:, 0]),
        "empty": (iv[:0], ft[:0]),
        "three_columns": (iv, ft[:, :3]),
        "nan_feature": (iv, np.where(np.arange(16).reshape(4, 4) == 9, np.nan, ft)),
        "inf_interval": (np.where(np.arange(8).reshape(4, 2) == 5, np.inf, iv), ft),
        "ends_before_start": (iv[:, ::-1], ft),
        "goes_back": (iv[[0, 2, 1, 3]], ft),
        "no_features": (iv, ft),
        "no_intervals": (iv, ft),
    })
    write_csd(path, "bad", videos, {"dimension names": ["a", "b", "c", "d"]})
    with h5py.File(path, "a") as f:
        data = f["bad/data"]
        del data["no_features/features"]
        del data["no_intervals/intervals"]
        data.create_dataset("a_dataset", data=ft)
        g = data.create_group("text_features")
        g.create_dataset("intervals", data=iv)
        g.create_dataset("features", data=np.array([[b"x"] * 4] * 4))
    return path


def write_unusable_csds(folder) -> dict:
    """Files no video can be read from, by what is wrong with them: name -> path."""
    import h5py
    import numpy as np

    from moodlake.sources.csd import write_csd

    folder.mkdir(parents=True, exist_ok=True)
    out = {"missing": folder / "missing.csd", "not_hdf5": folder / "not_hdf5.csd"}
    out["not_hdf5"].write_text("video,start,end\nabc,0,1\n")
    out["empty"] = folder / "empty.csd"
    h5py.File(out["empty"], "w").close()
    out["no_data_group"] = folder / "no_data_group.csd"
    with h5py.File(out["no_data_group"], "w") as f:
        f.create_group("seq").create_group("metadata")
    out["data_not_group"] = folder / "data_not_group.csd"
    with h5py.File(out["data_not_group"], "w") as f:
        f.create_group("seq").create_dataset("data", data=np.zeros((2, 2)))
    out["root_dataset"] = folder / "root_dataset.csd"
    with h5py.File(out["root_dataset"], "w") as f:
        f.create_dataset("seq", data=np.zeros(3))
    good = write_csd(folder / "good.csd", "seq", {f"v{i}": _steps(200, 16) for i in range(8)})
    out["truncated"] = folder / "truncated.csd"
    out["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return out
