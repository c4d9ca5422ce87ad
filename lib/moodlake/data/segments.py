"""Build a segment dataset (issue #20) from ``moodlake.video_features`` and ``moodlake.segment_labels``.

``build_segment_dataset(spark, cfg, name)`` takes a definition with a ``segments:`` section
(:class:`moodlake.config.SegmentSpec`; one source in ``sources``, ``split`` with scheme hash) and
writes, like :func:`moodlake.data.build.build_dataset`::

    <datasets root>/<name>/<version>/
        manifest.json  train/  val/  test/

- Each video's feature rows of the configured roots are reassembled from their chunks in order,
  and the label rows of the ``labels`` sequence are aligned with
  :func:`moodlake.data.align.build_segments` on the driver: a few thousand videos of CMU-MOSEI's
  size fit a driver's memory; a larger source would align per video in ``mapInPandas``.
- Segments with no step (``lengths == 0``) are dropped and counted by reason in the manifest:
  ``segments of the labels sequence = train + val + test + excluded``.
- Splits are by video: :func:`moodlake.data.splits.assign_split` of ``<source>:<video_id>``, so
  every segment of a video is in the same split and none is in two.
- Splits are Petastorm datasets (:func:`segment_schema`), readable with ``petastorm.make_reader``.
- The version is a hash of the definition and the content hashes of the rows read: building
  again with nothing changed finds the finished version and returns it (no new row in
  ``moodlake.datasets``); a killed build leaves only a temporary folder, removed by the next one.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from moodlake import storage
from moodlake.config import Config, to_plain
from moodlake.data.build import SPLITS, DatasetBuild, _register, load_build
from moodlake.data.splits import assign_split
from moodlake.logs import SUMMARY
from moodlake.tables import DATASETS, ensure_tables

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the row layout of segment_schema changes
MODALITIES = ("audio", "visual", "text")


def segment_schema(maxlen: int, dims: dict[str, int], num_labels: int):
    """The Unischema of a segment dataset: segment_id, video_id (str), audio / visual / text float32
    [maxlen, d] (zeros after ``length`` steps and where a modality did not cover a word), length
    int32 (real steps), labels float32 [num_labels]."""
    from petastorm.codecs import NdarrayCodec, ScalarCodec
    from petastorm.unischema import Unischema, UnischemaField
    from pyspark.sql.types import IntegerType, StringType

    return Unischema("MoodLakeSegment", [
        UnischemaField("segment_id", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("video_id", np.str_, (), ScalarCodec(StringType()), False),
        *[UnischemaField(m, np.float32, (maxlen, dims[m]), NdarrayCodec(), False) for m in MODALITIES],
        UnischemaField("length", np.int32, (), ScalarCodec(IntegerType()), False),
        UnischemaField("labels", np.float32, (num_labels,), NdarrayCodec(), False),
    ])


def video_streams(rows, roots: dict[str, str]) -> dict[str, dict]:
    """video_id -> {modality: (intervals [n, 2], features [n, d])} from ``moodlake.video_features`` rows
    (attributes modality, video_id, chunk, dims, intervals, features: as stored, or flattened), chunks
    concatenated in order; ``roots``: model modality -> root name (rows of other roots are left out).
    What :func:`moodlake.data.align.build_segments` reads, for dataset builds and segment scoring."""
    by_root = {root: m for m, root in roots.items()}
    parts: dict[tuple[str, str], list] = {}
    for r in rows:
        if r.modality in by_root:
            parts.setdefault((r.video_id, by_root[r.modality]), []).append(r)
    videos: dict[str, dict] = {}
    for (video, m), chunks in parts.items():
        chunks.sort(key=lambda r: r.chunk)
        iv = np.concatenate([np.asarray(r.intervals, dtype=np.float64).reshape(-1, 2) for r in chunks])
        f = np.concatenate([np.asarray(r.features, dtype=np.float32).reshape(-1, r.dims) for r in chunks])
        videos.setdefault(video, {})[m] = (iv, f)
    return videos


def _read_videos(spark, cfg: Config, source: str, roots: dict[str, str]) -> dict[str, dict]:
    """video_id -> {modality: (intervals [n, 2], features [n, d])} of ``source``'s videos."""
    rows = (spark.table(cfg.table("video_features"))
            .where((F.col("source") == source) & F.col("modality").isin(*roots.values()))
            .select("modality", "video_id", "chunk", "dims", "intervals", "features").collect())
    return video_streams(rows, roots)


