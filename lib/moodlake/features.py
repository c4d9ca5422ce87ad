"""The silver feature job: ``moodlake.posts`` -> ``moodlake.post_features`` (+ ``feature_failures``).

Per post (:func:`featurize`, a pure function run on the executors):

- text: title and description cleaned (St. Pierre: HTML removed, line breaks to spaces, URLs and
  non-English words kept, at most 4,096 characters) and tokenised; optionally only English texts
  of 5-150 words count (Pagé Fortin);
- tags: lower-cased, repeats removed, order kept, the first 10;
- image: decoded, resized to 256 on the shorter side, centre-cropped to 224, stored as JPEG, or
  marked unusable with the reason;
- the modality mask (image, text, tags usable) and the labels, with binary sentiment derived
  from emotion labels.

A post with no usable modality goes to ``feature_failures`` with the reason for each part.
The job is incremental and idempotent: only posts that are new, changed (``content_hash``) or
computed under an older ``features.version`` are processed; results are staged once and
MERGEd on ``post_id``; a re-run with nothing new changes nothing. Counts reconcile:
``posts = post_features + feature_failures``.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake import content
from moodlake.config import Config, FeatureSettings
from moodlake.data.text import clean_text, is_english, normalise_tags, tokenize
from moodlake.logs import SUMMARY
from moodlake.tables import FEATURE_CONTENT, FEATURE_FAILURES, POST_FEATURES, POSTS, ensure_tables

log = logging.getLogger(__name__)

SENTIMENT_LABEL_SETS = ("sentiment2", "sentiment3")

# What the executors return: the feature columns (label_dist as JSON), or a failure.
_OUT = T.StructType(
    [f if f.name != "label_dist" else T.StructField("label_dist_json", T.StringType()) for f in FEATURE_CONTENT.fields]
    + [T.StructField("failure_code", T.StringType()), T.StructField("failure_reason", T.StringType())]
)
_IN_COLUMNS = ["post_id", "source", "source_split", "content_hash", "title", "description", "tags", "image",
               "image_status", "image_error", "label_set", "label", "labels", "label_dist_json", "label_agree"]


def _to_8bit(im):
    """16-bit greyscale (PNG modes ``I;16*``, ``I``) scaled to 8 bits; other modes unchanged.
    (Converted straight to RGB, every value above 255 would clip to white.)"""
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    import numpy as np
    from PIL import Image

    a = np.asarray(im).astype(np.int64)
    return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8))  # 2-D uint8: mode L


def prepare_image(data: bytes | None, resize: int, crop: int, quality: int,
                  max_pixels: int | None = content.MAX_IMAGE_PIXELS) -> tuple[bytes | None, str | None]:
    """(JPEG of the ``crop``-square centre of the image resized to ``resize`` on its shorter side,
    None) or (None, why it is unusable). The first frame of an animation; EXIF orientation applied;
    CMYK, palette and 16-bit images to 8-bit RGB; an image declaring more than ``max_pixels``
    pixels refused from its header, before decoding."""
    if not data:
        return None, "no image"
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            im = Image.open(io.BytesIO(data))
        with im:
            refused = content.pixels_refused(*im.size, max_pixels)
            if refused:
                return None, f"image too large: {refused}"
            im.seek(0)  # the first frame of an animation
            im = _to_8bit(ImageOps.exif_transpose(im))
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))
            else:
                im = im.convert("RGB")
            w, h = im.size
            if min(w, h) < 8:
                return None, f"image too small ({w}x{h})"
            scale = resize / min(w, h)
            im = im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - crop) // 2, (h - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality)
            return buf.getvalue(), None
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: refused in open()
        return None, f"image too large: {content.bomb_refused(e)}"
    except Exception as e:  # noqa: BLE001 - any decoder error makes the image unusable, with its reason
        return None, f"{type(e).__name__}: {str(e)[:160]}"


def derive_sentiment(label_set: str | None, label: str | None, labels, mapping: Mapping[str, str]) -> str | None:
    """positive / negative from the post's labels: itself for sentiment label sets; else the
    mapped polarity when every mapped label agrees."""
    if label_set in SENTIMENT_LABEL_SETS:
        return label if label in ("positive", "negative") else None
    names = list(labels) if labels is not None and len(labels) else ([label] if label else [])
    polarities = {mapping[n] for n in names if n in mapping}
    return polarities.pop() if len(polarities) == 1 else None


def featurize(post: Mapping[str, Any], s: FeatureSettings) -> dict:
    """The feature row of one post (``failure_code`` set when no modality is usable)."""
    text = clean_text(post.get("title"), post.get("description"), max_chars=s.text_max_chars)
    words = tokenize(text)
    english = is_english(words) if words else None
    has_text = bool(words)
    text_why = "no text" if not words else None
    if has_text and s.english_filter:
        if not english:
            has_text, text_why = False, "not English"
        elif not s.english_min_words <= len(words) <= s.english_max_words:
            has_text, text_why = False, f"{len(words)} words, outside {s.english_min_words}-{s.english_max_words}"
    tags = normalise_tags(post.get("tags"), s.max_tags)

    if post.get("image_status") not in (None, "ok"):
        image, image_why = None, f"image {post['image_status']}" + (f": {post['image_error']}" if post.get("image_error") else "")
    else:
        image, image_why = prepare_image(post.get("image"), s.image_resize, s.image_crop, s.jpeg_quality,
                                         s.max_image_pixels)

    labels = list(post["labels"]) if post.get("labels") is not None else []
    row = {
        "post_id": post["post_id"], "source": post["source"], "source_split": post.get("source_split"),
        "post_content_hash": post["content_hash"], "features_version": s.version,
        "text": text, "text_words": words, "text_english": english, "tags": tags,
        "image": image, "image_reason": image_why,
        "has_image": image is not None, "has_text": has_text, "has_tags": bool(tags),
        "label_set": post.get("label_set"), "label": post.get("label"), "labels": labels,
        "label_dist_json": post.get("label_dist_json"), "label_agree": post.get("label_agree"),
        "sentiment": derive_sentiment(post.get("label_set"), post.get("label"), labels, s.sentiment_map),
        "failure_code": None, "failure_reason": None,
    }
    if not (row["has_image"] or row["has_text"] or row["has_tags"]):
        row["failure_code"] = "no_usable_modality"
        row["failure_reason"] = f"{image_why}; {text_why or 'text filtered out'}; no tags"
    return row


def _featurize_batches(batches: Iterator[pd.DataFrame], settings: FeatureSettings) -> Iterator[pd.DataFrame]:
    for pdf in batches:
        out = []
        for post in pdf.to_dict("records"):
            post = {k: (None if isinstance(v, float) and v != v else v) for k, v in post.items()}  # NaN -> None
            try:
                out.append(featurize(post, settings))
            except Exception as e:  # noqa: BLE001 - a bug on one post must not lose the others
                out.append({"post_id": post["post_id"], "source": post["source"],
                            "post_content_hash": post["content_hash"], "features_version": settings.version,
                            "has_image": False, "has_text": False, "has_tags": False,
                            "failure_code": "feature_error", "failure_reason": f"{type(e).__name__}: {e}"[:500]})
        yield pd.DataFrame(out, columns=_OUT.fieldNames())


def compute_features(posts: DataFrame, settings: FeatureSettings) -> DataFrame:
    """posts (the moodlake.posts columns) -> feature rows or failures (``failure_code``). Pure."""
    src = posts.select(*[c for c in _IN_COLUMNS if c != "label_dist_json"],
                       F.to_json("label_dist").alias("label_dist_json"))
    return src.mapInPandas(lambda it: _featurize_batches(it, settings), _OUT)


@dataclass
class FeatureResult:
    run_id: str
    posts: int = 0          # posts in moodlake.posts
    processed: int = 0      # new, changed or re-versioned posts computed in this run
    features: int = 0       # rows of post_features after the run
    failures: int = 0       # rows of feature_failures after the run
    failed_now: int = 0

    def reconciles(self) -> bool:
        return self.posts == self.features + self.failures

    def summary(self) -> str:
        return (f"features run {self.run_id}: {self.processed:,} posts computed ({self.failed_now:,} unusable); "
                f"{self.posts:,} posts = {self.features:,} feature rows + {self.failures:,} failures")


def run_features(spark: SparkSession, cfg: Config, run_id: str | None = None) -> FeatureResult:
    """Bring moodlake.post_features up to date with moodlake.posts."""
    from delta.tables import DeltaTable

    from moodlake.ingest import new_run_id

    ensure_tables(spark, cfg, (POSTS, POST_FEATURES, FEATURE_FAILURES))
    s = cfg.features
    run_id = run_id or new_run_id()
    posts_t, feat_t, fail_t = cfg.table("posts"), cfg.table("post_features"), cfg.table("feature_failures")
    result = FeatureResult(run_id)

    done = (spark.table(feat_t).select("post_id", "post_content_hash", "features_version")
            .unionByName(spark.table(fail_t).select("post_id", "post_content_hash", "features_version")))
    posts = spark.table(posts_t)
    todo = posts.join(
        done, (posts.post_id == done.post_id) & (posts.content_hash == done.post_content_hash)
        & (done.features_version == s.version), "left_anti")
    staging = f"{cfg.lakehouse.warehouse.rstrip('/')}/_staging/features-{run_id}"
    compute_features(todo, s).write.mode("overwrite").parquet(staging)
    staged = spark.read.parquet(staging)
    now = dt.datetime.now(dt.timezone.utc)
    counts = {r["ok"]: r["count"] for r in staged.groupBy(F.col("failure_code").isNull().alias("ok")).count().collect()}
    result.processed = sum(counts.values())
    result.failed_now = counts.get(False, 0)

    good = staged.where("failure_code IS NULL").select(
        *[c if c != "label_dist" else F.from_json("label_dist_json", "map<string,double>").alias("label_dist")
          for c in FEATURE_CONTENT.fieldNames()],
        F.lit(now).alias("computed_at"), F.lit(run_id).alias("features_run_id"))
    bad = staged.where("failure_code IS NOT NULL").select(
        "post_id", "source", "post_content_hash", "features_version", F.col("failure_code").alias("reason_code"),
        F.col("failure_reason").alias("reason"), F.lit(now).alias("failed_at"), F.lit(run_id).alias("features_run_id"))
    if counts.get(True):
        (DeltaTable.forName(spark, feat_t).alias("t").merge(good.alias("s"), "t.post_id = s.post_id")
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        (DeltaTable.forName(spark, fail_t).alias("t").merge(good.select("post_id").alias("s"), "t.post_id = s.post_id")
            .whenMatchedDelete().execute())
    if counts.get(False):
        (DeltaTable.forName(spark, fail_t).alias("t").merge(bad.alias("s"), "t.post_id = s.post_id")
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        (DeltaTable.forName(spark, feat_t).alias("t").merge(bad.select("post_id").alias("s"), "t.post_id = s.post_id")
            .whenMatchedDelete().execute())
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(staging)
    path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)

    result.posts = spark.table(posts_t).count()
    result.features = spark.table(feat_t).count()
    result.failures = spark.table(fail_t).count()
    if not result.reconciles():
        raise RuntimeError(f"feature counts do not reconcile: {result.summary()}")
    log.info(result.summary(), extra=SUMMARY)
    return result
