"""Evaluation metrics (issue #5): pure, deterministic functions from predictions to metric dictionaries.

No Spark and no I/O: the evaluation job runs the models and stores what these functions return.

Definitions shared by every function here:

- For a class: TP, FP and FN count its true positives, false positives and false negatives;
  precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN) (the harmonic
  mean of precision and recall). A ratio whose denominator is 0 is reported as 0 (scikit-learn's
  ``zero_division=0``).
- support: the number of examples whose true label is (single-label) or includes (multi-label)
  the class. Support 0 means the class does not occur in the evaluated set: its recall and F1
  are 0 by the rule above, and its precision is 0 too (it was predicted only wrongly, or never).
- micro: TP, FP and FN summed over the classes first, then precision, recall and F1 of the sums.
  Single-label: every error is one FP (of the predicted class) and one FN (of the true class),
  so micro precision = micro recall = micro F1 = accuracy.
- macro: the unweighted mean over all K classes of the per-class values (macro F1 is the mean
  of the per-class F1s, not the F1 of macro precision and recall). Classes of support 0 count,
  with their zeros, so that the denominator is always K (scikit-learn with ``labels=`` all).
- weighted: the mean of the per-class values weighted by support (classes of support 0 weigh 0).

These are scikit-learn's definitions, and scikit-learn computes them
(``precision_recall_fscore_support(..., labels=all K, zero_division=0)``, ``confusion_matrix``,
``accuracy_score``, ``f1_score``); this module checks the inputs, picks the predictions (argmax,
thresholds) and shapes the results. tests/evaluation/test_metrics.py compares them with counts
made by hand.

Undefined metrics (ROC AUC of a set with one class, Pearson r of a constant column, any metric
of an empty subset) are NaN; everything else is a plain ``int``, ``float``, ``str``, list or dict.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from moodlake.models.multitask import HEADS, MODALITIES
from moodlake.models.williams import EMOTIONS, emotion_metrics

DEFAULT_THRESHOLD = 0.5
"""Multi-label decision threshold on each sigmoid output when none is tuned."""

DEFAULT_THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist())
"""Candidate thresholds of :func:`tune_thresholds`: 0.05, 0.10, ..., 0.95."""


def _sklearn_args(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict:
    """scikit-learn's ``y_true``, ``y_pred`` and ``labels`` (every one of the K classes) for class
    indices [N] or multi-hot [N, K].

    Multi-hot with K = 1 goes in as the binary column and its class 1: scikit-learn reads an
    [N, 1] array as binary labels, and ``labels=[0]`` would then name the negative class.
    """
    if y_true.ndim == 1:
        return {"y_true": y_true, "y_pred": y_pred, "labels": np.arange(k)}
    y_true, y_pred = y_true.astype(np.int8), y_pred.astype(np.int8)
    if k == 1:
        return {"y_true": y_true[:, 0], "y_pred": y_pred[:, 0], "labels": [1]}
    return {"y_true": y_true, "y_pred": y_pred, "labels": np.arange(k)}


def _f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, average: str | None) -> np.ndarray | float:
    """scikit-learn's F1 over all K classes (module docstring); ``average=None``: per class [K]."""
    return f1_score(**_sklearn_args(y_true, y_pred, k), average=average, zero_division=0)


