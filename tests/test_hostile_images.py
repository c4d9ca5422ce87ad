"""A corpus of broken and awkward images, generated here (no binaries in the repository), through
the ingest checks (moodlake.content.check_image), the feature job's image cleaning
(moodlake.features.prepare_image) and one small ingest + features run on Spark.

Each image either becomes a valid 224x224 RGB JPEG (CMYK -> RGB, 16-bit -> 8-bit, the first frame of
an animation, EXIF orientation applied) or ends with its reason (posts.image_status / image_error,
post_features.image_reason, feature_failures.reason). A decompression bomb (a few hundred bytes
declaring 60000x60000 pixels: 10 GiB decoded) is refused from its header, with peak memory measured.
"""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from moodlake import content
from moodlake.config import ConfigError, load_config
from moodlake.features import prepare_image, run_features
from moodlake.ingest import ExecContext, Ingestor
from moodlake.records import post_row
from moodlake.sources.datasets import dataset_source
from tests import helpers

RED, BLUE = (220, 20, 20), (20, 20, 220)
BOMB_SIDE = 60_000


# --------------------------------------------------------------------------- the corpus


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    return _save(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK


def gray16_png() -> bytes:
    """A 16-bit greyscale gradient, black on the left to white on the right."""
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (256, 1))
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    return _save(im, "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE, (20, 220, 20))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def exif_rotated_jpeg(orientation: int) -> bytes:
    """Stored 200x100: red left half, blue right half, with EXIF orientation 6 (display rotated
    90 degrees clockwise: red on top) or 8 (counter-clockwise: red at the bottom)."""
    im = Image.new("RGB", (200, 100), BLUE)
    im.paste(RED, (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(im, "JPEG", quality=95, exif=exif.tobytes())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid PNG header declaring side x side RGB pixels, followed by one compressed row."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" * (1 + 3 * side), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", row) + _png_chunk(b"IEND", b"")


def bomb_jpeg(side: int = BOMB_SIDE) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to declare side x side pixels."""
    data = bytearray(_save(Image.new("RGB", (16, 16), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def big_png(side: int = 3000) -> bytes:
    return _save(Image.new("RGB", (side, side), RED), "PNG")


# name in the export -> (bytes, what the feature job must make of it: "ok" or the reason's start)
CORPUS = {
    "zero.jpg": (b"", "image empty"),
    "truncated.jpg": (helpers.truncated_jpeg(), "image truncated"),
    "png-named.jpg": (helpers.png(), "ok"),
    "cmyk.jpg": (cmyk_jpeg(), "ok"),
    "gray16.png": (gray16_png(), "ok"),
    "animated.gif": (animated_gif(), "ok"),
    "exif6.jpg": (exif_rotated_jpeg(6), "ok"),
    "exif8.jpg": (exif_rotated_jpeg(8), "ok"),
    "bomb.png": (bomb_png(), "image too_large: declares 3,600,000,000 pixels"),
    "bomb.jpg": (bomb_jpeg(), "image too_large: declares 3,600,000,000 pixels"),
}


def _decoded(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (224, 224))
        return np.asarray(im).astype(int)


def _near(pixel, colour, tol=40) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour))


def check_cleaned(name: str, jpeg: bytes) -> None:
    """The content checks of one cleaned image of the corpus."""
    a = _decoded(jpeg)
    if name == "cmyk.jpg":
        assert _near(a[112, 112], (255, 0, 0)), a[112, 112]
    elif name == "gray16.png":  # 8-bit now, the gradient kept (clipping would make it all white)
        assert a[:, :5].mean() < 40 and a[:, -5:].mean() > 215 and 90 < a.mean() < 165, a.mean()
    elif name == "animated.gif":
        assert _near(a[112, 112], RED)  # the first frame
    elif name == "exif6.jpg":
        assert _near(a[10, 112], RED) and _near(a[214, 112], BLUE)  # upright: red on top
    elif name == "exif8.jpg":
        assert _near(a[10, 112], BLUE) and _near(a[214, 112], RED)  # upright: red at the bottom


# --------------------------------------------------------------------------- without Spark


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_image_is_cleaned_or_refused_with_its_reason(name):
    data, expected = CORPUS[name]
    check = content.check_image(data, name)
    out, why = prepare_image(data, 256, 224, 90)
    if expected == "ok":
        assert check.status == "ok" and check.detail is None, check
        assert why is None
        check_cleaned(name, out)
    else:
        assert check.status in ("empty", "truncated", "too_large") and check.detail
        assert out is None and why
        assert expected.split(":")[0].split()[-1].replace("_", " ") in f"{check.status} {why}".replace("_", " ")
    if name == "png-named.jpg":
        assert check.mime == "image/png" and "image:extension_mismatch" in check.flags
    if name == "animated.gif":
        assert "image:animated" in check.flags
    if name.startswith("bomb"):
        assert check.status == "too_large" and "image:too_many_pixels" in check.flags
        assert check.detail.startswith("declares 3,600,000,000 pixels > ")  # read from the header only
        assert why.startswith("image too large: declares 3,600,000,000 pixels > ")


def test_the_pixel_limit_is_a_setting_not_pillows_default():
    big = big_png(1200)  # 1.44 M pixels: far under Pillow's 89 M
    assert prepare_image(big, 256, 224, 90)[1] is None
    out, why = prepare_image(big, 256, 224, 90, max_pixels=1_000_000)
    assert out is None and why.startswith("image too large: declares 1200x1200 = 1,440,000 pixels > the limit of 1,000,000")
    check = content.check_image(big, "big.png", max_pixels=1_000_000)
    assert check.status == "too_large" and "1,440,000" in check.detail


def test_ingest_takes_its_pixel_limit_from_the_configuration():
    """ingest.max_image_pixels reaches every source's post rows through ExecContext.image_limits."""
    cfg = load_config(environ={}, overrides={"ingest.max_image_pixels": "1000000"})
    ctx = ExecContext(None, cfg.ingest.max_image_bytes, cfg.ingest.max_image_pixels)
    big = big_png(1200)
    row = post_row(source="s", source_id="1", raw={}, image=big, image_source="big.png", **ctx.image_limits)
    assert (row["image_status"], row["image"]) == ("too_large", None)
    assert row["image_error"].startswith("declares 1200x1200 = 1,440,000 pixels > the limit of 1,000,000")
    default = load_config(environ={})
    ctx = ExecContext(None, default.ingest.max_image_bytes, default.ingest.max_image_pixels)
    assert post_row(source="s", source_id="1", raw={}, image=big, **ctx.image_limits)["image_status"] == "ok"
    with pytest.raises(ConfigError, match="max_image_pixels"):
        load_config(environ={}, overrides={"ingest.max_image_pixels": "0"})


def test_a_decompression_bomb_is_refused_without_the_memory_it_declares(tmp_path):
    """In a fresh interpreter, peak RSS (ru_maxrss) after the bombs minus peak before them:
    far below the 10.8 GB that 60000x60000 RGB pixels need."""
    bombs = {"bomb.png": CORPUS["bomb.png"][0], "bomb.jpg": CORPUS["bomb.jpg"][0],
             # 144 M pixels: over our limit (89 M), under the 179 M at which Pillow itself refuses
             "bomb-12k.png": bomb_png(12_000), "bomb-12k.jpg": bomb_jpeg(12_000)}
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "small.png").write_bytes(helpers.png())
    script = textwrap.dedent(f"""
        import json, resource, sys
        from pathlib import Path
        from moodlake import content
        from moodlake.features import prepare_image
        from PIL import Image
        prepare_image(content.__doc__ and Path({str(tmp_path)!r}, "small.png").read_bytes(), 256, 224, 90)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {{}}
        for name in {sorted(bombs)!r}:
            data = (Path({str(tmp_path)!r}) / name).read_bytes()
            c = content.check_image(data, name)
            img, why = prepare_image(data, 256, 224, 90)
            out[name] = [len(data), c.status, img is None, why]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"grew_kib": after - before, "results": out}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report["results"]) == sorted(bombs)
    for name, (size, status, refused, why) in report["results"].items():
        pixels = "3,600,000,000 pixels" if "12k" not in name else "12000x12000 = 144,000,000 pixels"
        assert size < 2_000 and status == "too_large" and refused and pixels in why, (name, why)
    grew = report["grew_kib"] * 1024
    smallest = 12_000 * 12_000 * 3  # bytes the smallest bomb needs decoded (RGB): 432 MB
    print(f"bombs: {smallest / 1e6:.0f} MB to {BOMB_SIDE ** 2 * 3 / 1e9:.1f} GB declared, peak RSS grew by {grew / 1e6:.1f} MB")
    assert grew < 50e6 and grew < smallest / 8


# --------------------------------------------------------------------------- ingest + features on Spark


@pytest.mark.spark
@pytest.mark.slow
def test_the_corpus_through_ingest_and_the_feature_job(spark, cfg, tmp_path):
    """Every image of the corpus (plus a 3000x3000 PNG over a features.max_image_pixels of 8 M)
    as an export of image-only posts: ingest lands every post (the bad parts marked), the feature
    job cleans each image or fails the post with the image's reason; counts reconcile."""
    images = {name: data for name, (data, _) in CORPUS.items()}
    images["big.png"] = big_png(3000)
    expected = {name: want for name, (_, want) in CORPUS.items()}
    expected["big.png"] = "image too large: declares 3000x3000 = 9,000,000 pixels > the limit of 8,000,000"
    lines = [helpers.j({"id": name, "image": f"img/{name}"}) for name in images]
    helpers.write_export(tmp_path, lines, images)
    source = "hostile-images"
    r = Ingestor(spark, cfg).run(dataset_source("export", tmp_path, cfg, name=source))
    assert r.reconciles() and r.input_records == len(lines) == r.posts_new and r.failures == 0

    posts = {p.source_id: p for p in spark.table(cfg.table("posts")).where(F.col("source") == source).collect()}
    assert set(posts) == set(images)
    for name in ("bomb.png", "bomb.jpg"):
        p = posts[name]
        assert (p.image_status, p.image) == ("too_large", None)  # bytes not kept
        assert p.image_error.startswith("declares 3,600,000,000 pixels > ")
        assert "image:too_many_pixels" in p.quality_flags
    assert posts["zero.jpg"].image_status == "empty" and posts["truncated.jpg"].image_status == "truncated"
    assert posts["big.png"].image_status == "ok"  # under the ingest limit

    strict = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, max_image_pixels=8_000_000))
    result = run_features(spark, strict)
    assert result.reconciles()
    feats = {r.post_id.split(":", 1)[1]: r for r in
             spark.table(cfg.table("post_features")).where(F.col("source") == source).collect()}
    fails = {r.post_id.split(":", 1)[1]: r for r in
             spark.table(cfg.table("feature_failures")).where(F.col("source") == source).collect()}
    assert len(feats) + len(fails) == len(images) and not set(feats) & set(fails)  # none lost, none twice
    for name, want in expected.items():
        if want == "ok":
            assert name in feats and feats[name].has_image, name
            check_cleaned(name, feats[name].image)
        else:
            f = fails[name]  # image-only posts: nothing else usable
            assert f.reason_code == "no_usable_modality" and f.reason.startswith(want), (name, f.reason)
            assert f.reason.endswith("; no text; no tags")
