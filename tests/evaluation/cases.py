"""Small hand-made cases shared by the metric and report tests."""
from __future__ import annotations

import numpy as np

from moodlake.models.multitask import HEADS, MODALITIES


def one_hot_probs(y_pred, k: int) -> np.ndarray:
    """Probabilities whose argmax is ``y_pred``: 0.8 there, the rest shared."""
    probs = np.full((len(y_pred), k), 0.2 / (k - 1))
    probs[np.arange(len(y_pred)), y_pred] = 0.8
    return probs


# a a a a b b b c c c, predicted a a b c b b a c c b
Y3_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y3_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])


ML_TRUE = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
ML_PROB = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.55]])


def intensities_case():
    """Two emotions by hand: joy varies, fear's targets are constant."""
    y_true = np.array([[0, 1], [1, 1], [2, 1], [3, 1]], dtype=float)
    y_pred = np.array([[0.4, 0.2], [1.6, 1.0], [2.0, 1.4], [2.4, 1.0]])
    return y_true, y_pred


def modality_case(n_per_pattern: int = 6, seed: int = 0):
    """Every one of the 7 modality patterns ``n_per_pattern`` times, 2 classes, true class 0 everywhere.

    Each head is right or wrong on each example by a fixed random draw (``correct[head]`` [N]); its
    probabilities are [0.9, 0.1] when right, [0.1, 0.9] when wrong, NaN where it cannot be applied.
    """
    rng = np.random.default_rng(seed)
    patterns = [head for head in HEADS for _ in range(n_per_pattern)]
    masks = np.array([[m in pattern.split("+") for m in MODALITIES] for pattern in patterns])
    correct, probs = {}, {}
    for head in HEADS:
        correct[head] = rng.random(len(patterns)) < 0.6
        applies = np.array([set(head.split("+")) <= set(p.split("+")) for p in patterns])
        probs[head] = np.where(correct[head][:, None], [0.9, 0.1], [0.1, 0.9])
        probs[head][~applies] = np.nan
    return np.zeros(len(patterns), int), probs, masks, np.array(patterns), correct
