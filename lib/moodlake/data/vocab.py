"""Vocabularies of words, tags and characters, built from the training split only.

Words and tags seen fewer than ``min_count`` times in the training rows become ``<UNK>``
(Pagé Fortin & Chaib-draa); index 0 is ``<PAD>``, 1 is ``<UNK>``, then by frequency (ties in
alphabetical order), so the same rows always give the same vocabulary. The version is a hash of
the content; the vocabulary is stored with the dataset (``vocab.json``) and later with every
model trained on it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from moodlake.data.schema import MAX_CHARS, MAX_TAGS, MAX_WORDS, PAD, UNK

SPECIALS = ("<PAD>", "<UNK>")


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    chars: tuple[str, ...]

    def __post_init__(self):
        for kind in ("words", "tags", "chars"):
            if tuple(getattr(self, kind)[:2]) != SPECIALS:
                raise ValueError(f"{kind} must start with {SPECIALS}")
        object.__setattr__(self, "_index", {k: {t: i for i, t in enumerate(getattr(self, k))}
                                            for k in ("words", "tags", "chars")})

    @property
    def version(self) -> str:
        blob = json.dumps([self.words, self.tags, self.chars], ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:12]

    def _ids(self, kind: str, tokens: Iterable[str], limit: int) -> list[int]:
        index = self._index[kind]  # type: ignore[attr-defined]
        return [index.get(t, UNK) for t in list(tokens)[:limit]]

    def word_ids(self, words: Sequence[str], limit: int = MAX_WORDS) -> list[int]:
        return self._ids("words", words, limit)

    def tag_ids(self, tags: Sequence[str], limit: int = MAX_TAGS) -> list[int]:
        return self._ids("tags", tags, limit)

    def char_ids(self, text: str | None, limit: int = MAX_CHARS) -> list[int]:
        return self._ids("chars", text or "", limit)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "words": self.words, "tags": self.tags, "chars": self.chars},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        d = json.loads(text)
        v = cls(tuple(d["words"]), tuple(d["tags"]), tuple(d["chars"]))
        if d.get("version") not in (None, v.version):
            raise ValueError(f"vocabulary version {d['version']} does not match its content ({v.version})")
        return v

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _counted(df: DataFrame, column, min_count: int) -> tuple[str, ...]:
    rows = (df.select(column.alias("t")).where(F.col("t").isNotNull() & (F.col("t") != ""))
            .groupBy("t").count().where(F.col("count") >= min_count)
            .orderBy(F.desc("count"), F.asc("t")).collect())
    return SPECIALS + tuple(r["t"] for r in rows if r["t"] not in SPECIALS)


def build_vocab(train: DataFrame, min_word_count: int = 5, min_tag_count: int = 5, min_char_count: int = 1) -> Vocab:
    """The vocabulary of the training rows of ``post_features`` (columns text_words, tags, text).

    Words count only in the part a model sees (the first 150 words; the first 4,096 characters)."""
    words = _counted(train, F.explode(F.slice("text_words", 1, MAX_WORDS)), min_word_count)
    tags = _counted(train, F.explode(F.slice("tags", 1, MAX_TAGS)), min_tag_count)
    # characters are counted in Python, by code point, exactly as char_ids reads them (Spark's
    # split(text, '') would cut emoji into UTF-16 halves)
    counts = (train.select("text").where(F.col("text").isNotNull()).rdd
              .flatMap(lambda r: r.text[:MAX_CHARS]).map(lambda c: (c, 1)).reduceByKey(lambda a, b: a + b)
              .filter(lambda kv: kv[1] >= min_char_count).collect())
    chars = SPECIALS + tuple(c for c, _ in sorted(counts, key=lambda kv: (-kv[1], kv[0])))
    return Vocab(words, tags, chars)