def _prf(precision, recall, f1) -> dict:
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _prf_summary(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """``per_class`` {name: precision, recall, f1, support} and the micro, macro and weighted
    averages of class indices [N] or multi-hot [N, K] (module docstring)."""
    args = _sklearn_args(y_true, y_pred, len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(**args, average=None, zero_division=0)
    summary = {"per_class": {name: {**_prf(p, r, f), "support": int(s)}
                             for name, p, r, f, s in zip(labels, precision, recall, f1, support)}}
    for average in ("micro", "macro", "weighted"):
        summary[average] = _prf(*precision_recall_fscore_support(**args, average=average, zero_division=0)[:3])
    return summary


def _check_labels(labels: Sequence[str], k: int | None = None) -> list[str]:
    """Distinct names as ``str`` (k of them, when given)."""
    labels = [str(name) for name in labels]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct names, got {labels}")
    if k not in (None, len(labels)):
        raise ValueError(f"{len(labels)} labels for {k} classes")
    return labels


def _check_probabilities(y_prob, n: int, k: int | None = None, name: str = "y_prob") -> np.ndarray:
    """float [n, k] (k > 0 and any when None), finite."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape[0] != n or y_prob.shape[1] == 0 or k not in (None, y_prob.shape[1]):
        raise ValueError(f"{name} must be [N={n}, K={k or 'K>0'}], got shape {y_prob.shape}")
    if not np.isfinite(y_prob).all():
        raise ValueError(f"{name} has non-finite values")
    return y_prob


def _check_class_indices(y_true, k: int) -> np.ndarray:
    """int [N > 0] with values in [0, k)."""
    y_true = np.asarray(y_true)
    if y_true.ndim != 1 or y_true.size == 0 or not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must be a non-empty integer array [N], got {y_true.dtype} {y_true.shape}")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true has class indices outside [0, {k})")
    return y_true


def _check_multi_hot(y_true) -> np.ndarray:
    """{0, 1} [N > 0, K > 0] as bool."""
    y_true = np.asarray(y_true)
    if y_true.ndim != 2 or 0 in y_true.shape:
        raise ValueError(f"y_true must be multi-hot [N>0, K>0], got shape {y_true.shape}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    return y_true.astype(bool)


def _check_thresholds(thresholds, k: int) -> np.ndarray:
    """float [k]: None -> 0.5 each, one number -> that number each, else k numbers."""
    t = np.asarray(DEFAULT_THRESHOLD if thresholds is None else thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(k, float(t))
    if t.shape != (k,) or not np.isfinite(t).all():
        raise ValueError(f"thresholds must be one number or {k} finite numbers, got shape {t.shape}")
    return t


def classification_metrics(y_true, y_prob, labels: Sequence[str]) -> dict:
    """Metrics of single-label classification; the prediction is the argmax class (lowest index on ties).

    ``y_true`` int [N] class indices, ``y_prob`` float [N, K] class probabilities, ``labels`` the
    K class names in column order. Keys:

    - ``n``, ``labels``; ``accuracy``: fraction of examples whose argmax is the true class;
    - ``balanced_accuracy``: the mean of the per-class recalls over the classes present in
      ``y_true`` (support > 0; scikit-learn's definition);
    - ``per_class`` {name: {precision, recall, f1, support}}; ``micro``, ``macro``, ``weighted``
      {precision, recall, f1} (module docstring: micro = accuracy here); ``macro_f1`` (=
      ``macro["f1"]``, the headline for imbalanced sets such as VSO);
    - ``confusion``: K x K counts, rows = true class, columns = predicted class;
    - only when K == 2: ``positive_label`` (the label named "positive" if there is one, else
      the second) and ``roc_auc`` of its probability column (NaN when ``y_true`` has one class).
    """
    labels = _check_labels(labels)
    k = len(labels)
    y_true = _check_class_indices(y_true, k)
    y_prob = _check_probabilities(y_prob, y_true.size, k)
    y_pred = y_prob.argmax(1)
    summary = _prf_summary(y_true, y_pred, labels)
    with warnings.catch_warnings():  # K = 1: scikit-learn asks for the labels= that it was given
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        confusion = confusion_matrix(y_true, y_pred, labels=np.arange(k))
    # balanced accuracy from the per-class recalls: balanced_accuracy_score is the same mean but
    # warns when a class that y_true lacks is predicted
    present = [row for row in summary["per_class"].values() if row["support"] > 0]
    metrics = {
        "n": int(y_true.size),
        "labels": labels,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.mean([row["recall"] for row in present])),
        **summary,
        "macro_f1": summary["macro"]["f1"],
        "confusion": confusion.tolist(),
    }
    if k == 2:
        positive = labels.index("positive") if "positive" in labels else 1
        metrics["positive_label"] = labels[positive]
        metrics["roc_auc"] = (float(roc_auc_score(y_true == positive, y_prob[:, positive])) if len(present) == 2
                              else float("nan"))
    return metrics


def multilabel_metrics(y_true, y_prob, labels: Sequence[str], thresholds=None) -> dict:
    """Metrics of multi-label classification (e.g. GoEmotions), a class predicted when its probability >= threshold.

    ``y_true`` {0, 1} [N, K], ``y_prob`` float [N, K] per-class sigmoid outputs, ``labels`` the K
    class names, ``thresholds`` None (0.5 for every class), one number, or K numbers (e.g. from
    :func:`tune_thresholds` on the validation set). Keys: ``n``, ``labels``, ``thresholds`` [K];
    ``per_class`` {name: {threshold, precision, recall, f1, support}}; ``micro``, ``macro``,
    ``weighted`` {precision, recall, f1} (module docstring); ``macro_f1`` (= ``macro["f1"]``, the
    headline for GoEmotions); ``exact_match``: the fraction of examples whose predicted label set
    equals the true set exactly (subset accuracy).
    """
    y_true = _check_multi_hot(y_true)
    y_prob = _check_probabilities(y_prob, *y_true.shape)
    k = y_prob.shape[1]
    labels = _check_labels(labels, k)
    t = _check_thresholds(thresholds, k)
    y_pred = y_prob >= t
    summary = _prf_summary(y_true, y_pred, labels)
    for name, threshold in zip(labels, t):
        summary["per_class"][name] = {"threshold": float(threshold), **summary["per_class"][name]}
    return {
        "n": int(y_true.shape[0]),
        "labels": labels,
        "thresholds": t.tolist(),
        **summary,
        "macro_f1": summary["macro"]["f1"],
        "exact_match": float(accuracy_score(y_true, y_pred)),  # multi-hot: subset accuracy
    }


def tune_thresholds(y_true, y_prob, grid: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> np.ndarray:
    """Per-class thresholds [K] that maximise each class's F1 on a validation set (GoEmotions' practice).

    For each class independently, the grid value whose rule "probability >= threshold" gives
    the highest F1 on (``y_true`` {0, 1} [N, K], ``y_prob`` [N, K]); among equal F1s the value
    nearest 0.5 wins (the earlier grid value if two are equally near), so a class whose F1 the
    grid cannot change (e.g. no positives in the set) keeps the default 0.5 when the grid has it.
    Tune on validation data and pass the result to :func:`multilabel_metrics` on test data.
    """
    y_true = _check_multi_hot(y_true)
    y_prob = _check_probabilities(y_prob, *y_true.shape)
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f"grid must be a non-empty 1-D sequence of finite numbers, got {grid!r}")
    f1 = np.array([_f1(y_true, y_prob >= g, y_prob.shape[1], None) for g in grid])  # [G, K]
    best = f1 >= f1.max(0) - 1e-12
    distance = np.where(best, np.abs(grid - DEFAULT_THRESHOLD)[:, None], np.inf)
    return grid[distance.argmin(0)]


def tune_binary_threshold(y_true, p_positive, grid: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> float:
    """The threshold on the positive class's probability that maximises macro-F1 on a validation set.

    Binary single-label tasks (VSO sentiment) whose classes are imbalanced: the argmax rule
    (threshold 0.5) rarely gives the best macro-F1. ``y_true`` {0, 1} [N] (1 = positive),
    ``p_positive`` [N]. Among equal scores the value nearest 0.5 wins. Tune on validation data, then predict "positive" on test data when
    ``p_positive >= threshold``.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(p_positive, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"y_true and p_positive must be non-empty and the same length, got {y.shape} and {p.shape}")
    grid = np.asarray(grid, dtype=np.float64)
    f1 = np.array([_f1(y, p >= g, 2, "macro") for g in grid])  # [G]
    best = f1 >= f1.max() - 1e-12
    return float(grid[np.where(best, np.abs(grid - DEFAULT_THRESHOLD), np.inf).argmin()])


@dataclass(frozen=True)
class SubsetHeadTable:
    """The score of every head on every modality subset (Pagé Fortin's Tables 1-3).

    ``frame``: index ``subset`` (each non-empty subset of the available modalities, named like the
    heads, e.g. ``"image+text"``, then ``"all"``), columns ``n`` (examples in the row), the seven
    heads and ``routed``. ``metric``: "accuracy", or "macro_f1" for multi-label ``y_true``.
    """

    metric: str
    available: tuple[str, ...]
    frame: pd.DataFrame

    def to_dict(self) -> dict:
        """JSON form: {metric, available, rows: [{subset, n, heads: {head: score}, routed}]} (NaN kept)."""
        rows = [{"subset": subset, "n": int(row["n"]), "heads": {head: float(row[head]) for head in HEADS},
                 "routed": float(row["routed"])} for subset, row in self.frame.iterrows()]
        return {"metric": self.metric, "available": list(self.available), "rows": rows}


def _head_has_modalities(masks: np.ndarray, head: str) -> np.ndarray:
    """bool [N]: the examples that have every modality of ``head``."""
    return masks[:, [MODALITIES.index(m) for m in head.split("+")]].all(1)


def subset_head_accuracy(y_true, probs_by_head: Mapping[str, np.ndarray], masks,
                         available: Sequence[str] = MODALITIES, thresholds=None) -> SubsetHeadTable:
    """Score of each of the multitask model's seven heads on the examples of each modality subset.

    ``y_true`` int [N] class indices (score: accuracy of the argmax) or multi-hot [N, K] (score:
    multi-label macro F1 at ``thresholds``, see :func:`multilabel_metrics`); ``probs_by_head``
    {head: [N, K]} for the heads of :data:`moodlake.models.multitask.HEADS` (rows of examples
    that lack a modality of the head may be anything, NaN included: they are never read);
    ``masks`` bool [N, 3] (image, text, tags present); ``available``: the modalities treated as
    present where the mask says so (default all three). Restricting ``available`` simulates
    missing modalities at test time; this is exact because a head reads only its own modalities.

    Table rows: each non-empty subset S of ``available`` holds the examples whose available
    modalities are exactly S (``n`` of them). A head's cell is its score on those examples when
    the head's modalities are all in S, else NaN (the head cannot be applied). ``routed`` scores
    each example by the head of exactly its modalities, so in row S it equals head S's cell.
    The last row, ``all``, holds every example with at least one available modality: a head's
    cell is its score on all examples it can be applied to, ``routed`` the model's overall
    score (the production prediction). Examples with no available modality are left out. For
    accuracy, routed on ``all`` is the n-weighted mean of the per-subset routed accuracies; a
    macro F1 does not decompose so.
    """
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != len(MODALITIES):
        raise ValueError(f"masks must be bool [N, 3] in the order {MODALITIES}, got {masks.dtype} {masks.shape}")
    available = tuple(available)
    if not available or len(set(available)) != len(available) or not set(available) <= set(MODALITIES):
        raise ValueError(f"available must be distinct modalities among {MODALITIES}, got {available}")
    unknown = set(probs_by_head) - set(HEADS)
    if unknown:
        raise ValueError(f"probs_by_head has unknown heads {sorted(unknown)}; heads are {HEADS}")
    subsets = [head for head in HEADS if set(head.split("+")) <= set(available)]
    missing = [head for head in subsets if head not in probs_by_head]
    if missing:
        raise ValueError(f"probs_by_head lacks the heads {missing} (needed for available={available})")

    n = masks.shape[0]
    masks = masks & np.array([m in available for m in MODALITIES])
    applies = {head: _head_has_modalities(masks, head) for head in subsets}
    probs, k = {}, None
    for head in subsets:
        p = np.asarray(probs_by_head[head], dtype=np.float64)
        if p.ndim == 2 and p.shape[0] == n:
            p = np.where(applies[head][:, None], p, 0.0)  # rows the head cannot be applied to are never read
        probs[head] = _check_probabilities(p, n, k, f"probs_by_head[{head!r}]")
        k = probs[head].shape[1]

    if np.ndim(y_true) == 2:
        metric, y_true = "macro_f1", _check_multi_hot(y_true)
        if y_true.shape[1] != k:
            raise ValueError(f"y_true has {y_true.shape[1]} classes, the probabilities {k}")
        t = _check_thresholds(thresholds, k)

        def score(rows: np.ndarray, p: np.ndarray) -> float:
            return float(_f1(y_true[rows], p[rows] >= t, k, "macro"))
    else:
        metric, y_true = "accuracy", _check_class_indices(y_true, k)

        def score(rows: np.ndarray, p: np.ndarray) -> float:
            return float(accuracy_score(y_true[rows], p[rows].argmax(1)))
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} examples, masks {n}")

    exact = {head: applies[head] & (masks.sum(1) == len(head.split("+"))) for head in subsets}
    routed = np.zeros((n, k))
    for head in subsets:
        routed[exact[head]] = probs[head][exact[head]]
    groups = {**exact, "all": masks.any(1)}
    table = pd.DataFrame(np.nan, index=pd.Index(list(groups), name="subset"), columns=["n", *HEADS, "routed"])
    for subset, in_group in groups.items():
        table.loc[subset, "n"] = in_group.sum()
        for head in subsets:
            scored = in_group & applies[head]
            if scored.any() and (subset == "all" or set(head.split("+")) <= set(subset.split("+"))):
                table.loc[subset, head] = score(scored, probs[head])
        if in_group.any():
            table.loc[subset, "routed"] = score(in_group, routed)
    return SubsetHeadTable(metric, available, table.astype({"n": np.int64}))


def intensity_metrics(y_true, y_pred, names: Sequence[str] = EMOTIONS) -> dict:
    """Metrics of emotion intensities in [0, 3] (Williams et al.'s BLSTM on CMU-MOSEI), per emotion and mean.

    Computed by :func:`moodlake.models.williams.emotion_metrics`, whose definitions these are:
    both intensities are rounded to the nearest class in {0, 1, 2, 3} (``numpy.rint``: halves go
    to the even class, so 0.5 -> 0 and 2.5 -> 2); ``four_class_accuracy`` compares those
    classes, ``binary_accuracy`` compares "class > 0" (emotion present: intensity above 0.5);
    ``mae`` is the mean absolute error of the raw intensities; ``pearson_r`` the correlation of
    the raw intensities, NaN where predictions or targets are constant.

    ``y_true`` and ``y_pred`` float [N, E], ``names`` the E emotions. Keys: ``n``, ``names``,
    ``per_emotion`` {name: {mae, binary_accuracy, four_class_accuracy, pearson_r}}, ``mean``
    {the same four: the unweighted mean over emotions; pearson_r over the emotions where it is
    defined, NaN if none}.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    names = _check_labels(names)
    if t.ndim != 2 or t.shape[0] == 0 or p.shape != t.shape or t.shape[1] != len(names):
        raise ValueError(f"y_true and y_pred must both be [N>0, E={len(names)}], got {t.shape} and {p.shape}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite")
    flat = emotion_metrics(p, t, tuple(names))
    keys = ("mae", "binary_accuracy", "four_class_accuracy", "pearson_r")
    per_emotion = {name: {key: flat[f"{key}/{name}"] for key in keys} for name in names}
    mean = {key: float(np.mean([per_emotion[name][key] for name in names])) for key in keys[:3]}
    defined = [r for r in (per_emotion[name]["pearson_r"] for name in names) if not np.isnan(r)]
    mean["pearson_r"] = float(np.mean(defined)) if defined else float("nan")
    return {"n": int(t.shape[0]), "names": names, "per_emotion": per_emotion, "mean": mean}


BASELINE_DRAWS = 10
"""Seeded draws averaged by :func:`random_intensity_baselines`."""


def random_intensity_baselines(y_train, n: int, names: Sequence[str] = EMOTIONS, draws: int = BASELINE_DRAWS,
                               seed: int = 0, y_true=None) -> dict:
    """:func:`intensity_metrics` of random predictors on ``y_true`` [n, E], each averaged over ``draws``
    seeded draws (``n`` must be ``len(y_true)``):

    - ``random (training distribution)``: each segment's intensity of each emotion drawn from the
      training split's intensities of that emotion (``y_train`` [M, E]): a predictor that knows how
      often and how strongly each emotion occurs, and nothing about the segment. This is the random
      baseline the model has to beat; Williams et al. report theirs next to the model in the same
      metrics (their paper's exact sampling could not be checked here: offline).
    - ``random (uniform 0-3)``: intensities uniform in [0, 3].

    Returns ``{baseline name: {"mean": {metric: value}, "per_emotion": ...}}`` where every value is
    the mean over the draws (a Pearson r undefined in a draw is left out of that draw's mean).
    """
    train = np.asarray(y_train, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.float64)
    names = _check_labels(names)
    if train.ndim != 2 or train.shape[0] == 0 or train.shape[1] != len(names):
        raise ValueError(f"y_train must be [M>0, E={len(names)}], got {train.shape}")
    if t.shape != (n, len(names)):
        raise ValueError(f"y_true must be [n={n}, E={len(names)}], got {t.shape}")
    rng = np.random.default_rng(seed)
    samplers = {
        "random (training distribution)": lambda: np.stack(
            [rng.choice(train[:, k], size=n, replace=True) for k in range(len(names))], 1),
        "random (uniform 0-3)": lambda: rng.uniform(0.0, 3.0, size=(n, len(names))),
    }
    out = {}
    for name, draw in samplers.items():
        runs = [intensity_metrics(t, draw(), names) for _ in range(draws)]
        keys = ("mae", "binary_accuracy", "four_class_accuracy", "pearson_r")
        out[name] = {
            "n": n, "names": names, "draws": draws,
            "mean": {k: _nanmean([r["mean"][k] for r in runs]) for k in keys},
            "per_emotion": {e: {k: _nanmean([r["per_emotion"][e][k] for r in runs]) for k in keys} for e in names},
        }
    return out


def _nanmean(values) -> float:
    """The mean of the values that are not NaN; NaN (without a warning) when all are."""
    v = np.asarray(values, dtype=np.float64)
    return float(v[~np.isnan(v)].mean()) if (~np.isnan(v)).any() else float("nan")
