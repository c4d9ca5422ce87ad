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
_TAG_PREFIX = re.compile(r"^[\s#]+")  # '#', '# #', ' ##' before a tag

# Function words that almost every English sentence of five words or more contains one of.
ENGLISH_STOPWORDS = frozenset(
    "the a an and or but of to in on at for with from by is are was were be been am i you he she "
    "it we they me my your our this that these those not no so if as what when how all just".split()
)


# Rounds of (remove markup, decode entities): markup escaped up to this many times over
# (``&amp;lt;b&amp;gt;``) is removed too; deeper nesting stays partly escaped. The bound keeps
# hostile input (``&amp;amp;amp;...``) linear in time.
_MAX_UNESCAPE_ROUNDS = 8


def _strip_markup(p: str) -> str:
    """Comments and tags removed and entities decoded until nothing changes (markup that was
    itself escaped is removed too, so cleaning clean text changes nothing), white space collapsed."""
    for _ in range(_MAX_UNESCAPE_ROUNDS):
        q = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", _COMMENT.sub(" ", p)))).strip()
        if q == p:
            break
        p = q
    return p


def clean_text(*parts: str | None, max_chars: int = 4096) -> str | None:
    """The parts (title, description) joined, HTML comments and tags removed, entities decoded,
    line breaks and runs of white space turned into single spaces, capped at ``max_chars``.
    None when nothing is left. Idempotent: ``clean_text(clean_text(x)) == clean_text(x)``."""
    pieces = [q for q in (_strip_markup(p) for p in parts if p) if q]
    # once more over the joined parts: a '<' ending one part and a '>' starting the next form a tag
    text = _strip_markup(" ".join(pieces))[:max_chars].strip()
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
    """Lower case, surrounding white space and leading '#' (any run of them) stripped, empty and
    repeated tags removed (first occurrence kept, order kept), the first ``max_tags`` kept."""
    out: list[str] = []
    seen = set()
    for t in tags if tags is not None else []:
        t = _TAG_PREFIX.sub("", str(t)).strip().lower()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
            if len(out) == max_tags:
                break
    return out
