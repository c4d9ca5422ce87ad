"""Segment datasets (issue #20): synthetic csd files ingested, aligned into Petastorm splits by video;
counts reconcile with segment_labels, no video is in two splits, rows equal build_segments on the
files' own arrays, and a second build is the same version. The lake and the dataset are the
session's ``video_lake`` fixture (tests/video_lake.py)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from pyspark.sql import functions as F

from moodlake import cli
from moodlake.config import ConfigError, load_config
from moodlake.data.align import build_segments
from moodlake.data.segments import build_segment_dataset
from moodlake.data.splits import assign_split
from moodlake.sources.csd import read_csd
from moodlake.sources.synthetic_video import EMOTIONS, LABELS_ROOT

pytestmark = [pytest.mark.spark, pytest.mark.data]


def test_segments_section_is_validated_and_unknown_keys_fail():
    seg = {"sources": ["x"], "split": {"scheme": "hash"}, "segments": {"maxlen": 5}}
    cfg = load_config(environ={}, layers=[("exp.yaml", {"datasets": {"definitions": {"v": seg}}})])
    assert cfg.dataset("v").segments.maxlen == 5 and cfg.dataset("v").segments.reference == "text"
    assert load_config(environ={}).dataset("synthetic-video").segments.modalities["visual"] == "FACET 4.2"
    bad = {**seg, "segments": {"maxlen": 5, "maxlenn": 3}}
    with pytest.raises(ConfigError, match=r"datasets\.definitions\.v\.segments\.maxlenn: unknown key"):
        load_config(environ={}, layers=[("exp.yaml", {"datasets": {"definitions": {"v": bad}}})])
    with pytest.raises(ConfigError, match="exactly one source"):
        load_config(environ={}, layers=[("exp.yaml", {"datasets": {"definitions": {"v": {**seg, "sources": ["a", "b"]}}}})])


def _read(url: str) -> list[dict]:
    from petastorm import make_reader

    with make_reader(url, num_epochs=1, workers_count=1, shuffle_row_groups=False) as reader:
        return [r._asdict() for r in reader]


def test_segment_dataset_reconciles_splits_by_video_and_matches_alignment(spark, video_lake, capsys):
    source, spec, files, cfg, build = (video_lake.source, video_lake.spec, video_lake.files, video_lake.cfg,
                                       video_lake.build)
    split, maxlen = cfg.dataset("video").split, cfg.dataset("video").segments.maxlen
    labels = spark.table(cfg.table("segment_labels")).where((F.col("source") == source)
                                                            & (F.col("sequence") == LABELS_ROOT))
    n = labels.count()
    assert n == spec.videos * spec.segments + 2  # and the ghost's 2: a labelled video with no features, dropped
    assert build.excluded == {"video_has_no_text_features": 2}
    assert sum(build.counts.values()) + sum(build.excluded.values()) == n
    assert all(build.counts[s] > 0 for s in ("train", "val", "test"))
    assert build.counts == {"train": 208, "val": 56, "test": 56}  # what tests/video_lake.py promises to training tests

    rows = {s: _read(build.url(s)) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in rows.items()} == build.counts
    ids = [r["segment_id"] for v in rows.values() for r in v]
    assert len(ids) == len(set(ids)) == n - 2
    video_split = {}
    for s, v in rows.items():
        for r in v:
            assert video_split.setdefault(r["video_id"], s) == s               # no video in two splits
            assert assign_split(f"{source}:{r['video_id']}", None, split) == s
            assert r["audio"].shape == (maxlen, spec.audio_dim) and r["visual"].shape == (maxlen, spec.visual_dim)
            assert r["text"].shape == (maxlen, spec.text_dim) and r["labels"].shape == (len(EMOTIONS),)
            assert r["audio"].dtype == np.float32 and 1 <= r["length"] <= maxlen
            assert not r["text"][r["length"]:].any() and r["text"][:r["length"]].any(axis=1).all()
    assert len(video_split) == spec.videos

    # one video's rows equal build_segments on the csd files' own arrays
    row = sorted(rows["test"], key=lambda r: r["segment_id"])[0]
    video = row["video_id"]
    streams = {m: next((rec.intervals, rec.features) for rec in read_csd(getattr(files, m)) if rec.video_id == video)
               for m in ("audio", "visual", "text")}
    lab = next(rec for rec in read_csd(files.labels) if rec.video_id == video)
    direct = build_segments({video: streams}, [video] * len(lab.intervals), list(range(len(lab.intervals))),
                            lab.intervals, lab.features, reference="text", maxlen=maxlen)
    seg = int(row["segment_id"].rsplit("[", 1)[1].rstrip("]"))
    for m in ("audio", "visual", "text"):
        np.testing.assert_allclose(row[m], direct.features[m][seg], rtol=1e-6, atol=1e-6)
    assert row["length"] == direct.lengths[seg]
    np.testing.assert_allclose(row["labels"], direct.labels[seg])

    recorded = spark.table(cfg.table("datasets")).where("name = 'video'")
    registered = recorded.count()  # the fixture's build among them
    again = build_segment_dataset(spark, cfg, "video")
    assert (again.version, again.path, again.reused) == (build.version, build.path, True)
    capsys.readouterr()
    cli._datasets(spark, cfg, argparse.Namespace(action="build", name="video", fold=None, all_folds=False))
    assert f"dataset video {build.version} (already built)" in capsys.readouterr().out  # the CLI dispatches
    with pytest.raises(SystemExit, match="split by video"):
        cli._datasets(spark, cfg, argparse.Namespace(action="build", name="video", fold=None, all_folds=True))
    assert recorded.count() == registered  # neither the second build nor the CLI registered again
    assert recorded.where(F.col("version") == build.version).count() == 1  # the fixture's build did, once
    r = recorded.where(F.col("version") == build.version).first()
    assert (r.train_rows, r.val_rows, r.test_rows, r.excluded_rows, r.label_set) == \
           (build.counts["train"], build.counts["val"], build.counts["test"], 2, LABELS_ROOT)
