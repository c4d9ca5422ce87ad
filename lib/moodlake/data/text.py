"""Text and tags as the models read them: cleaned, tokenised, normalised. Pure functions.

Cleaning follows St. Pierre: hypertext removed, line breaks turned into spaces, URLs and
non-English words kept, the result capped at 4,096 characters. The optional English filter
follows Pagé Fortin & Chaib-draa: keep English texts of 5 to 150 words.
"""
from __future__ import annotations

import html
import re
from functools import lru_cache

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+(?:'\w+)?", re.U)

# Function words that almost every English sentence of five words or more contains one of.
ENGLISH_STOPWORDS = frozenset(
    "the a an and or but of to in on at for with from by is are was were be been am i you he she "
    "it we they me my your our this that these those not no so if as what when how all just".split()
)


def clean_text(*parts: str | None, max_chars: int = 4096) -> str | None:
    """The parts (title, description) joined, HTML comments and tags removed, entities decoded,
    line breaks and runs of white space turned into single spaces, capped at ``max_chars``.
    None when nothing is left."""
    pieces = []
    for p in parts:
        if not p:
            continue
        p = _COMMENT.sub(" ", p)
        p = _TAG.sub(" ", p)
        p = html.unescape(p)
        p = _SPACE.sub(" ", p).strip()
        if p:
            pieces.append(p)
    text = " ".join(pieces)[:max_chars].strip()
    return text or None


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes); URLs fall into their parts."""
    return _WORD.findall(text.lower()) if text else []


@lru_cache(maxsize=1)
def _common_english_words(n: int = 30_000) -> frozenset[str]:
    """The ``n`` most frequent words of GloVe 6B (Wikipedia + Gigaword, frequency-ordered)."""
    import pyarrow.parquet as pq

    from moodlake.models.embeddings import glove_files

    words = pq.read_table(glove_files()[1]).column(0).slice(0, n).to_pylist()
    return frozenset(words)


def is_english(tokens: list[str], min_share: float = 0.7) -> bool:
    """A heuristic without a language model: at least one English function word, and at least
    ``min_share`` of the alphabetic tokens among the 30,000 most frequent GloVe words."""
    alpha = [t for t in tokens if t.isalpha()]
    if not alpha or not any(t in ENGLISH_STOPWORDS for t in alpha):
        return False
    common = _common_english_words()
    return sum(t in common for t in alpha) / len(alpha) >= min_share


def normalise_tags(tags, max_tags: int = 10) -> list[str]:
    """Lower case, surrounding white space and '#' stripped, empty and repeated tags removed
    (first occurrence kept, order kept), the first ``max_tags`` kept."""
    out: list[str] = []
    seen = set()
    for t in tags if tags is not None else []:
        t = str(t).strip().lstrip("#").strip().lower()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
            if len(out) == max_tags:
                break
    return out