def build_segment_dataset(spark: SparkSession, cfg: Config, name: str) -> DatasetBuild:
    """Build (or find already built) the segment dataset ``name`` (a definition with ``segments:``)."""
    from moodlake.data.align import build_segments
    from moodlake.data.petastorm_io import write_split

    d = cfg.dataset(name)
    spec = d.segments
    if spec is None:
        raise ValueError(f"dataset {name} is not a segment dataset (no segments: section)")
    source = d.sources[0]
    roots = dict(spec.modalities)
    ensure_tables(spark, cfg, (DATASETS,))

    labels_df = (spark.table(cfg.table("segment_labels"))
                 .where((F.col("source") == source) & (F.col("sequence") == spec.labels)))
    feats_df = (spark.table(cfg.table("video_features"))
                .where((F.col("source") == source) & F.col("modality").isin(*roots.values())))
    n_labels, label_fp = labels_df.select(F.count("*"), F.bit_xor(F.xxhash64("video_id", "segment", "content_hash"))).first()
    n_chunks, feat_fp = feats_df.select(F.count("*"), F.bit_xor(F.xxhash64("modality", "video_id", "chunk",
                                                                             "content_hash"))).first()
    if n_labels == 0:
        raise ValueError(f"dataset {name}: no segments of {spec.labels!r} for source {source!r}; "
                         "run `moodlake ingest csd ... --labels ...` first")
    version = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION, "definition": to_plain(d),
        "labels": [n_labels, label_fp], "features": [n_chunks, feat_fp],
    }, sort_keys=True, default=str).encode()).hexdigest()[:12]
    base = storage.join(cfg.datasets_root, name)
    final = storage.join(base, version)
    if storage.exists(storage.join(final, "manifest.json")):
        build = load_build(final)
        log.info(build.summary(), extra=SUMMARY)
        return build

    label_rows = labels_df.select("video_id", "segment", "segment_id", "start_s", "end_s", "label_values",
                                  "label_names").orderBy("video_id", "segment").collect()
    names = list(label_rows[0].label_names)
    bad = [r.segment_id for r in label_rows if len(r.label_values) != len(names)]
    if bad:
        raise ValueError(f"dataset {name}: segments {bad[:5]} have not the {len(names)} labels {names}")
    videos = _read_videos(spark, cfg, source, roots)
    dims = {}
    for streams in videos.values():
        for m, (_, f) in streams.items():
            dims.setdefault(m, f.shape[1])
    missing = sorted(set(MODALITIES) - set(dims))
    if missing:
        raise ValueError(f"dataset {name}: no rows of {[roots[m] for m in missing]} for source {source!r}")
    seq = build_segments(videos, [r.video_id for r in label_rows], [r.segment for r in label_rows],
                         [(r.start_s, r.end_s) for r in label_rows], [list(r.label_values) for r in label_rows],
                         reference=spec.reference, maxlen=spec.maxlen, keep=spec.keep, dims=dims)

    excluded: dict[str, int] = {}
    rows: dict[str, list] = {s: [] for s in SPLITS}
    videos_in: dict[str, set] = {s: set() for s in SPLITS}
    for i, r in enumerate(label_rows):
        if seq.lengths[i] == 0:
            has_ref = spec.reference in videos.get(r.video_id, {})
            reason = "no_reference_step_in_segment" if has_ref else f"video_has_no_{spec.reference}_features"
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        split = assign_split(f"{source}:{r.video_id}", None, d.split)
        if split not in rows:  # the hash scheme's drop fraction
            excluded[split] = excluded.get(split, 0) + 1
            continue
        videos_in[split].add(r.video_id)
        rows[split].append({"segment_id": r.segment_id, "video_id": r.video_id,
                            **{m: seq.features[m][i] for m in MODALITIES},
                            "length": np.int32(seq.lengths[i]), "labels": seq.labels[i]})
    counts = {s: len(rows[s]) for s in SPLITS}
    if sum(counts.values()) + sum(excluded.values()) != n_labels:
        raise RuntimeError(f"dataset {name}: {n_labels} segments but {counts} + excluded {excluded}")
    empty = [s for s in SPLITS if not rows[s]]
    if empty:
        raise ValueError(f"dataset {name}: no segment in {empty} ({sum(map(len, videos_in.values()))} videos); "
                         "change split's fractions or seed")

    for stale in storage.listdir(base):  # what a killed build left
        if stale.startswith(".") and ".tmp-" in stale:
            storage.delete(storage.join(base, stale))
    tmp = storage.join(base, f".{version}.tmp-{uuid.uuid4().hex[:8]}")
    storage.makedirs(tmp)
    schema = segment_schema(spec.maxlen, dims, len(names))
    for split in SPLITS:
        write_split(spark, rows[split], storage.join(storage.spark_url(tmp), split), schema)
    manifest = {
        "name": name, "fold": None, "version": version, "format": FORMAT_VERSION, "kind": "segments",
        "definition": to_plain(d), "source": source, "label_set": spec.labels, "labels": names,
        "dims": dims, "maxlen": spec.maxlen, "reference": spec.reference,
        "counts": counts, "excluded": excluded, "segments": n_labels,
        "videos": {s: len(videos_in[s]) for s in SPLITS},
        "labels_fingerprint": str(label_fp), "features_fingerprint": str(feat_fp),
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    storage.write_text(storage.join(tmp, "manifest.json"), json.dumps(manifest, indent=2, default=str))
    storage.rename(tmp, final)
    build = DatasetBuild(name, version, str(final), counts, excluded)
    _register(spark, cfg, build, manifest)
    log.info(build.summary(), extra=SUMMARY)
    return build
