"""Build a training dataset from ``moodlake.post_features``: splits, vocabularies, Petastorm.

``build_dataset(spark, cfg, name)`` takes the definition ``datasets.definitions.<name>`` (which
sources, which label set, which split) and writes::

    <datasets root>/<name>[-<fold>]/<version>/
        manifest.json  vocab.json  train/  val/  test/

The datasets root (``datasets.root``) is a local path or any Hadoop filesystem URI (``file://``,
``hdfs://``, ``s3a://``; :mod:`moodlake.storage`), so that training processes on executors read it.

- Labels are resolved to the dataset's label set: the post's own label (or the argmax of its
  vote distribution), binary sentiment derived from emotions, GoEmotions' multi-labels; FI votes
  need ``min_agree_train`` agreeing workers for training and ``min_agree_eval`` for validation
  and test (Pagé Fortin). Rows that cannot serve are counted per reason in the manifest:
  ``feature rows of the sources = train + val + test + excluded``.
- Splits come from :mod:`moodlake.data.splits` (stable hashes, or the source's own folds).
- The vocabulary comes from the training split only (:mod:`moodlake.data.vocab`).
- The version is a hash of the definition, the features used and the vocabulary: building again
  with nothing changed finds the finished version and returns it; a killed build leaves only a
  temporary folder, removed by the next build, so a dataset folder is always complete.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake import storage
from moodlake.config import Config, DatasetDefinition, to_plain
from moodlake.data.schema import MAX_CHARS, post_schema
from moodlake.data.splits import split_column
from moodlake.data.vocab import Vocab, build_vocab
from moodlake.features import SENTIMENT_LABEL_SETS
from moodlake.logs import SUMMARY
from moodlake.tables import DATASETS, ensure_tables

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# what the split rules say of posts that go to no split, and the reason each is excluded with
_EXCLUDED_SPLITS = {"drop": "source_split_not_mapped", "sampled_out": "sampled_out"}
FORMAT_VERSION = 1  # bump when the row layout below changes

_RESOLVED = T.StructType([
    T.StructField("post_id", T.StringType(), False),
    T.StructField("label_index", T.IntegerType(), False),
    T.StructField("multi_hot", T.ArrayType(T.FloatType()), False),
    T.StructField("dist", T.ArrayType(T.FloatType()), False),
    T.StructField("excluded", T.StringType(), True),
])


def resolve_labels(row: Mapping[str, Any], d: DatasetDefinition, labels: Sequence[str],
                   by_name: frozenset[str] = frozenset()) -> dict:
    """The target of one feature row for dataset ``d`` (label set ``labels``): label index (-1
    when none), multi-hot, distribution, or the reason it is excluded. Rows labelled in one of the
    label sets ``by_name`` (whose classes are all classes of ``labels``, e.g. ekman6 in ekman7) keep
    their labels, mapped by class name."""
    k = len(labels)
    index = {name: i for i, name in enumerate(labels)}
    dist_src = json.loads(row["label_dist_json"]) if row.get("label_dist_json") else {}
    dist = [float(dist_src.get(name, 0.0)) for name in labels]
    same = row.get("label_set") == d.label_set or row.get("label_set") in by_name
    if same and d.label_from == "dist_argmax" and dist_src:
        best = max(dist_src.items(), key=lambda kv: kv[1])[0]
        target = best if best in index else None
    elif same:
        target = row.get("label")
    elif d.label_set in SENTIMENT_LABEL_SETS:
        target = row.get("sentiment")
    else:
        target = None
    own = row.get("labels")  # a numpy array when it comes through pandas
    names = (list(own) if own is not None else []) if same else ([target] if target else [])
    multi = [0.0] * k
    for n in names:
        if n in index:
            multi[index[n]] = 1.0
    label_index = index.get(target, -1) if target is not None else -1
    if label_index >= 0:
        multi[label_index] = 1.0
    excluded = None
    if d.multi_label and not any(multi):
        excluded = "no_label_in_label_set"
    elif not d.multi_label and label_index < 0:
        excluded = "no_label_in_label_set"
    elif row.get("label_agree") is not None:
        need = d.min_agree_train if row["split"] == "train" else d.min_agree_eval
        if row["label_agree"] < need:
            excluded = f"fewer_than_{need}_agreeing_votes"
    excluded = _EXCLUDED_SPLITS.get(row["split"], excluded)
    return {"post_id": row["post_id"], "label_index": label_index, "multi_hot": multi, "dist": dist,
            "excluded": excluded}


def _split_column(d: DatasetDefinition):
    """The split of every feature row: ``d.split``, or the source's own entry of ``d.source_splits``."""
    if not d.source_splits:
        return split_column(d.split)
    column = split_column(d.split)
    for source, spec in sorted(d.source_splits.items()):
        column = F.when(F.col("source") == source, split_column(spec)).otherwise(column)
    return column


