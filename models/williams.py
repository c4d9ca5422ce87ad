"""Early-fusion BLSTM for multi-label emotion intensities, after Williams et al.

J. Williams, S. Kleinegesse, R. Comanescu, O. Radu, "Recognizing Emotions in Video Using
Multimodal DNN Feature Fusion", ACL 2018 Workshop on Computational Modeling of Human Multimodal
Language (Grand Challenge on CMU-MOSEI).

Model (paper: early fusion): the audio, visual and text feature sequences, aligned to the same time steps (words), are
concatenated per step (early fusion), padded or cut to ``maxlen`` steps (15-30 in the paper),
read by a bidirectional LSTM with 64 units, a 100-unit dense layer with dropout, and 6 outputs,
one intensity per emotion (anger, disgust, fear, happiness, sadness, surprise), bounded to
[0, 3]; the loss is the mean absolute error. Metrics (paper: evaluation): MAE, binary accuracy (emotion
present or not), 4-class accuracy (intensity rounded to 0, 1, 2, 3) and Pearson's r per emotion.

The [0, 3] bound is ``3 * sigmoid`` (smooth, so MAE gradients never vanish at a clipped edge).
Default feature sizes are CMU-MOSEI's COVAREP audio (74), FACET visual (35) and GloVe text (300).

``modalities`` selects the paper's unimodal and bimodal variants (its Table 2 compares them with the
trimodal model): the BLSTM then reads the concatenation of those modalities only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .registry import register_model

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
MODALITIES = ("audio", "visual", "text")
MAX_INTENSITY = 3.0


class EarlyFusionBLSTM(nn.Module):
    """Concatenated per-step features -> BLSTM(64) -> dense 100 (ReLU, dropout) -> 6 intensities in [0, 3].

    ``forward(audio, visual, text, lengths=None)`` with [B, T, D_a], [B, T, D_v], [B, T, D_t] (those
    of ``modalities``; the others may be None), or ``forward(features=[B, T, sum of their D],
    lengths=...)``; ``lengths`` [B] are the real steps (steps past them are padding and ignored;
    None: all T steps are real). T <= maxlen.
    """

    def __init__(self, audio_dim: int = 74, visual_dim: int = 35, text_dim: int = 300, hidden: int = 64,
                 dense: int = 100, dropout: float = 0.5, num_outputs: int = len(EMOTIONS), maxlen: int = 20,
                 modalities: tuple[str, ...] = MODALITIES):
        super().__init__()
        modalities = tuple(modalities)
        if not modalities or len(set(modalities)) != len(modalities) or not set(modalities) <= set(MODALITIES):
            raise ValueError(f"modalities must be distinct, among {MODALITIES}; got {modalities}")
        self.modalities = tuple(m for m in MODALITIES if m in modalities)  # always in the order of MODALITIES
        all_dims = dict(zip(MODALITIES, (audio_dim, visual_dim, text_dim)))
        self.dims = tuple(all_dims[m] for m in self.modalities)
        self.maxlen = maxlen
        self.blstm = nn.LSTM(sum(self.dims), hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * hidden, dense)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dense, num_outputs)

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                text: torch.Tensor | None = None, *, features: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:
            given = dict(zip(MODALITIES, (audio, visual, text)))
            missing = [m for m in self.modalities if given[m] is None]
            if missing:
                raise ValueError(f"give the {', '.join(self.modalities)} sequences (missing {', '.join(missing)}), "
                                 "or their concatenation as features=")
            features = torch.cat([given[m] for m in self.modalities], 2)
        if features.shape[2] != sum(self.dims):
            raise ValueError(f"features have {features.shape[2]} dims per step, expected {sum(self.dims)} {self.dims}")
        if features.shape[1] > self.maxlen:
            raise ValueError(f"sequences have {features.shape[1]} steps, more than maxlen={self.maxlen}")
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long)
        packed = pack_padded_sequence(features, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.blstm(packed)  # h_n [2, B, hidden]: last real step forward, first step backward
        h = self.dropout(F.relu(self.dense(torch.cat([h_n[0], h_n[1]], 1))))
        return MAX_INTENSITY * torch.sigmoid(self.out(h))


def mae_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over examples and emotions (the paper's training loss)."""
    return F.l1_loss(predictions, targets)


def emotion_metrics(predictions: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                    emotions: tuple[str, ...] = EMOTIONS) -> dict[str, float]:
    """MAE, binary and 4-class accuracy, and Pearson r, overall (``mae``) and per emotion.

    Both predictions and targets are rounded to the nearest class in {0, 1, 2, 3}; 4-class
    accuracy compares those classes, binary accuracy compares "class > 0" (emotion present).
    Pearson r is NaN for an emotion whose predictions or targets are constant.
    Keys: ``mae``, ``mae/<emotion>``, ``binary_accuracy/<emotion>``, ``four_class_accuracy/<emotion>``,
    ``pearson_r/<emotion>``.
    """
    # The accuracies are means of equalities, not scikit-learn's accuracy_score (the same numbers): every
    # process that builds a model imports this module (moodlake.models registers it), Spark's scoring
    # workers included, and sklearn.metrics (with scipy) takes ~0.8 s to import there.
    p = np.asarray(predictions, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    p_class = np.clip(np.rint(p), 0, MAX_INTENSITY)
    t_class = np.clip(np.rint(t), 0, MAX_INTENSITY)
    metrics = {"mae": float(np.abs(p - t).mean())}
    for k, emotion in enumerate(emotions):
        metrics[f"mae/{emotion}"] = float(np.abs(p[:, k] - t[:, k]).mean())
        metrics[f"binary_accuracy/{emotion}"] = float(((p_class[:, k] > 0) == (t_class[:, k] > 0)).mean())
        metrics[f"four_class_accuracy/{emotion}"] = float((p_class[:, k] == t_class[:, k]).mean())
        if p[:, k].std() == 0 or t[:, k].std() == 0:
            metrics[f"pearson_r/{emotion}"] = float("nan")
        else:
            metrics[f"pearson_r/{emotion}"] = float(np.corrcoef(p[:, k], t[:, k])[0, 1])
    return metrics


@register_model
def williams_blstm(*, audio_dim: int = 74, visual_dim: int = 35, text_dim: int = 300, hidden: int = 64,
                   dense: int = 100, dropout: float = 0.5, num_outputs: int = len(EMOTIONS),
                   maxlen: int = 20, modalities: tuple[str, ...] = MODALITIES) -> EarlyFusionBLSTM:
    """Williams et al.'s early-fusion BLSTM for the 6 CMU-MOSEI emotion intensities (``modalities``:
    the unimodal and bimodal variants)."""
    return EarlyFusionBLSTM(audio_dim, visual_dim, text_dim, hidden, dense, dropout, num_outputs, maxlen,
                            tuple(modalities))
