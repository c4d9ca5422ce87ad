"""Metrics against hand-computed cases (the independent check: the code computes with scikit-learn) and
scikit-learn's own definitions (balanced accuracy, macro F1 of a threshold)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from moodlake.evaluation import (
    classification_metrics,
    intensity_metrics,
    random_intensity_baselines,
    multilabel_metrics,
    subset_head_accuracy,
    tune_binary_threshold,
    tune_thresholds,
)
from moodlake.models.multitask import HEADS
from tests.evaluation.cases import (
    ML_PROB,
    ML_TRUE,
    Y3_PRED,
    Y3_TRUE,
    intensities_case,
    modality_case,
    one_hot_probs,
)


def test_three_classes_by_hand():
    m = classification_metrics(Y3_TRUE, one_hot_probs(Y3_PRED, 3), ["a", "b", "c"])
    assert m["n"] == 10 and m["labels"] == ["a", "b", "c"]
    assert m["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(0.6)
    # a: TP 2, FP 1, FN 2; b: TP 2, FP 2, FN 1; c: TP 2, FP 1, FN 1
    expected = {"a": (2 / 3, 2 / 4, 4 / 7, 4), "b": (2 / 4, 2 / 3, 4 / 7, 3), "c": (2 / 3, 2 / 3, 4 / 6, 3)}
    for name, (p, r, f, s) in expected.items():
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f))
        assert row["support"] == s
    assert m["macro"] == pytest.approx({"precision": 11 / 18, "recall": 11 / 18, "f1": 38 / 63})
    assert m["macro_f1"] == pytest.approx(38 / 63)
    assert m["weighted"] == pytest.approx({"precision": 0.4 * 2 / 3 + 0.3 * 0.5 + 0.3 * 2 / 3,
                                           "recall": 0.6, "f1": 0.7 * 4 / 7 + 0.3 * 2 / 3})
    assert m["micro"] == pytest.approx({"precision": 0.6, "recall": 0.6, "f1": 0.6})
    assert m["balanced_accuracy"] == pytest.approx(11 / 18)
    assert "roc_auc" not in m


def test_a_class_without_examples_has_support_zero_and_counts_in_macro_not_weighted():
    # c never occurs but is predicted once
    m = classification_metrics(np.array([0, 0, 1]), one_hot_probs([0, 2, 1], 3), ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro"]["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["weighted"]["recall"] == pytest.approx((2 * 0.5 + 1 * 1) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # scikit-learn's, for class 4
@pytest.mark.parametrize("seed", range(4))
def test_single_label_micro_is_accuracy_and_all_averages_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 5
    y = rng.choice(4, 60)  # class 4 absent from y_true
    probs = rng.dirichlet(np.ones(k), 60)
    m = classification_metrics(y, probs, list("vwxyz"))
    accuracy = (probs.argmax(1) == y).mean()
    assert m["accuracy"] == pytest.approx(accuracy)
    assert m["micro"] == pytest.approx({"precision": accuracy, "recall": accuracy, "f1": accuracy})
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y, probs.argmax(1), labels=range(k), average=average,
                                                     zero_division=0)
        assert m[average] == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))


def test_balanced_accuracy_of_a_majority_guess_is_one_half():
    y = np.array([0] * 9 + [1])
    m = classification_metrics(y, one_hot_probs(np.zeros(10, int), 2), ["no", "yes"])
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_binary_roc_auc_counts_correctly_ordered_pairs_of_the_positive_label():
    # positive scores 0.35, 0.8; negative scores 0.1, 0.4, 0.35: pairs ranked right 1 + 0 + 0.5 (tie) + 3 = 4.5 of 6
    score = np.array([0.35, 0.8, 0.1, 0.4, 0.35])
    is_positive = np.array([True, True, False, False, False])
    positive_first = classification_metrics(np.where(is_positive, 0, 1), np.c_[score, 1 - score],
                                            ["positive", "negative"])
    assert positive_first["positive_label"] == "positive"
    assert positive_first["roc_auc"] == pytest.approx(4.5 / 6)
    second_is_positive = classification_metrics(is_positive.astype(int), np.c_[1 - score, score], ["no", "yes"])
    assert second_is_positive["positive_label"] == "yes"
    assert second_is_positive["roc_auc"] == pytest.approx(4.5 / 6)


def test_roc_auc_of_a_single_class_is_nan():
    m = classification_metrics(np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]), ["negative", "positive"])
    assert math.isnan(m["roc_auc"])


@pytest.mark.parametrize("y_true, y_prob, labels, message", [
    (np.array([0, 1]), np.ones((3, 2)) / 2, ["a", "b"], "y_prob must be"),
    (np.array([0, 2]), np.ones((2, 2)) / 2, ["a", "b"], "outside"),
    (np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"], "y_prob must be"),
    (np.array([0.0, 1.0]), np.ones((2, 2)) / 2, ["a", "b"], "integer"),
    (np.array([0, 1]), np.ones((2, 2)) / 2, ["a", "a"], "distinct"),
])
def test_classification_refuses_mismatched_inputs(y_true, y_prob, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_prob, labels)


def test_multilabel_by_hand_at_the_default_threshold():
    m = multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"])
    # predicted [1,0] [1,0] [0,1] [0,1]; x: TP 2; y: TP 1, FP 1, FN 1
    assert m["thresholds"] == [0.5, 0.5]
    assert m["per_class"]["x"] == pytest.approx({"threshold": 0.5, "precision": 1, "recall": 1, "f1": 1, "support": 2})
    assert m["per_class"]["y"] == pytest.approx({"threshold": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5,
                                                 "support": 2})
    assert m["micro"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75})
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["weighted"]["f1"] == pytest.approx(0.75)
    assert m["exact_match"] == pytest.approx(2 / 4)


def test_multilabel_with_one_class_scores_its_positives():
    # scikit-learn reads an [N, 1] multi-hot array as binary labels: the class is the column's 1s, not its 0s.
    # predicted 1 1 0 0 against 1 1 1 0: TP 2, FP 0, FN 1 (the 0s would give TP 1, FP 1, FN 0, support 1)
    m = multilabel_metrics(np.array([[1], [1], [1], [0]]), np.array([[0.9], [0.8], [0.2], [0.1]]), ["joy"])
    assert m["per_class"]["joy"] == pytest.approx({"threshold": 0.5, "precision": 1, "recall": 2 / 3, "f1": 0.8,
                                                   "support": 3})
    for average in ("micro", "macro", "weighted"):
        assert m[average] == pytest.approx({"precision": 1, "recall": 2 / 3, "f1": 0.8})
    assert m["exact_match"] == pytest.approx(3 / 4)
    assert tune_thresholds(np.array([[1], [1], [1], [0]]), np.array([[0.9], [0.8], [0.2], [0.1]]),
                           grid=(0.15, 0.5)).tolist() == [0.15]  # 0.15 catches the third positive: F1 1


def test_single_label_with_one_class_and_classes_never_predicted_by_hand():
    only = classification_metrics(np.array([0, 0]), np.ones((2, 1)), ["only"])
    assert only["confusion"] == [[2]] and only["accuracy"] == 1 and only["balanced_accuracy"] == 1
    assert only["per_class"]["only"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    # every example predicted a: b (support 2) and c (support 0) are never predicted
    m = classification_metrics(np.array([0, 1, 1]), one_hot_probs([0, 0, 0], 3), ["a", "b", "c"])
    assert m["confusion"] == [[1, 0, 0], [2, 0, 0], [0, 0, 0]]
    assert m["per_class"]["a"] == pytest.approx({"precision": 1 / 3, "recall": 1, "f1": 0.5, "support": 1})
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro"] == pytest.approx({"precision": 1 / 9, "recall": 1 / 3, "f1": 1 / 6})
    assert m["weighted"] == pytest.approx({"precision": 1 / 9, "recall": 1 / 3, "f1": 1 / 6})
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_multilabel_per_class_thresholds():
    m = multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"], thresholds=[0.5, 0.6])
    # y predicted only in row 3: TP 1, FP 0, FN 1
    assert m["per_class"]["y"]["f1"] == pytest.approx(2 / 3)
    assert m["exact_match"] == pytest.approx(3 / 4)
    assert multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"], thresholds=0.35)["per_class"]["y"]["f1"] \
        == pytest.approx(4 / 5)  # y predicted in rows 2-4: TP 2, FP 1
    at_threshold = multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"], thresholds=0.55)["per_class"]["y"]
    assert at_threshold["precision"] == pytest.approx(0.5)  # 0.55 >= 0.55: row 4 is predicted, a false positive
    with pytest.raises(ValueError, match="thresholds"):
        multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"], thresholds=[0.5, 0.5, 0.5])


def test_binary_threshold_maximises_macro_f1_as_scikit_learn_counts_it():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.25  # an imbalanced binary set, as VSO (78 % positive) mirrored
    p = np.clip(0.55 + 0.2 * y + rng.normal(0, 0.12, 300), 0, 1)  # every score above 0.5: argmax says "1"
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    t = tune_binary_threshold(y, p, grid)
    by_sklearn = [f1_score(y, p >= g, average="macro") for g in grid]
    assert f1_score(y, p >= t, average="macro") == pytest.approx(max(by_sklearn))
    assert f1_score(y, p >= t, average="macro") > f1_score(y, p >= 0.5, average="macro") + 0.2
    assert tune_binary_threshold([0, 1], [0.2, 0.8], grid=(0.1, 0.5, 0.9)) == 0.5  # ties: nearest 0.5
    with pytest.raises(ValueError, match="same length"):
        tune_binary_threshold([0, 1, 1], [0.2, 0.8])


def test_tuned_thresholds_raise_validation_f1_over_the_default():
    # class 0: positives score 0.35 and 0.4 (all below 0.5); class 1: a negative scores 0.6;
    # class 2: no positives at all (every threshold gives F1 0: keeps 0.5)
    y = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    p = np.array([[0.35, 0.8, 0.9], [0.4, 0.9, 0.1], [0.1, 0.6, 0.2], [0.2, 0.1, 0.3]])
    t = tune_thresholds(y, p, grid=(0.3, 0.5, 0.7))
    np.testing.assert_array_equal(t, [0.3, 0.7, 0.5])
    labels = ["a", "b", "c"]
    default, tuned = multilabel_metrics(y, p, labels), multilabel_metrics(y, p, labels, t)
    assert default["per_class"]["a"]["f1"] == 0 and tuned["per_class"]["a"]["f1"] == 1
    assert default["per_class"]["b"]["f1"] == pytest.approx(0.8) and tuned["per_class"]["b"]["f1"] == 1
    assert default["macro_f1"] == pytest.approx(0.8 / 3)
    assert tuned["macro_f1"] == pytest.approx(2 / 3)


def test_tuning_prefers_the_threshold_nearest_one_half_among_equals():
    y = np.array([[1], [0]])
    p = np.array([[0.9], [0.1]])  # every threshold in (0.1, 0.9] is perfect
    assert tune_thresholds(y, p, grid=(0.2, 0.4, 0.6, 0.8)).tolist() == [0.4]


def test_intensity_metrics_by_hand_with_a_constant_column():
    y_true, y_pred = intensities_case()
    m = intensity_metrics(y_true, y_pred, ["joy", "fear"])
    joy, fear = m["per_emotion"]["joy"], m["per_emotion"]["fear"]
    # joy: |errors| .4 .6 0 .6; rounded predictions 0 2 2 2 vs 0 1 2 3; present F T T T both
    assert joy["mae"] == pytest.approx(0.4)
    assert joy["four_class_accuracy"] == pytest.approx(0.5)
    assert joy["binary_accuracy"] == pytest.approx(1.0)
    # deviations x -1.5 -.5 .5 1.5, y -1.2 0 .4 .8: r = 3.2 / sqrt(5 * 2.24)
    assert joy["pearson_r"] == pytest.approx(3.2 / math.sqrt(5 * 2.24))
    # fear: |errors| .8 0 .4 0; rounded predictions 0 1 1 1 vs 1 1 1 1
    assert fear["mae"] == pytest.approx(0.3)
    assert fear["four_class_accuracy"] == pytest.approx(0.75)
    assert fear["binary_accuracy"] == pytest.approx(0.75)
    assert math.isnan(fear["pearson_r"])
    assert m["mean"] == pytest.approx({"mae": 0.35, "binary_accuracy": 0.875, "four_class_accuracy": 0.625,
                                       "pearson_r": 3.2 / math.sqrt(5 * 2.24)})
    assert m["n"] == 4 and m["names"] == ["joy", "fear"]


def test_intensity_presence_is_a_rounded_class_above_zero():
    # 0.4 and 0.5 round to class 0 (absent), 0.6 to class 1 (present): the definition of models.williams
    m = intensity_metrics(np.array([[0.0], [0.0], [0.0]]), np.array([[0.4], [0.5], [0.6]]), ["joy"])
    assert m["per_emotion"]["joy"]["binary_accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(m["mean"]["pearson_r"])


def test_intensity_metrics_refuse_mismatched_shapes():
    y_true, y_pred = intensities_case()
    with pytest.raises(ValueError, match="must both be"):
        intensity_metrics(y_true, y_pred[:3], ["joy", "fear"])
    with pytest.raises(ValueError, match="must both be"):
        intensity_metrics(y_true, y_pred, ["joy"])


def test_random_baseline_from_a_constant_training_distribution_is_that_constant():
    # every training intensity of joy is 1.0 and of fear 0.0: the training-distribution draws are those
    # constants, so their metrics are the constants' metrics exactly, whatever the seed
    y_true = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 0.4], [1.0, 1.0]])
    y_train = np.tile([1.0, 0.0], (5, 1))
    got = random_intensity_baselines(y_train, 4, ["joy", "fear"], draws=3, seed=7, y_true=y_true)
    exact = intensity_metrics(y_true, np.tile([1.0, 0.0], (4, 1)), ["joy", "fear"])
    drawn = got["random (training distribution)"]
    for key in ("mae", "binary_accuracy", "four_class_accuracy"):
        assert drawn["mean"][key] == pytest.approx(exact["mean"][key])
        assert drawn["per_emotion"]["fear"][key] == pytest.approx(exact["per_emotion"]["fear"][key])
    assert math.isnan(drawn["mean"]["pearson_r"])  # constant predictions: r undefined in every draw
    assert drawn["draws"] == 3 and drawn["n"] == 4


def test_uniform_random_baseline_has_the_expected_error_and_is_seeded():
    # |U(0, 3) - 0| has mean 1.5; |U(0, 3) - 3| too; 4-class accuracy of class 0 is P(U < 0.5) = 1/6
    y_true = np.zeros((2000, 1))
    a = random_intensity_baselines(np.ones((3, 1)), 2000, ["joy"], draws=5, seed=1, y_true=y_true)
    b = random_intensity_baselines(np.ones((3, 1)), 2000, ["joy"], draws=5, seed=1, y_true=y_true)
    uniform = a["random (uniform 0-3)"]["mean"]
    assert uniform["mae"] == pytest.approx(1.5, abs=0.03)
    assert uniform["four_class_accuracy"] == pytest.approx(1 / 6, abs=0.02)
    assert repr(a) == repr(b)  # the same draws (repr: NaN, the constant draws' r, is equal to itself there)
    with pytest.raises(ValueError, match="y_train must be"):
        random_intensity_baselines(np.ones((3, 2)), 2000, ["joy"], y_true=y_true)


def test_subset_head_table_cells_nan_and_routed():
    y, probs, masks, patterns, correct = modality_case()
    result = subset_head_accuracy(y, probs, masks)
    table = result.frame
    assert result.metric == "accuracy"
    assert list(table.index) == [*HEADS, "all"]
    assert list(table.columns) == ["n", *HEADS, "routed"]
    assert table["n"].tolist() == [6] * 7 + [42]
    for subset in HEADS:
        for head in HEADS:
            if set(head.split("+")) <= set(subset.split("+")):
                assert table.loc[subset, head] == pytest.approx(correct[head][patterns == subset].mean())
            else:
                assert np.isnan(table.loc[subset, head]), (subset, head)
        assert table.loc[subset, "routed"] == pytest.approx(correct[subset][patterns == subset].mean())
    routed = np.mean([correct[pattern][i] for i, pattern in enumerate(patterns)])
    assert table.loc["all", "routed"] == pytest.approx(routed)
    diagonal = np.array([table.loc[s, s] for s in HEADS])
    assert table.loc["all", "routed"] == pytest.approx((diagonal * table["n"][:7]).sum() / 42)
    has_image = masks[:, 0]
    assert table.loc["all", "image"] == pytest.approx(correct["image"][has_image].mean())
    as_dict = result.to_dict()
    assert as_dict["rows"][0]["subset"] == "image" and np.isnan(as_dict["rows"][0]["heads"]["text"])


def test_subset_head_table_with_fewer_available_modalities():
    y, probs, masks, patterns, correct = modality_case()
    del probs["tags"]  # not needed without tags
    result = subset_head_accuracy(y, probs, masks, available=("image", "text"))
    table = result.frame
    assert list(table.index) == ["image", "text", "image+text", "all"]
    # without tags, image+tags examples count as image-only, tags-only ones drop out
    assert table["n"].tolist() == [12, 12, 12, 36]
    for head in ("tags", "image+tags", "text+tags", "image+text+tags"):
        assert table[head].isna().all()
    as_image = np.isin(patterns, ["image", "image+tags"])
    assert table.loc["image", "routed"] == pytest.approx(correct["image"][as_image].mean())


def test_subset_head_table_multilabel_uses_macro_f1():
    y, probs, masks, patterns, _ = modality_case()
    y_multi = np.zeros((len(y), 2), int)
    y_multi[::2, 0] = 1
    y_multi[1::3, 1] = 1
    result = subset_head_accuracy(y_multi, probs, masks)
    assert result.metric == "macro_f1"
    rows = patterns == "image+text"
    expected = f1_score(y_multi[rows], probs["text"][rows] >= 0.5, average="macro", zero_division=0)
    assert result.frame.loc["image+text", "text"] == pytest.approx(expected)


def test_subset_head_table_refusals():
    y, probs, masks, _, _ = modality_case()
    with pytest.raises(ValueError, match="lacks the heads"):
        subset_head_accuracy(y, {h: p for h, p in probs.items() if h != "text"}, masks)
    broken = dict(probs, image=probs["image"].copy())
    broken["image"][0] = np.nan  # example 0 has an image
    with pytest.raises(ValueError, match="non-finite"):
        subset_head_accuracy(y, broken, masks)
    with pytest.raises(ValueError, match="masks must be bool"):
        subset_head_accuracy(y, probs, masks.astype(int))
    with pytest.raises(ValueError, match="examples"):
        subset_head_accuracy(y[:-1], probs, masks)