def _repeated(part, repeat: Mapping[str, int]):
    """Each row written ``repeat[source]`` times (1 for sources not named). The copies get the
    ids ``<post_id>#1``, ``#2``, ...: every row of a split keeps its own id (the loader relies on it)."""
    times = F.lit(1)
    for source, n in sorted(repeat.items()):
        times = F.when(F.col("source") == source, F.lit(n)).otherwise(times)
    copies = part.select("*", F.posexplode(F.array_repeat(F.lit(0), times)).alias("_copy", "_zero"))
    post_id = F.when(F.col("_copy") > 0, F.concat(F.col("post_id"), F.lit("#"), F.col("_copy").cast("string")))
    return copies.withColumn("post_id", post_id.otherwise(F.col("post_id"))).drop("_copy", "_zero")


def to_record(row: Mapping[str, Any], vocab: Vocab) -> dict:
    """One Petastorm row (see moodlake.data.schema) from a feature row joined with its target."""
    import numpy as np

    text = row.get("text") if row["has_text"] else None
    words = vocab.word_ids(row.get("text_words") or []) if text else []
    chars = vocab.char_ids(text[:MAX_CHARS]) if text else []
    tags = vocab.tag_ids(row.get("tags") or []) if row["has_tags"] else []
    return {
        "post_id": row["post_id"],
        "image": bytes(row["image"]) if row["has_image"] else None,
        "text": np.asarray(words, dtype=np.int32),
        "chars": np.asarray(chars, dtype=np.int16),
        "tags": np.asarray(tags, dtype=np.int32),
        "mask": np.asarray([row["has_image"], bool(words), bool(tags)], dtype=np.bool_),
        "label": np.int32(row["label_index"]),
        "labels": np.asarray(row["multi_hot"], dtype=np.float32),
        "label_dist": np.asarray(row["dist"], dtype=np.float32),
        "char_len": np.int32(len(chars)),
    }


@dataclass
class DatasetBuild:
    name: str
    version: str
    path: str
    counts: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    reused: bool = False

    def url(self, split: str) -> str:
        return storage.join(storage.spark_url(self.path), split)

    def summary(self) -> str:
        ex = ", ".join(f"{v} {k}" for k, v in sorted(self.excluded.items())) or "none"
        return (f"dataset {self.name} {self.version}{' (already built)' if self.reused else ''}: "
                + ", ".join(f"{s} {self.counts.get(s, 0):,}" for s in SPLITS) + f"; excluded: {ex}; {self.path}")


def _folder_name(name: str, fold: str | None) -> str:
    return f"{name}-{fold}" if fold else name


def load_build(path: str | Path) -> DatasetBuild:
    m = json.loads(storage.read_text(storage.join(path, "manifest.json")))
    return DatasetBuild(m["name"], m["version"], str(path), m["counts"], m["excluded"], reused=True)


