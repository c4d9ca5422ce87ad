"""The real-data experiment runner's scoring and summary (the training itself is tested elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest

from moodlake_dev.experiments import (average_predictions, markdown, score_image_head, score_text_head,
                                             score_vso, summarise)
from moodlake.evaluation.job import Predictions

HEADS = ("image", "text", "tags", "image+text", "image+tags", "text+tags", "image+text+tags")


def _pred(label, probs, masks, heads=None, labels=None):
    label = np.asarray(label)
    k = np.asarray(probs).shape[1]
    multi = np.eye(k)[np.maximum(label, 0)] * (label >= 0)[:, None] if labels is None else np.asarray(labels, float)
    return Predictions([f"p{i}" for i in range(len(label))], label, multi, np.asarray(probs, float),
                       np.ones(len(label), bool), np.asarray(masks, bool),
                       {h: np.asarray(p, float) for h, p in (heads or {}).items()})


def test_vso_scores_the_trimodal_head_on_trimodal_posts_only():
    routed = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]
    trimodal = [[0.8, 0.2], [0.1, 0.9], [0.0, 1.0], [0.0, 1.0]]  # rows 2, 3 lack tags: not counted
    pred = _pred([0, 1, 0, 1], routed, [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]], {"image+text+tags": trimodal})
    s = score_vso(pred, pred, ["negative", "positive"])
    assert s["trimodal_head"]["n"] == 2 and s["trimodal_head"]["accuracy"] == 1.0
    assert s["trimodal_head"]["roc_auc"] == 1.0
    assert s["routed"]["n"] == 4 and s["routed"]["accuracy"] == 1.0


def test_vso_macro_f1_with_the_threshold_validation_prefers():
    # every probability of "positive" is above 0.5, but negatives score lower: validation shows where
    val_p = np.array([0.55, 0.6, 0.8, 0.85, 0.9, 0.95])
    val = _pred([0, 0, 1, 1, 1, 1], np.stack([1 - val_p, val_p], 1), [[1, 1, 1]] * 6,
                {"image+text+tags": np.stack([1 - val_p, val_p], 1)})
    test_p = np.array([0.58, 0.62, 0.83, 0.88, 0.97])
    test = _pred([0, 0, 1, 1, 1], np.stack([1 - test_p, test_p], 1), [[1, 1, 1]] * 5,
                 {"image+text+tags": np.stack([1 - test_p, test_p], 1)})
    s = score_vso(test, val, ["negative", "positive"])["trimodal_head"]
    assert s["macro_f1"] == pytest.approx(0.375)  # argmax: all positive; F1 0 and 0.75
    assert 0.6 < s["threshold"] <= 0.8 and s["macro_f1_tuned"] == 1.0


def test_an_ensemble_averages_probabilities_post_by_post_whatever_the_row_order():
    a = _pred([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[1, 1, 1]] * 3,
              {"image+text+tags": [[0.6, 0.4], [0.4, 0.6], [0.7, 0.3]]})
    b = _pred([1, 0, 1], [[0.4, 0.6], [0.5, 0.5], [0.2, 0.8]], [[1, 1, 1]] * 3,
              {"image+text+tags": [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]})
    b.post_ids = ["p1", "p0", "p2"]  # the same posts read back in another order: p1, p0, p2
    m = average_predictions([a, b])
    assert m.post_ids == a.post_ids and (m.label == a.label).all()
    np.testing.assert_allclose(m.probs, [[0.7, 0.3], [0.3, 0.7], [0.4, 0.6]])
    np.testing.assert_allclose(m.heads["image+text+tags"], [[0.6, 0.4], [0.3, 0.7], [0.4, 0.6]])
    # the trimodal head alone ranks p2 (positive) below p0 (negative); the ensemble ranks both right
    assert score_vso(a, a, ["negative", "positive"])["trimodal_head"]["roc_auc"] == 0.5
    assert score_vso(m, m, ["negative", "positive"])["trimodal_head"]["roc_auc"] == 1.0
    c = _pred([0, 1], [[0.5, 0.5]] * 2, [[1, 1, 1]] * 2)
    with pytest.raises(ValueError, match="same posts"):
        average_predictions([a, c])


def test_vso_summary_keeps_seed_ensembles_apart():
    run = lambda auc: {"trimodal_head": {"roc_auc": auc, "macro_f1": auc}, "routed": {"roc_auc": auc}}  # noqa: E731
    s = summarise({"vso": [run(0.7), run(0.8), {**run(0.9), "ensemble": True}]})
    assert s["vso"]["trimodal_head_roc_auc"]["mean"] == pytest.approx(0.75) and s["vso"]["trimodal_head_roc_auc"]["n"] == 2
    assert s["vso_ensemble"]["trimodal_head_roc_auc"]["mean"] == pytest.approx(0.9)
    assert "vso_ensemble" not in summarise({"vso": [run(0.7)]})


def test_image_head_accuracy_and_text_head_f1_with_thresholds_from_validation():
    labels = ["a", "b"]
    image = [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]
    pred = _pred([0, 1, 1], image, [[1, 0, 0]] * 3, {"image": image})
    assert score_image_head(pred, labels)["accuracy"] == pytest.approx(2 / 3)

    # text probabilities that are right only above a threshold of 0.3, which validation reveals
    val_probs = np.array([[0.35, 0.1], [0.1, 0.35], [0.2, 0.1], [0.1, 0.2]])
    val = _pred([-1] * 4, val_probs, [[0, 1, 0]] * 4, {"text": val_probs}, labels=[[1, 0], [0, 1], [0, 0], [0, 0]])
    test_probs = np.array([[0.4, 0.1], [0.1, 0.45]])
    test = _pred([-1, -1], test_probs, [[0, 1, 0]] * 2, {"text": test_probs}, labels=[[1, 0], [0, 1]])
    s = score_text_head(test, val, labels)
    assert s["macro_f1"] == 1.0 and all(0.2 < t <= 0.35 for t in s["thresholds"])


def test_summary_is_mean_and_sample_std_over_runs():
    runs = {"emotion6": [{"image_head": {"accuracy": a, "macro_f1": a}, "best_val_accuracy": a - 0.1}
                         for a in (0.5, 0.6, 0.7)]}
    s = summarise(runs)["emotion6"]["image_head_accuracy"]
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    assert summarise(runs)["emotion6"]["val_accuracy_best_epoch"]["mean"] == pytest.approx(0.5)
    assert "0.600 ± 0.100 (n=3)" in markdown(summarise(runs)) and "≥ 0.58" in markdown(summarise(runs))

