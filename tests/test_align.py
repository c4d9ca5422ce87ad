"""Word alignment and segment sequences (moodlake.data.align, issue #20): hand-computed values on a
small video, invariants, and a plain loop implementation of the same rules on random data. No Spark."""
from __future__ import annotations

import json

import numpy as np
import pytest

from moodlake.data.align import EPS, align_to_reference, build_segments, cut_or_pad, segment_steps

# A small video. Words (the reference): w2 has zero length, no audio row overlaps w3.
WORDS = np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 2.5], [3.0, 4.0], [4.0, 6.0]])
TEXT = np.arange(15.0).reshape(5, 3)  # word k's vector: (3k, 3k + 1, 3k + 2)
# Audio rows, out of order: a zero-length row inside w1, a gap from 3.0 to 4.5, a row covering a
# quarter of w4.
AUDIO_IV = np.array([[1.5, 3.0], [0.0, 0.5], [2.0, 2.0], [4.5, 5.0], [0.5, 1.5]])
AUDIO = np.array([[5.0, 50.0], [1.0, 10.0], [100.0, 100.0], [7.0, 70.0], [3.0, 30.0]])
# By hand, overlap-weighted:
#   w0 [0, 1]:   rows [0, .5] and [.5, 1.5] overlap .5 each   -> (.5 * 1 + .5 * 3) / 1   = 2
#   w1 [1, 2.5]: [.5, 1.5] by .5, [1.5, 3] by 1, [2, 2] by 0  -> (.5 * 3 + 1 * 5) / 1.5 = 13/3
#                (the SDK's plain mean of the two rows: 4)
#   w2 [2.5, 2.5]: zero length, nothing overlaps it            -> zeros, not present
#   w3 [3, 4]:   [1.5, 3] only touches it, the gap follows     -> zeros, not present
#   w4 [4, 6]:   [4.5, 5] by .5                                -> 7 (the older mmdata SDK: .5 * 7 / 2 = 1.75)
ALIGNED = np.array([[2.0, 20.0], [13 / 3, 130 / 3], [0.0, 0.0], [0.0, 0.0], [7.0, 70.0]])
PRESENT = np.array([True, True, False, False, True])
# Segments: s0 holds w0, w1 (w2 is zero-length); s1 holds w0 (by .5), w1, w3, w4; s2 only touches w4.
SEGMENTS = np.array([[0.0, 2.6], [0.5, 6.0], [6.0, 7.0]])


def test_overlap_weighted_average_by_hand():
    with np.errstate(all="raise"):  # the zero-length word and row divide nothing by zero
        aligned, present = align_to_reference(WORDS, AUDIO_IV, AUDIO)
    np.testing.assert_allclose(aligned, ALIGNED, rtol=1e-15)
    np.testing.assert_array_equal(present, PRESENT)
    assert aligned.dtype == np.float64


def test_words_of_each_segment_by_hand():
    offsets, steps = segment_steps(WORDS, SEGMENTS)
    assert offsets.tolist() == [0, 2, 6, 6]
    assert steps.tolist() == [0, 1, 0, 1, 3, 4]


def test_cut_keeps_the_last_or_first_steps_and_pads_after():
    offsets, steps = segment_steps(WORDS, SEGMENTS)
    last, lengths = cut_or_pad(TEXT, offsets, steps, 3)
    assert lengths.tolist() == [2, 3, 0]
    np.testing.assert_array_equal(last[0], [TEXT[0], TEXT[1], [0, 0, 0]])  # padded after the real steps
    np.testing.assert_array_equal(last[1], TEXT[[1, 3, 4]])  # 4 steps cut to the last 3
    np.testing.assert_array_equal(last[2], np.zeros((3, 3)))
    first, _ = cut_or_pad(TEXT, offsets, steps, 3, keep="first")
    np.testing.assert_array_equal(first[1], TEXT[[0, 1, 3]])
    flags, _ = cut_or_pad(np.ones(5, dtype=bool), offsets, steps, 3)
    assert flags.dtype == bool and flags.tolist() == [[True, True, False], [True, True, True], [False] * 3]


