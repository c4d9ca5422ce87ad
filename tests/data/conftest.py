"""Small Petastorm splits written once per session with ``write_split`` from generated posts.

``posts_split``: 480 posts over 6 real 224-px JPEGs made with PIL (smooth, dark on the left and
bright on the right, so a horizontal flip shows), texts of 1-150 words and 0-4,096 characters
(bucket bounds included), 1-10 tags, some posts without image, text or tags (never all three);
at most 40 rows per file, so 12 or more row groups.
``uneven_split``: 185 posts without images in Spark partitions of 150, 30 and 5 rows written with
at most 100 rows per file: row groups of 100, 50, 30 and 5 rows, so shards differ a lot.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw

from moodlake.data.schema import IMAGE_SIZE, MAX_CHARS, MAX_TAGS, MAX_WORDS, post_schema

K = 4
VOCAB, TAG_VOCAB, CHAR_VOCAB = 500, 60, 120
CHAR_LENGTHS = (1, 127, 128, 129, 2048, 2049, 2560, MAX_CHARS)  # bucket edges, each used by some posts


def image_pixels(k: int) -> np.ndarray:
    """Image ``k``: a left-to-right brightness ramp with a coloured disc whose place depends on ``k``."""
    ramp = np.linspace(20, 235, IMAGE_SIZE)[None, :, None]
    tint = np.array([1.0, 0.8 + 0.04 * k, 0.6 + 0.05 * k])[None, None, :]
    pixels = np.broadcast_to(ramp * tint, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(pixels))
    x, y = 40 + 25 * k, 60 + 18 * k
    ImageDraw.Draw(im).ellipse([x, y, x + 50, y + 50], fill=(40 * k % 256, 200, 255 - 30 * k))
    return np.asarray(im)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


IMAGES = [image_pixels(k) for k in range(6)]
JPEGS = [jpeg(p) for p in IMAGES]


def make_posts(n: int, seed: int, prefix: str, with_images: bool = True) -> list[dict]:
    """``n`` posts as write_split takes them (plus ``source_image``: the index into IMAGES or None)."""
    rng = np.random.default_rng(seed)
    posts = []
    for i in range(n):
        has_image = with_images and rng.random() > 0.12
        has_text = rng.random() > 0.3
        has_tags = rng.random() > 0.3 or not (has_image or has_text)
        words = rng.integers(1, VOCAB, int(rng.integers(1, MAX_WORDS + 1))) if has_text else []
        if has_text:
            m = int(CHAR_LENGTHS[i % len(CHAR_LENGTHS)] if i % 3 == 0 else rng.integers(1, 1200))
        else:
            m = 0
        tags = rng.integers(1, TAG_VOCAB, int(rng.integers(1, MAX_TAGS + 1))) if has_tags else []
        k = int(rng.integers(K))
        dist = rng.random(K)
        posts.append({
            "post_id": f"{prefix}{i:05d}",
            "image": JPEGS[i % len(JPEGS)] if has_image else None,
            "text": words,
            "chars": rng.integers(2, CHAR_VOCAB, m),
            "tags": tags,
            "mask": [has_image, has_text, has_tags],
            "label": k if rng.random() > 0.05 else -1,
            "labels": np.eye(K)[k],
            "label_dist": dist / dist.sum(),
            "char_len": m,
            "source_image": i % len(JPEGS) if has_image else None,
        })
    return posts


def rows_of(posts: list[dict]) -> list[dict]:
    """The posts without the test's bookkeeping keys."""
    return [{k: v for k, v in p.items() if k != "source_image"} for p in posts]


@dataclass
class Split:
    url: str
    posts: dict[str, dict]


@pytest.fixture(scope="session")
def posts_split(spark, tmp_path_factory) -> Split:
    from moodlake.data.petastorm_io import write_split

    posts = make_posts(480, seed=4, prefix="p")
    url = write_split(spark, rows_of(posts), tmp_path_factory.mktemp("splits") / "posts", post_schema(K),
                      max_rows_per_file=40)
    return Split(url, {p["post_id"]: p for p in posts})


@pytest.fixture(scope="session")
def uneven_split(spark, tmp_path_factory) -> Split:
    from moodlake.data.petastorm_io import write_split

    posts = make_posts(185, seed=5, prefix="u", with_images=False)
    rows = rows_of(posts)
    partitions = spark.sparkContext.parallelize([rows[:150], rows[150:180], rows[180:]], 3).flatMap(lambda part: part)
    url = write_split(spark, partitions, tmp_path_factory.mktemp("splits") / "uneven", post_schema(K),
                      max_rows_per_file=100)
    return Split(url, {p["post_id"]: p for p in posts})
