"""Computational sequences (.csd): the reader on the real CMU-MOSI labels, on every kind of broken
video and file, and the synthetic videos written and read back. No Spark."""
from __future__ import annotations

import ast
from pathlib import Path

import h5py
import numpy as np
import pytest

from moodlake.sources.csd import CsdError, CsdFailure, CsdFile, CsdRecord, read_csd, write_csd
from moodlake.sources.synthetic_video import (EMOTIONS, LABELS_ROOT, MODALITIES, ROOTS, SyntheticVideoSpec, make_video,
                                              write_synthetic_videos)
from tests.helpers import BAD_VIDEOS, write_bad_videos_csd, write_unusable_csds

REPO = Path(__file__).resolve().parents[1]
MOSI = "cmu_mosi/CMU_MOSI_Opinion_Labels.csd"
SMALL = SyntheticVideoSpec(videos=4, segments=3, segment_s=(1.0, 2.0))


@pytest.fixture(scope="module")
def mosi(shared_data):
    return shared_data / MOSI


def test_real_mosi_labels_read_as_labels(mosi):
    # what h5py itself says the file holds, not the code under test
    with h5py.File(mosi, "r") as f:
        data = f["Opinion Segment Labels/data"]
        truth = {v: (data[v]["intervals"][()], data[v]["features"][()]) for v in data}
    assert len(truth) == 93 and sum(len(iv) for iv, _ in truth.values()) == 2199

    got = list(read_csd(mosi, ordered=False))
    assert all(isinstance(r, CsdRecord) for r in got), [r for r in got if isinstance(r, CsdFailure)]
    assert [r.video_id for r in got] == list(truth)
    assert sum(r.rows for r in got) == 2199
    for r in got:
        iv, ft = truth[r.video_id]
        assert r.sequence == "Opinion Segment Labels" and r.feature_names == ("sentiment score",)
        assert r.intervals.dtype == np.float64 and r.intervals.shape == (len(iv), 2)
        assert r.features.dtype == np.float32 and r.features.shape == (len(iv), 1)
        np.testing.assert_array_equal(r.intervals, iv.astype(np.float64))
        np.testing.assert_array_equal(r.features, ft)
        assert (r.intervals[:, 1] >= r.intervals[:, 0]).all()
        assert r.features.min() >= -3 and r.features.max() <= 3
    first = got[0]
    assert first.video_id == "03bSnISJMiM" and first.rows == 13
    assert first.features[0, 0] == pytest.approx(2.4) and first.intervals[0] == pytest.approx([51.904533, 55.94535])
    assert first.metadata["dataset name"] == "CMU-MOSI" and first.metadata["root name"] == "Opinion Segment Labels"
    values = np.concatenate([r.features[:, 0] for r in got])
    assert values.min() == -3.0 and values.max() == 3.0


def test_real_mosi_segments_out_of_time_order_fail_as_a_feature_sequence(mosi):
    """Two videos list a segment that starts before the one above it: fine for labels (segments are
    numbered), a failure for a time series."""
    got = list(read_csd(mosi))
    failed = {r.video_id: r for r in got if isinstance(r, CsdFailure)}
    assert sorted(failed) == ["VbQk4H8hgr0", "d6hH302o4v8"]
    assert {r.reason_code for r in failed.values()} == {"intervals_out_of_order"}
    assert "step 45 starts at 66.6311 s, before step 44 (153.713 s; 1 such)" in failed["VbQk4H8hgr0"].reason
    assert failed["VbQk4H8hgr0"].rows == 55 and failed["VbQk4H8hgr0"].input_ref.endswith(
        "::Opinion Segment Labels/VbQk4H8hgr0")
    assert len(got) == 93