def test_segments_of_two_videos_by_hand():
    videos = {"v1": {"text": (WORDS, TEXT), "audio": (AUDIO_IV, AUDIO)},
              "v2": {"text": (np.array([[0.0, 1.0]]), np.ones((1, 3)))}}  # no audio in v2
    # label rows interleave the videos and name one (v3) without streams
    out = build_segments(videos, ["v1", "v2", "v1", "v3", "v1"], [0, 0, 1, 0, 2],
                         [SEGMENTS[0], [0.0, 5.0], SEGMENTS[1], [0.0, 1.0], SEGMENTS[2]],
                         np.arange(10.0).reshape(5, 2), maxlen=3)
    assert out.lengths.tolist() == [2, 1, 3, 0, 0]
    assert out.steps.tolist() == [2, 1, 4, 0, 0]
    assert out.video.tolist() == ["v1", "v2", "v1", "v3", "v1"] and out.segment.tolist() == [0, 0, 1, 0, 2]
    np.testing.assert_array_equal(out.labels, np.arange(10.0).reshape(5, 2))
    audio, text = out.features["audio"], out.features["text"]
    assert audio.shape == (5, 3, 2) and text.shape == (5, 3, 3) and audio.dtype == np.float32
    np.testing.assert_allclose(audio[0], ALIGNED[[0, 1]].tolist() + [[0, 0]], rtol=1e-6)
    np.testing.assert_allclose(audio[2], ALIGNED[[1, 3, 4]], rtol=1e-6)
    np.testing.assert_array_equal(text[2], TEXT[[1, 3, 4]])
    np.testing.assert_array_equal(text[1], [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(audio[1], np.zeros((3, 2)))  # v2 has no audio: zeros, flagged
    assert out.present["audio"].tolist() == [[True, True, False], [False] * 3, [True, False, True], [False] * 3,
                                             [False] * 3]
    assert out.present["text"].tolist() == [[True, True, False], [True, False, False], [True] * 3, [False] * 3,
                                            [False] * 3]
    for m in ("audio", "text"):  # a segment without steps is all zeros
        assert not out.features[m][[3, 4]].any()


def test_keep_first_through_build_segments():
    out = build_segments({"v": {"text": (WORDS, TEXT)}}, ["v"], [0], [SEGMENTS[1]], [[1.0]], maxlen=2, keep="first")
    np.testing.assert_array_equal(out.features["text"][0], TEXT[[0, 1]])
    assert out.lengths.tolist() == [2] and out.steps.tolist() == [4]


# Invariants


def _contiguous(rng, n, d):
    edges = np.cumsum(rng.uniform(0.01, 0.5, n + 1))
    return np.stack([edges[:-1], edges[1:]], 1), rng.standard_normal((n, d))


def test_a_modality_on_the_reference_intervals_aligns_to_itself_exactly():
    rng = np.random.default_rng(0)
    words, features = _contiguous(rng, 200, 7)
    aligned, present = align_to_reference(words, words, features)
    assert present.all()
    np.testing.assert_array_equal(aligned, features)
    # also with frame times that add up with rounding errors (neighbours overlapping by ~1e-17)
    frames = np.stack([np.arange(500) * 0.01, np.arange(1, 501) * 0.01], 1)
    f = rng.standard_normal((500, 3)).astype(np.float32)
    aligned, present = align_to_reference(frames, frames, f)
    assert present.all()
    np.testing.assert_array_equal(aligned, f.astype(np.float64))


def test_constant_features_stay_constant():
    rng = np.random.default_rng(1)
    start = rng.uniform(0, 50, 300)
    rows = np.stack([start, start + rng.uniform(0, 2, 300)], 1)  # overlapping rows, some very short
    words = np.sort(rng.uniform(0, 52, (100, 2)), axis=1)
    aligned, present = align_to_reference(words, rows, np.full((300, 4), 2.5))
    assert present.sum() > 80
    np.testing.assert_allclose(aligned[present], 2.5, rtol=1e-13)
    assert not aligned[~present].any()


def test_the_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(2)
    start = rng.uniform(0, 20, 150)
    rows = np.stack([start, start + rng.uniform(0, 1, 150)], 1)
    features = rng.standard_normal((150, 5))
    words = np.sort(rng.uniform(0, 21, (40, 2)), axis=1)
    expected = align_to_reference(words, rows, features)
    perm = rng.permutation(150)
    got = align_to_reference(words, rows[perm], features[perm])
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    # the words' order only orders the output
    wperm = rng.permutation(40)
    got = align_to_reference(words[wperm], rows, features)
    np.testing.assert_array_equal(got[0], expected[0][wperm])
    offsets, steps = segment_steps(words, [[0, 21]])
    offsets2, steps2 = segment_steps(words[wperm], [[0, 21]])
    np.testing.assert_array_equal(wperm[steps2], steps)


# Against a loop written from the rules, on random data


def loop_align(reference, intervals, features, eps=EPS):
    out, present = np.zeros((len(reference), features.shape[1])), np.zeros(len(reference), dtype=bool)
    for j, (s, e) in enumerate(reference):
        total, acc = 0.0, np.zeros(features.shape[1])
        for (a, b), f in zip(intervals, features):
            o = min(b, e) - max(a, s)
            if o > eps:
                total += o
                acc += o * f
        if total > 0:
            out[j], present[j] = acc / total, True
    return out, present


def loop_segment(words, segment, maxlen, keep, eps=EPS):
    """The words of ``segment`` in (start, end) order, cut to ``maxlen`` from the kept end."""
    s, e = segment
    inside = [i for i in sorted(range(len(words)), key=lambda i: (words[i][0], words[i][1], i))
              if min(words[i][1], e) - max(words[i][0], s) > eps]
    return (inside[-maxlen:] if keep == "last" else inside[:maxlen]), len(inside)


def _random_stream(rng, n, d, span, grid):
    start = rng.uniform(0, span, n)
    length = rng.choice([0.0, 0.05, 0.3, 1.0, 2.5], n) * rng.uniform(0.5, 1.5, n)
    length[rng.random(n) < 0.1] = 0.0
    iv = np.stack([start, start + length], 1)
    if grid:  # times on a 0.25 s grid: many exact touches, equal starts and duplicate rows
        iv = np.round(iv * 4) / 4
    return iv, rng.standard_normal((n, d))


@pytest.mark.parametrize("seed", range(6))
def test_alignment_matches_a_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    grid = seed % 2 == 0
    words, _ = _random_stream(rng, 60, 1, 30, grid)
    rows, features = _random_stream(rng, 120, 6, 32, grid)
    expected, expected_present = loop_align(words, rows, features)
    aligned, present = align_to_reference(words, rows, features)
    np.testing.assert_array_equal(present, expected_present)
    np.testing.assert_allclose(aligned, expected, rtol=1e-10, atol=1e-12)
    assert 0 < present.sum() < len(words)


@pytest.mark.parametrize("keep", ["last", "first"])
@pytest.mark.parametrize("seed", range(4))
def test_segments_match_a_loop_on_random_data(seed, keep):
    rng = np.random.default_rng(100 + seed)
    maxlen, videos, labels = 5, {}, {"video": [], "segment": [], "intervals": [], "values": []}
    for v in range(4):
        words, text = _random_stream(rng, 40, 3, 20, grid=v % 2 == 0)
        streams = {"text": (words, text), "audio": _random_stream(rng, 200, 4, 21, grid=False)}
        if v != 3:  # video 3 has no visual stream
            streams["visual"] = _random_stream(rng, 60, 2, 21, grid=True)
        videos[f"v{v}"] = streams
        for k in range(6):
            start = rng.uniform(0, 18)
            labels["video"].append(f"v{v}")
            labels["segment"].append(k)
            labels["intervals"].append([start, start + rng.choice([0.0, 1.0, 4.0, 8.0])])
            labels["values"].append(rng.uniform(0, 3, 2))
    shuffle = rng.permutation(len(labels["video"]))
    cols = {k: [v[i] for i in shuffle] for k, v in labels.items()}
    out = build_segments(videos, cols["video"], cols["segment"], cols["intervals"], cols["values"],
                         maxlen=maxlen, keep=keep, dtype=np.float64)
    assert set(out.features) == {"audio", "visual", "text"}
    for r, (video, segment) in enumerate(zip(cols["video"], cols["intervals"])):
        streams = videos[video]
        words, text = streams["text"]
        kept, count = loop_segment(words, segment, maxlen, keep)
        assert out.lengths[r] == len(kept) and out.steps[r] == count
        np.testing.assert_array_equal(out.labels[r], cols["values"][r])
        for m, d in (("text", 3), ("audio", 4), ("visual", 2)):
            if m == "text":
                values, here = text, np.ones(len(words), dtype=bool)
            elif m in streams:
                values, here = loop_align(words, *streams[m])
            else:
                values, here = np.zeros((len(words), d)), np.zeros(len(words), dtype=bool)
            expected = np.zeros((maxlen, d))
            expected[:len(kept)] = values[kept]
            np.testing.assert_allclose(out.features[m][r], expected, rtol=1e-10, atol=1e-12)
            assert out.present[m][r].tolist() == here[kept].tolist() + [False] * (maxlen - len(kept))
    assert (out.lengths == 0).any() and (out.lengths == maxlen).any() and (out.lengths < maxlen).any()


# Bad input


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        align_to_reference(WORDS, AUDIO_IV[:, :1], AUDIO)
    with pytest.raises(ValueError, match="NaN"):
        align_to_reference(WORDS, np.where(AUDIO_IV == 0.5, np.nan, AUDIO_IV), AUDIO)
    with pytest.raises(ValueError, match="features"):
        align_to_reference(WORDS, AUDIO_IV, AUDIO[:3])
    offsets, steps = segment_steps(WORDS, SEGMENTS)
    with pytest.raises(ValueError, match="keep"):
        cut_or_pad(TEXT, offsets, steps, 3, keep="middle")
    with pytest.raises(ValueError, match="maxlen"):
        cut_or_pad(TEXT, offsets, steps, 0)
    with pytest.raises(ValueError, match="same length"):
        build_segments({}, ["v"], [0, 1], [[0, 1]], [[1.0]])
    with pytest.raises(ValueError, match="features in video"):
        build_segments({"a": {"text": (WORDS, TEXT)}, "b": {"text": (WORDS, TEXT[:, :2])}}, ["a"], [0], [[0, 1]], [[1.0]])


def test_empty_inputs():
    aligned, present = align_to_reference(WORDS, np.zeros((0, 2)), np.zeros((0, 4)))
    assert aligned.shape == (5, 4) and not present.any()
    aligned, present = align_to_reference(np.zeros((0, 2)), AUDIO_IV, AUDIO)
    assert aligned.shape == (0, 2) and present.shape == (0,)
    out = build_segments({"v": {"text": (WORDS, TEXT)}}, [], [], np.zeros((0, 2)), np.zeros((0, 6)), maxlen=4)
    assert out.features["text"].shape == (0, 4, 3) and out.labels.shape == (0, 6)


def test_benchmark_runs_and_matches_its_baseline(tmp_path, capsys):
    from moodlake_dev.bench.align import main

    out = tmp_path / "align.json"
    report = main(["--videos", "2", "--segments-per-video", "3", "--rounds", "1", "--baseline-videos", "1",
                   "--out", str(out)])
    assert json.loads(out.read_text())["results"] == report["results"]
    vectorised, baseline = report["results"]
    assert vectorised["segments"] == 6 and baseline["segments"] == 3
    assert vectorised["segments_per_s_median"] > 0 and baseline["max_abs_difference"] < 1e-5
    assert "| vectorised (build_segments) | 6 |" in capsys.readouterr().out