def build_dataset(spark: SparkSession, cfg: Config, name: str, fold: str | None = None) -> DatasetBuild:
    """Build (or find already built) dataset ``name``; ``fold`` overrides ``split.test_fold``."""
    from moodlake.data.petastorm_io import write_split

    d = cfg.dataset(name)
    if fold:
        if d.split.scheme != "folds":
            raise ValueError(f"dataset {name} is not split by folds; --fold does not apply")
        d = dataclasses.replace(d, split=dataclasses.replace(d.split, test_fold=fold))
    labels = cfg.label_set(d.label_set)
    by_name = frozenset(n for n, classes in cfg.label_sets.items()
                        if n != d.label_set and set(classes) <= set(labels))
    ensure_tables(spark, cfg, (DATASETS,))

    feats = (spark.table(cfg.table("post_features")).where(F.col("source").isin(*d.sources))
             .withColumn("split", _split_column(d)))
    n_rows, fingerprint = feats.select(F.count("*"), F.bit_xor(F.xxhash64("post_id", "post_content_hash",
                                                                               "features_version"))).first()
    if n_rows == 0:
        raise ValueError(f"dataset {name}: no feature rows for sources {list(d.sources)}; "
                         "ingest them and run `moodlake features` first")
    light = feats.select("post_id", "split", "label_set", "label", "labels", "sentiment", "label_agree",
                         F.to_json("label_dist").alias("label_dist_json"))

    def resolve(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = [resolve_labels({k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}, d, labels,
                                   by_name) for r in pdf.to_dict("records")]
            yield pd.DataFrame(rows, columns=_RESOLVED.fieldNames())

    resolved = light.mapInPandas(resolve, _RESOLVED).persist()
    excluded = {r["excluded"]: r["count"] for r in
                resolved.where("excluded IS NOT NULL").groupBy("excluded").count().collect()}
    rows = feats.join(resolved.where("excluded IS NULL").drop("excluded"), "post_id")
    vocab = build_vocab(rows.where("split = 'train'"), cfg.datasets.min_word_count, cfg.datasets.min_tag_count,
                        cfg.datasets.min_char_count)
    version = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION, "definition": to_plain(d), "labels": labels,
        "features": [n_rows, fingerprint], "vocab": vocab.version,
    }, sort_keys=True, default=str).encode()).hexdigest()[:12]

    base = storage.join(cfg.datasets_root, _folder_name(name, fold))
    final = storage.join(base, version)
    if storage.exists(storage.join(final, "manifest.json")):
        resolved.unpersist()
        build = load_build(final)
        log.info(build.summary(), extra=SUMMARY)
        return build
    for stale in storage.listdir(base):  # what a killed build left
        if stale.startswith(".") and ".tmp-" in stale:
            storage.delete(storage.join(base, stale))
    tmp = storage.join(base, f".{version}.tmp-{uuid.uuid4().hex[:8]}")
    storage.makedirs(tmp)
    schema = post_schema(len(labels))
    counts = {}
    bvocab = spark.sparkContext.broadcast(vocab)
    written = None
    for split in SPLITS:
        part = rows.where(F.col("split") == split)
        if split == "train" and d.train_repeat:
            per_source = {r["source"]: r["count"] for r in part.groupBy("source").count().collect()}
            counts[split] = sum(per_source.values())
            written = sum(n * d.train_repeat.get(source, 1) for source, n in per_source.items())
            part = _repeated(part, d.train_repeat)
        else:
            counts[split] = part.count()
        records = part.rdd.map(lambda r: to_record(r.asDict(), bvocab.value))
        write_split(spark, records, storage.join(storage.spark_url(tmp), split), schema)
    resolved.unpersist()
    if sum(counts.values()) + sum(excluded.values()) != n_rows:
        raise RuntimeError(f"dataset {name}: {n_rows} feature rows but {counts} + excluded {excluded}")
    fail_t = cfg.table("feature_failures")
    unusable = spark.table(fail_t).where(F.col("source").isin(*d.sources)).count()
    manifest = {
        "name": name, "fold": fold, "version": version, "format": FORMAT_VERSION,
        "definition": to_plain(d), "label_set": d.label_set, "labels": list(labels),
        "counts": counts, "excluded": excluded, "feature_rows": n_rows,
        "train_rows_written": counts["train"] if written is None else written,
        "unusable_posts": unusable, "features_fingerprint": str(fingerprint),
        "vocab": {"version": vocab.version, "words": len(vocab.words), "tags": len(vocab.tags), "chars": len(vocab.chars)},
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    storage.write_text(storage.join(tmp, "vocab.json"), vocab.to_json())
    storage.write_text(storage.join(tmp, "manifest.json"), json.dumps(manifest, indent=2, default=str))
    storage.rename(tmp, final)
    build = DatasetBuild(name, version, str(final), counts, excluded)
    _register(spark, cfg, build, manifest)
    log.info(build.summary(), extra=SUMMARY)
    return build


def _register(spark: SparkSession, cfg: Config, build: DatasetBuild, manifest: dict) -> None:
    """The build's row in ``moodlake.datasets`` (post builds and segment builds, which have no vocabulary)."""
    from delta.tables import DeltaTable

    row = (build.name if not manifest.get("fold") else f"{build.name}-{manifest['fold']}", build.version, build.path,
           manifest["label_set"], build.counts["train"], build.counts["val"], build.counts["test"],
           sum(build.excluded.values()), (manifest.get("vocab") or {}).get("version"), json.dumps(manifest, default=str),
           dt.datetime.now(dt.timezone.utc))
    src = spark.createDataFrame([row], DATASETS.schema)
    (DeltaTable.forName(spark, cfg.table("datasets")).alias("t")
        .merge(src.alias("s"), "t.name = s.name AND t.version = s.version")
        .whenNotMatchedInsertAll().execute())


def open_dataset(cfg: Config, name: str, fold: str | None = None, version: str | None = None) -> DatasetBuild:
    """The newest (or the given) finished build of a dataset on disk."""
    base = storage.join(cfg.datasets_root, _folder_name(name, fold))
    manifests = {}
    for entry in storage.listdir(base):
        if (not version or entry == version) and not entry.startswith("."):
            try:
                manifests[entry] = json.loads(storage.read_text(storage.join(base, entry, "manifest.json")))
            except FileNotFoundError:
                continue
    if not manifests:
        raise FileNotFoundError(f"no finished build of dataset {_folder_name(name, fold)} under {base}; "
                                f"run `moodlake datasets build {name}`")
    newest = max(manifests, key=lambda entry: manifests[entry]["built_at"])
    return load_build(storage.join(base, newest))
