"""Building Petastorm datasets from post_features: labels per label set, splits, train-only
vocabularies, reconciliation, idempotent and crash-safe builds."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from moodlake.config import DatasetDefinition, SplitSpec
from moodlake.data.build import build_dataset, open_dataset
from moodlake.data.splits import assign_split
from moodlake.data.vocab import Vocab
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.sources.datasets import dataset_source
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from tests import helpers

pytestmark = pytest.mark.spark


def _ids(path: str, split: str) -> list[str]:
    return pq.ParquetDataset(f"{path}/{split}").read(columns=["post_id"]).column("post_id").to_pylist()


def _with_definition(cfg, name: str, d: DatasetDefinition, tmp_path: Path):
    defs = dict(cfg.datasets.definitions)
    defs[name] = d
    return dataclasses.replace(cfg, datasets=dataclasses.replace(cfg.datasets, definitions=defs,
                                                                 root=str(tmp_path / "datasets")))


@pytest.fixture(scope="module")
def synthetic_features(spark, cfg):
    spec = SyntheticSpec(labels=cfg.label_set("mikels8"), seed=31)
    Ingestor(spark, cfg).run(SyntheticSource(n=400, spec=spec, name="ds-synthetic"))
    run_features(spark, cfg)
    return spark.table(cfg.table("post_features")).where("source = 'ds-synthetic'")


def test_synthetic_dataset_reconciles_splits_disjoint_vocab_from_train(spark, cfg, synthetic_features, tmp_path):
    d = dataclasses.replace(cfg.dataset("synthetic"), sources=("ds-synthetic",))
    c = _with_definition(cfg, "ds-synthetic", d, tmp_path)
    build = build_dataset(spark, c, "ds-synthetic")
    feats = {r.post_id: r for r in synthetic_features.collect()}

    ids = {s: _ids(build.path, s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in ids.items()} == build.counts
    assert sum(build.counts.values()) + sum(build.excluded.values()) == len(feats)
    all_ids = ids["train"] + ids["val"] + ids["test"]
    assert len(all_ids) == len(set(all_ids)) == len(feats)            # every row once, none in two splits
    for s, v in ids.items():
        assert all(assign_split(pid, None, d.split) == s for pid in v)

    vocab = Vocab.load(Path(build.path) / "vocab.json")
    counts = Counter(w for pid in ids["train"] for w in feats[pid].text_words[:150])
    assert set(vocab.words[2:]) == {w for w, n in counts.items() if n >= c.datasets.min_word_count}
    manifest = json.loads((Path(build.path) / "manifest.json").read_text())
    assert manifest["vocab"]["version"] == vocab.version and manifest["labels"] == list(cfg.label_set("mikels8"))
    assert manifest["unusable_posts"] == spark.table(cfg.table("feature_failures")).where("source = 'ds-synthetic'").count()

    # labels and masks in the stored rows equal the feature table's
    table = pq.ParquetDataset(f"{build.path}/train").read(columns=["post_id", "label"]).to_pylist()
    labels = cfg.label_set("mikels8")
    assert all(labels[r["label"]] == feats[r["post_id"]].label for r in table)

    again = build_dataset(spark, c, "ds-synthetic")
    assert again.reused and again.version == build.version and again.path == build.path
    assert open_dataset(c, "ds-synthetic").version == build.version
    registry = spark.table(cfg.table("datasets")).where(F.col("version") == build.version).collect()
    assert len(registry) == 1 and registry[0].train_rows == build.counts["train"]


def test_a_killed_build_leaves_nothing_half_written(spark, cfg, synthetic_features, tmp_path):
    d = dataclasses.replace(cfg.dataset("synthetic"), sources=("ds-synthetic",), split=SplitSpec(seed=5))
    c = _with_definition(cfg, "ds-crash", d, tmp_path)
    base = Path(c.datasets_root) / "ds-crash"
    half = base / ".abc123.tmp-deadbeef"
    (half / "train").mkdir(parents=True)
    (half / "train" / "part-0.parquet").write_bytes(b"half a file")
    with pytest.raises(FileNotFoundError):
        open_dataset(c, "ds-crash")  # a temporary folder is no build
    build = build_dataset(spark, c, "ds-crash")
    assert not half.exists()
    assert [p.name for p in base.iterdir()] == [build.version]


def test_label_rules_sentiment_votes_and_multi_label(spark, cfg, tmp_path):
    rows = [
        helpers.j({"id": "joy3", "title": "so happy", "label": "joy", "label_agree": 3, "label_disagree": 2}),
        helpers.j({"id": "joy5", "title": "so happy", "label": "joy", "label_agree": 5, "label_disagree": 0}),
        helpers.j({"id": "fear4", "title": "scary", "label": "fear", "label_agree": 4, "label_disagree": 1}),
        helpers.j({"id": "neutral", "title": "a table", "label": "neutral"}),
        helpers.j({"id": "multi", "title": "joy and fear", "labels": ["joy", "fear"]}),
        helpers.j({"id": "none", "title": "no label at all"}),
    ]
    helpers.write_export(tmp_path / "src", rows, {})
    Ingestor(spark, cfg).run(dataset_source("export", tmp_path / "src", cfg, label_set="ekman7", name="ds-labels"))
    run_features(spark, cfg)
    everything_test = SplitSpec(scheme="hash", train=0.0, val=0.0, test=1.0)
    everything_train = SplitSpec(scheme="hash", train=1.0, val=0.0, test=0.0)

    votes = DatasetDefinition(sources=("ds-labels",), label_set="ekman7", min_agree_train=3, min_agree_eval=5,
                              split=everything_test)
    b = build_dataset(spark, _with_definition(cfg, "ds-votes", votes, tmp_path), "ds-votes")
    assert set(_ids(b.path, "test")) == {"ds-labels:joy5", "ds-labels:neutral"}
    # joy3 and fear4 lack votes for evaluation; 'multi' has no single label, 'none' no label at all
    assert b.excluded == {"fewer_than_5_agreeing_votes": 2, "no_label_in_label_set": 2}
    b = build_dataset(spark, _with_definition(cfg, "ds-votes-train", dataclasses.replace(votes, split=everything_train),
                                              tmp_path), "ds-votes-train")
    assert "ds-labels:joy3" in _ids(b.path, "train")  # 3 agreeing votes are enough to train on

    senti = DatasetDefinition(sources=("ds-labels",), label_set="sentiment2", split=everything_train)
    b = build_dataset(spark, _with_definition(cfg, "ds-senti", senti, tmp_path), "ds-senti")
    got = {r["post_id"]: r["label"] for r in pq.ParquetDataset(f"{b.path}/train").read(columns=["post_id", "label"]).to_pylist()}
    neg, pos = cfg.label_set("sentiment2").index("negative"), cfg.label_set("sentiment2").index("positive")
    assert got == {"ds-labels:joy3": pos, "ds-labels:joy5": pos, "ds-labels:fear4": neg}
    assert b.excluded == {"no_label_in_label_set": 3}  # neutral, mixed joy+fear, none

    multi = DatasetDefinition(sources=("ds-labels",), label_set="ekman7", multi_label=True, split=everything_train)
    b = build_dataset(spark, _with_definition(cfg, "ds-multi", multi, tmp_path), "ds-multi")
    table = {r["post_id"]: r for r in pq.ParquetDataset(f"{b.path}/train").read(columns=["post_id", "label"]).to_pylist()}
    assert table["ds-labels:multi"]["label"] == -1 and b.excluded == {"no_label_in_label_set": 1}


def test_a_joint_dataset_maps_label_sets_by_name_and_splits_each_source_its_own_way(spark, cfg, tmp_path):
    ekman6, ekman7 = cfg.label_set("ekman6"), cfg.label_set("ekman7")
    assert set(ekman6) < set(ekman7)
    Ingestor(spark, cfg).run(SyntheticSource(n=120, spec=SyntheticSpec(labels=ekman6, seed=51),
                                             label_set_name="ekman6", name="joint-images"))
    Ingestor(spark, cfg).run(SyntheticSource(n=120, spec=SyntheticSpec(labels=ekman7, seed=52),
                                             label_set_name="ekman7", name="joint-texts"))
    run_features(spark, cfg)
    specs = {"joint-images": SplitSpec(train=0.6, val=0.2, test=0.2, seed=0),
             "joint-texts": SplitSpec(train=0.8, val=0.1, test=0.1, seed=7)}
    d = DatasetDefinition(sources=tuple(specs), label_set="ekman7", multi_label=True, source_splits=specs)
    build = build_dataset(spark, _with_definition(cfg, "joint", d, tmp_path), "joint")
    feats = {r.post_id: r for r in spark.table(cfg.table("post_features"))
             .where(F.col("source").isin(*specs)).collect()}
    unusable = spark.table(cfg.table("feature_failures")).where(F.col("source").isin(*specs)).count()
    assert sum(build.counts.values()) == len(feats) == 240 - unusable and not build.excluded
    assert len({f.source for f in feats.values()}) == 2
    for split in ("train", "val", "test"):
        for r in pq.ParquetDataset(f"{build.path}/{split}").read(columns=["post_id", "label"]).to_pylist():
            f = feats[r["post_id"]]
            assert assign_split(r["post_id"], None, specs[f.source]) == split
            assert ekman7[r["label"]] == f.label  # ekman6 names land on the same ekman7 class
    with pytest.raises(Exception, match="source_splits"):
        DatasetDefinition(sources=("a",), source_splits={"b": SplitSpec()})

    # oversampling the small source: its training rows written 3 times, val and test untouched
    rd = dataclasses.replace(d, train_repeat={"joint-images": 3})
    repeated = build_dataset(spark, _with_definition(cfg, "joint-repeat", rd, tmp_path), "joint-repeat")
    assert repeated.counts == build.counts  # posts per split, each once
    written = _ids(repeated.path, "train")
    assert len(set(written)) == len(written)  # copies are <post_id>#1, #2
    train_ids = Counter(pid.split("#")[0] for pid in written)
    assert set(train_ids) == set(_ids(build.path, "train"))
    assert {feats[pid].source: n for pid, n in train_ids.items()} == {"joint-images": 3, "joint-texts": 1}
    manifest = json.loads((Path(repeated.path) / "manifest.json").read_text())
    assert manifest["train_rows_written"] == sum(train_ids.values())
    for split in ("val", "test"):
        assert sorted(_ids(repeated.path, split)) == sorted(_ids(build.path, split))
    with pytest.raises(Exception, match="train_repeat"):
        DatasetDefinition(sources=("a",), train_repeat={"a": 0})

    # a sample of one source as training posts only: the rest is excluded as sampled_out, and counted
    half = SplitSpec(train=0.5, val=0.0, test=0.0, drop=0.5, seed=7)
    sd = dataclasses.replace(d, source_splits={**specs, "joint-texts": half})
    sampled = build_dataset(spark, _with_definition(cfg, "joint-sampled", sd, tmp_path), "joint-sampled")
    texts = {pid for pid, f in feats.items() if f.source == "joint-texts"}
    kept = {pid for pid in texts if assign_split(pid, None, half) == "train"}
    assert 0 < len(kept) < len(texts)
    assert sampled.excluded == {"sampled_out": len(texts) - len(kept)}
    assert set(_ids(sampled.path, "train")) & texts == kept
    assert not {pid for split in ("val", "test") for pid in _ids(sampled.path, split)} & texts
    assert sum(sampled.counts.values()) + len(texts) - len(kept) == len(feats)