def test_each_broken_video_fails_with_its_reason_and_the_good_ones_are_read(tmp_path):
    path = write_bad_videos_csd(tmp_path / "bad.csd")
    got = {r.video_id: r for r in read_csd(path)}
    assert set(got) == {"good", "good2", *BAD_VIDEOS}
    for vid in ("good", "good2"):
        assert isinstance(got[vid], CsdRecord) and got[vid].feature_names == ("a", "b", "c", "d")
    assert got["good2"].rows == 5 and got["good2"].intervals[0].tolist() == [10.0, 10.5]
    codes = {vid: r.reason_code for vid, r in got.items() if isinstance(r, CsdFailure)}
    assert codes == BAD_VIDEOS
    reasons = {vid: got[vid].reason for vid in BAD_VIDEOS}
    assert all(r.startswith(f"video {vid} of 'bad': ") for vid, r in reasons.items())
    assert "has no 'features' dataset" in reasons["no_features"]
    assert "has no 'intervals' dataset" in reasons["no_intervals"]
    assert "'features' has 3 rows but 'intervals' 4" in reasons["rows_differ"]
    assert "'features' has 3 columns; the sequence's videos have 4 (its dimension names)" in reasons["three_columns"]
    assert "'features' holds 1 NaN value(s), the first in row 2" in reasons["nan_feature"]
    assert "'intervals' holds 1 infinite value(s), the first in row 2" in reasons["inf_interval"]
    assert "interval 0 ends at 0 s, before it starts at 0.5 s (4 such)" in reasons["ends_before_start"]
    assert "step 2 starts at 0.5 s, before step 1 (1 s; 1 such)" in reasons["goes_back"]
    assert "holds |S1 values, not numbers" in reasons["text_features"]
    # the rows a failure stands for, as listed (what the segment counts lose with it)
    assert got["rows_differ"].rows == 4 and got["empty"].rows == 0 and got["a_dataset"].rows == 0


def test_a_label_sequence_may_go_back_in_time_but_not_end_before_it_starts(tmp_path):
    path = write_bad_videos_csd(tmp_path / "bad.csd")
    got = {r.video_id: r for r in read_csd(path, ordered=False)}
    assert isinstance(got["goes_back"], CsdRecord)
    assert got["ends_before_start"].reason_code == "interval_end_before_start"


@pytest.mark.parametrize("kind, what", [
    ("missing", "no such file"),
    ("not_hdf5", "not an HDF5 file"),
    ("empty", "no computational sequence in it"),
    ("no_data_group", "sequence 'seq' has no 'data' group"),
    ("data_not_group", "'seq/data' is a dataset, not a group of videos"),
    ("root_dataset", "top-level entry 'seq' is a dataset"),
    ("truncated", "HDF5 file that cannot be opened (Unable to synchronously open file (truncated file"),
])
def test_an_unusable_file_is_one_clear_error_naming_it(tmp_path, kind, what):
    path = write_unusable_csds(tmp_path)[kind]
    with pytest.raises(CsdError) as e:
        list(read_csd(path))
    assert str(e.value).startswith(f"{path}: ") and what in str(e.value)
    assert e.value.path == str(path)
    assert isinstance(e.value, ValueError)


def test_dimension_names_that_fit_no_video_are_dropped_and_the_common_width_rules(tmp_path):
    iv = np.array([[0.0, 1.0], [1.0, 2.0]])
    videos = {"a": (iv, np.zeros((2, 3))), "b": (iv, np.ones((2, 3))), "c": (iv, np.ones((2, 2)))}
    path = write_csd(tmp_path / "x.csd", "x", videos, {"dimension names": ["only", "two", "names", "four"]})
    got = {r.video_id: r for r in read_csd(path)}
    assert got["a"].feature_names is None and isinstance(got["b"], CsdRecord)
    assert got["c"].reason_code == "dims_mismatch" and got["c"].reason.endswith("the sequence's videos have 3")


def test_metadata_values_are_json_decoded(mosi):
    with CsdFile(mosi) as f:
        assert f.sequences == ["Opinion Segment Labels"]
        md = f.metadata("Opinion Segment Labels")
    assert md["dimension names"] == ["sentiment score"]
    assert md["computational sequence description"] == "Sentiment scores for opinions in CMU-MOSI Dataset"
    assert md["md5"] is None and md["alignment compatible"] is True


def _williams_emotions() -> tuple[str, ...]:
    """EMOTIONS of models/williams.py, read from the source (importing it would import torch)."""
    tree = ast.parse((REPO / "models" / "williams.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EMOTIONS")
    return ast.literal_eval(node.value)


def test_synthetic_videos_round_trip_through_the_reader(tmp_path):
    files = write_synthetic_videos(tmp_path, SMALL)
    assert EMOTIONS == _williams_emotions()
    labels = list(read_csd(files.labels, ordered=False))
    assert [r.video_id for r in labels] == [f"synth{i:04d}" for i in range(4)]
    for i, r in enumerate(labels):
        v = make_video(SMALL, i)
        assert r.sequence == LABELS_ROOT and r.feature_names == EMOTIONS and r.rows == 3
        np.testing.assert_array_equal(r.intervals, v.segments)
        np.testing.assert_array_equal(r.features, v.intensities.astype(np.float32))
        assert r.features.min() >= 0 and r.features.max() <= 3
        np.testing.assert_allclose(sum(v.parts[m] for m in MODALITIES), v.intensities)
    for m, path, hz, dims in (("audio", files.audio, 100, 74), ("visual", files.visual, 30, 35),
                              ("text", files.text, None, 300)):
        got = list(read_csd(path))
        assert all(isinstance(r, CsdRecord) for r in got)
        for i, r in enumerate(got):
            iv, ft = make_video(SMALL, i).sequences[m]
            assert r.sequence == ROOTS[m] and r.dims == dims and len(r.feature_names) == dims
            np.testing.assert_array_equal(r.intervals, iv)
            np.testing.assert_array_equal(r.features, ft)
            lengths = np.diff(r.intervals, axis=1)[:, 0]
            if hz:  # a fixed rate through the whole video, pauses included
                np.testing.assert_allclose(lengths, 1 / hz)
                assert r.intervals[-1, 1] > labels[i].intervals[-1, 1]
            else:   # words inside the segments, ~0.3 s
                assert 0.25 < lengths.mean() < 0.35 and lengths.max() <= 0.4
                seg = labels[i].intervals
                assert all(((seg[:, 0] <= a) & (b <= seg[:, 1] + 1e-9)).any() for a, b in r.intervals)


def test_synthetic_videos_are_seeded():
    a, b = make_video(SMALL, 2), make_video(SMALL, 2)
    np.testing.assert_array_equal(a.sequences["audio"][1], b.sequences["audio"][1])
    other = make_video(SyntheticVideoSpec(videos=4, segments=3, segment_s=(1.0, 2.0), seed=8), 2)
    assert not np.array_equal(a.intensities, other.intensities)


def _ridge_mae(x: np.ndarray, y: np.ndarray, train: np.ndarray, lam: float = 10.0) -> float:
    x = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(x[train].T @ x[train] + lam * np.eye(x.shape[1]), x[train].T @ y[train])
    return float(np.abs(np.clip(x[~train] @ w, 0, 3) - y[~train]).mean())


def test_the_fused_modalities_predict_the_intensities_better_than_any_one_alone():
    """Segment means of each modality, a ridge regression on 24 videos, MAE on the other 6."""
    spec = SyntheticVideoSpec()
    videos = [make_video(spec, i) for i in range(spec.videos)]

    def pooled(v, m):
        iv, ft = v.sequences[m]
        mid = iv.mean(1)
        return np.stack([ft[(mid >= s) & (mid < e)].mean(0) for s, e in v.segments])

    y = np.concatenate([v.intensities for v in videos])
    x = {m: np.concatenate([pooled(v, m) for v in videos]) for m in MODALITIES}
    train = np.arange(len(y)) < 24 * spec.segments
    mae = {m: _ridge_mae(x[m], y, train) for m in MODALITIES}
    fused = _ridge_mae(np.concatenate([x[m] for m in MODALITIES], 1), y, train)
    chance = float(np.abs(y[~train] - y[train].mean(0)).mean())
    assert fused < 0.5 * min(mae.values()), (fused, mae)
    assert max(mae.values()) < 0.8 * chance, (mae, chance)


# --------------------------------------------------------------------------- rows of the ingest (no Spark session)


def test_a_feature_record_becomes_chunks_of_bounded_size_that_rebuild_it(tmp_path):
    from moodlake.video_ingest import video_rows

    files = write_synthetic_videos(tmp_path, SMALL)
    rec = next(read_csd(files.audio))
    rows = video_rows(rec, "synth", chunk_bytes=4 * 74 * 100)  # 100 steps a chunk
    assert [r["chunk"] for r in rows] == list(range(len(rows))) and len(rows) == -(-rec.rows // 100)
    assert {r["chunks"] for r in rows} == {len(rows)} and {r["video_steps"] for r in rows} == {rec.rows}
    assert [r["steps"] for r in rows][:-1] == [100] * (len(rows) - 1)
    assert [r["step_start"] for r in rows] == [100 * c for c in range(len(rows))]
    np.testing.assert_array_equal(np.concatenate([r["features"] for r in rows]).astype(np.float32), rec.features)
    np.testing.assert_array_equal(np.concatenate([r["intervals"] for r in rows]), rec.intervals)
    assert len({r["record_hash"] for r in rows}) == 1 and len({r["content_hash"] for r in rows}) == len(rows)
    assert rows[0]["feature_names"][:2] == ["audio_000", "audio_001"] and rows[0]["modality"] == "COVAREP"
    whole = video_rows(rec, "synth")  # the default ~1 MiB: one row
    assert len(whole) == 1 and whole[0]["record_hash"] == rows[0]["record_hash"]
    assert video_rows(rec, "other")[0]["record_hash"] != rows[0]["record_hash"]


def test_a_labels_record_becomes_one_row_per_segment(mosi):
    from moodlake.video_ingest import segment_rows

    rec = next(read_csd(mosi, ordered=False))
    rows = segment_rows(rec, "cmu-mosi")
    assert len(rows) == 13 and rows[0]["segment_id"] == "03bSnISJMiM[0]" and rows[12]["segment"] == 12
    assert rows[0]["label_values"] == [pytest.approx(2.4)] and rows[0]["label_names"] == ["sentiment score"]
    assert (rows[0]["start_s"], rows[0]["end_s"]) == (float(np.float32(51.904533)), float(np.float32(55.94535)))


def test_the_plan_lists_every_video_and_flags_one_given_twice(tmp_path, mosi):
    from moodlake.ingest import IngestError
    from moodlake.video_ingest import CsdRequest, commits, plan

    files = write_synthetic_videos(tmp_path / "a", SMALL)
    again = write_synthetic_videos(tmp_path / "b", SMALL)
    items = plan(CsdRequest("s", (str(files.audio), str(again.audio)), (str(mosi),)))
    assert len(items) == 93 + 4 + 4
    assert [it.role for it in items[:93]] == ["labels"] * 93
    dup = [it for it in items if it.error]
    assert [it.entry.path for it in dup] == [str(again.audio)] * 4
    assert dup[0].error[0] == "duplicate_input" and f"(first in {files.audio})" in dup[0].error[1]
    assert items[-1].dims == 74 and items[-1].names[0] == "audio_000"
    # commits: at most N videos, and about the byte budget
    assert [len(c) for c in commits(items, 40)] == [40, 40, 21]
    small = commits(items[93:], 100, max_bytes=4 * 74 * 2000)
    assert all(sum(4 * it.entry.rows * it.entry.dims for it in c) <= 4 * 74 * 2000 for c in small if len(c) > 1)
    with pytest.raises(IngestError, match="given more than once"):
        plan(CsdRequest("s", (str(files.audio),), (str(files.audio),)))
    with pytest.raises(CsdError, match="not an HDF5 file"):
        plan(CsdRequest("s", (str(files.audio), str(write_unusable_csds(tmp_path / "u")["not_hdf5"])), ()))
