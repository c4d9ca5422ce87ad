"""Property-based tests (hypothesis) of the pure functions that hostile input reaches first:
text decoding and cleaning, tokenisation, tag normalisation, label resolution and config overrides.

Each property is an invariant that must hold for any input, including lone surrogates, control
characters, NULs, right-to-left text and emoji. The runs are derandomised and bounded so that CI
is reproducible and fast.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moodlake import content, records
from moodlake.config import Config, ConfigError, load_config
from moodlake.data.text import clean_text, normalise_tags, tokenize
from moodlake.features import derive_sentiment

BOUNDED = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

# Any code point, surrogates included, with the hostile ones made frequent.
HOSTILE_CHARS = st.one_of(
    st.characters(codec=None),  # every code point, lone surrogates included
    st.sampled_from(["\x00", "\x1b", "\u202e", "\u200f", "\u200b", "\ufeff", "\ud800", "\udfff", "\r",
                     "\u2028", "\x85", "😀", "İ", "ß", "ǅ", "ﬀ", "'", "#", "&", ";", "<", ">"]),
)
HOSTILE_TEXT = st.one_of(st.text(HOSTILE_CHARS, max_size=80),
                         st.lists(st.sampled_from(["\r\n", "👩\u200d👩\u200d👧", "שלום", "مرحبا", "a'b", "don't",
                                                   "🇫🇷", "e\u0301", "\u202eevil"]), max_size=8).map(" ".join))
# HTML-ish text: tags, comments, entities (single and double encoded), mixed with hostile text.
HTML_PIECES = st.sampled_from(["<b>", "</b>", "<a href='x'>", "<!-- c -->", "<!--", "-->", "&amp;", "&lt;",
                               "&gt;", "&amp;lt;b&amp;gt;", "&lt;i&gt;", "&#60;", "&#x3c;", "&#0;", "&nbsp;",
                               "&#x202e;", "<br/>", "< b>", "<3", "a<b", "\n", "\t", "  "])
HTML_TEXT = st.lists(st.one_of(HTML_PIECES, HOSTILE_TEXT), max_size=12).map("".join)
ANY_TEXT = st.one_of(HOSTILE_TEXT, HTML_TEXT)
_WORD = re.compile(r"\w+(?:'\w+)?")


# --------------------------------------------------------------------------- text decoding


@BOUNDED
@given(st.one_of(st.binary(max_size=200), ANY_TEXT))
def test_decode_text_always_gives_valid_utf8_without_nul(data):
    text, flags = content.decode_text(data, "title")
    assert isinstance(text, str)
    text.encode("utf-8")  # no lone surrogate survives: strict encoding must succeed
    assert "\x00" not in text
    assert all(f.startswith("title:") for f in flags)


@BOUNDED
@given(HOSTILE_TEXT)
def test_decode_text_round_trips_valid_utf8(s):
    s = s.encode("utf-8", "replace").decode("utf-8")  # a valid string
    text, flags = content.decode_text(s.encode("utf-8"), "d")
    assert text == s.replace("\x00", "")
    assert "d:non_utf8" not in flags


# --------------------------------------------------------------------------- cleaning


@BOUNDED
@given(st.lists(st.one_of(st.none(), ANY_TEXT), max_size=3), st.integers(1, 120))
@example(["&amp;lt;b&amp;gt;x&amp;lt;/b&amp;gt;"], 4096)  # double-encoded markup
@example(["&lt;b&gt;bold&lt;/b&gt; text"], 4096)
@example(["a &lt;!-- hidden --&gt; b"], 4096)
def test_clean_text_is_bounded_trimmed_tag_free_and_idempotent(parts, max_chars):
    text = clean_text(*parts, max_chars=max_chars)
    if text is None:
        return
    assert isinstance(text, str) and text
    assert len(text) <= max_chars
    assert text == text.strip()
    assert not re.search(r"\s\s", text) and not re.search(r"[\n\r\t]", text)
    assert not re.search(r"</?[A-Za-z][^>]*>", text)  # no markup, also none decoded from entities
    assert not re.search(r"<!--.*?-->", text, re.S)
    assert clean_text(text, max_chars=max_chars) == text  # cleaning clean text changes nothing


# --------------------------------------------------------------------------- tokenisation


@BOUNDED
@given(ANY_TEXT)
def test_tokens_are_words_and_round_trip(text):
    tokens = tokenize(text)
    for t in tokens:
        assert t and _WORD.fullmatch(t), t
        assert not any(c.isspace() for c in t)
    assert sum(map(len, tokens)) <= len(text.lower())
    assert tokenize(" ".join(tokens)) == tokens  # tokens survive being joined and read again
    assert all(t == t.lower() for t in tokens)  # lower case, so the vocabulary has one entry per word
    assert tokenize(text.upper()) == tokenize(text.upper().lower())


# --------------------------------------------------------------------------- tags


TAGS = st.one_of(st.none(), st.lists(st.one_of(ANY_TEXT, st.integers(), st.floats(allow_nan=True)), max_size=25))


@BOUNDED
@given(TAGS, st.integers(1, 12))
@example(["# #beach", "##Beach", " #beach "], 10)
def test_normalised_tags_are_unique_bounded_and_idempotent(tags, max_tags):
    out = normalise_tags(tags, max_tags)
    assert len(out) <= max_tags
    assert len(set(out)) == len(out)
    for t in out:
        assert t and t == t.strip() and not t.startswith("#")
    assert normalise_tags(out, max_tags) == out


@BOUNDED
@given(TAGS)
def test_clean_tags_keeps_every_non_empty_tag_stripped(tags):
    out, flags = content.clean_tags(tags)
    assert all(t and t == t.strip() and "\x00" not in t for t in out)
    assert all(isinstance(f, str) and ":" in f for f in flags)
    assert len(out) <= (len(tags) if tags else 0)


# --------------------------------------------------------------------------- labels


LABEL_SETS = st.one_of(st.none(), st.lists(st.text(max_size=8), min_size=1, max_size=8, unique=True).map(tuple))


@BOUNDED
@given(st.one_of(st.none(), st.text(max_size=8)), LABEL_SETS)
def test_resolve_label_gives_a_member_or_none_with_a_flag(label, label_set):
    flags: list[str] = []
    out = records.resolve_label(label, label_set, flags)
    if out is None:
        assert not label or flags == ["label:unknown"]
    else:
        assert out == label and (label_set is None or out in label_set) and not flags


@BOUNDED
@given(st.one_of(st.none(), st.text(max_size=8)), st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=6)),
       LABEL_SETS)
def test_post_labels_are_members_without_repeats_and_unknowns_are_flagged(label, labels, label_set):
    row = records.post_row(source="s", source_id="1", raw={}, label=label, labels=labels,
                           label_set=label_set, label_set_name="ls")
    given_labels = [x for x in (labels or ([label] if label else [])) if x]
    assert len(set(row["labels"])) == len(row["labels"])
    if label_set is not None:
        assert row["label"] in (None, *label_set) and set(row["labels"]) <= set(label_set)
    assert set(row["labels"]) == {x for x in given_labels if label_set is None or x in label_set}
    unknown = (label and label_set is not None and label not in label_set) or any(
        label_set is not None and x not in label_set for x in given_labels)
    assert ("label:unknown" in row["quality_flags"]) == bool(unknown)
    assert (row["label_set"] is None) == (row["label"] is None and not row["labels"])


@BOUNDED
@given(st.one_of(st.none(), st.sampled_from(["sentiment2", "sentiment3", "ekman7", "mikels8"])),
       st.one_of(st.none(), st.text(max_size=10), st.sampled_from(["joy", "anger", "positive", "negative"])),
       st.one_of(st.none(), st.lists(st.sampled_from(["joy", "anger", "fear", "awe", "zzz"]), max_size=4)))
def test_derived_sentiment_is_binary_or_none(label_set, label, labels):
    mapping = {"joy": "positive", "awe": "positive", "anger": "negative", "fear": "negative"}
    out = derive_sentiment(label_set, label, labels, mapping)
    assert out in (None, "positive", "negative")


# --------------------------------------------------------------------------- config overrides

_BASE = Config()
_EMPTY_ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def small_conf(tmp_path_factory):
    """A small conf/ tree of our own (the committed one takes ~0.1 s to parse per load)."""
    root = tmp_path_factory.mktemp("conf")
    for d in ("base", "demo"):
        (root / d).mkdir()
    (root / "base" / "moodlake.yaml").write_text(
        "spark: {master: 'local[2]', conf: {spark.ui.enabled: 'false'}}\n"
        "features: {sentiment_map: {joy: positive, anger: negative}}\n"
        "label_sets: {ekman7: [anger, disgust, fear, joy, neutral, sadness, surprise]}\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOODLAKE_CONF_DIR", str(root))
    yield root
    mp.undo()


def _fields(section):
    return [(f"{f.name}", f.type) for f in dataclasses.fields(section)]


INT_KEYS = [f"{s}.{k}" for s in ("ingest", "features", "scoring", "maintenance", "sql_server", "flickr")
            for k, t in _fields(getattr(_BASE, s)) if t == "int"]
STR_KEYS = ["spark.app_name", "spark.driver_memory", "lakehouse.database", "lakehouse.metastore_uri",
            "flickr.image_size", "scoring.label_set", "nightly.flickr_tags", "nightly.flickr_text"]
# Text a shell could pass: any code point (surrogates stand for undecodable argv bytes).
OVERRIDE_TEXT = st.one_of(
    st.text(HOSTILE_CHARS, max_size=30),
    st.sampled_from(["0x1F", "010", "1_000", "yes", "no", "on", "~", "null", "2024-01-01", "1.5", ".inf",
                     "[a, b]", "{a: 1}", "a: b", "'quoted'", "- x", "!!python/object:os.system ls", "&a x", "*a"]),
)


def _load(overrides):
    return load_config("demo", overrides=overrides, environ=_EMPTY_ENV)


def _get(cfg, dotted):
    obj = cfg
    for p in dotted.split("."):
        obj = getattr(obj, p)
    return obj


@BOUNDED
@given(st.sampled_from(STR_KEYS), OVERRIDE_TEXT)
@example("spark.app_name", "0x1F")      # YAML would read a hex int
@example("lakehouse.database", "010")   # ... an octal int
@example("spark.app_name", "yes")       # ... a bool
@example("scoring.label_set", "2024-01-01")  # ... a date
def test_a_string_override_applies_exactly_or_is_a_config_error(key, value):
    try:
        cfg = _load({key: value})
    except ConfigError as e:
        assert key in str(e) and f"override {key}" in str(e)
        return
    assert _get(cfg, key) == value


@BOUNDED
@given(st.sampled_from(INT_KEYS), st.one_of(st.integers(-10**12, 10**12).map(str), OVERRIDE_TEXT))
@example("ingest.chunk_size", "010")   # ten, not YAML 1.1's octal eight
@example("ingest.chunk_size", "0x10")  # an explicit hex int is sixteen
@example("ingest.chunk_size", "true")  # not a number
def test_an_int_override_applies_exactly_or_is_a_config_error(key, raw):
    try:
        cfg = _load({key: raw})
    except ConfigError as e:
        # the key, or (a check across keys) its section
        assert f"override {key}" in str(e) or key.split(".")[0] in str(e), str(e)
        return
    if raw.strip().lstrip("+-").isdecimal():
        expected = int(raw)
    else:
        expected = yaml.safe_load(raw)
        assert isinstance(expected, int) and not isinstance(expected, bool), (raw, _get(cfg, key))
    assert _get(cfg, key) == expected and type(_get(cfg, key)) is int


FLOAT_KEYS = ["flickr.timeout_s", "flickr.backoff_max_s", "ingest.progress_interval_s", "scoring.progress_interval_s"]


@BOUNDED
@given(st.sampled_from(FLOAT_KEYS), st.floats(0.01, 1e6).flatmap(
    lambda x: st.sampled_from([repr(x), f"{x:e}", f"{x:.3E}", str(int(x)) if x >= 1 else repr(x)])))
@example("flickr.timeout_s", "1e3")  # YAML 1.1 reads '1e3' as a string
def test_a_float_override_in_any_notation_applies_exactly_or_is_a_config_error(key, raw):
    try:
        cfg = _load({key: raw})
    except ConfigError as e:
        assert key.split(".")[0] in str(e), str(e)
        return
    assert _get(cfg, key) == float(raw)


KEY_PARTS = st.one_of(st.sampled_from(["spark", "ingest", "features", "chunk_size", "master", "label_sets",
                                       "env", "tables", "conf", "", "__class__", "x"]),
                      st.text(HOSTILE_CHARS, max_size=6))


@BOUNDED
@given(st.lists(KEY_PARTS, min_size=1, max_size=4).map(".".join), OVERRIDE_TEXT)
@example("lakehouse.home", "a\x00b")   # an embedded NUL in a path
@example("scoring.batch_size", "0")    # refused by the section's own check
@example("spark", "local")              # a whole section replaced by a scalar
def test_any_override_loads_or_raises_config_error(key, value):
    try:
        _load({key: value})
    except ConfigError as e:
        assert str(e)
    # any other exception type fails the test with its traceback


@BOUNDED
@given(st.sampled_from(STR_KEYS + INT_KEYS), OVERRIDE_TEXT)
def test_environment_variables_behave_like_overrides(key, value):
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value) or not value:
        return  # an environment cannot hold these
    var = "MOODLAKE__" + "__".join(p.upper() for p in key.split("."))
    outcomes = []
    for load in (lambda: _load({key: value}), lambda: load_config("demo", environ={var: value})):
        try:
            outcomes.append(("ok", _get(load(), key)))
        except ConfigError:
            outcomes.append(("error", None))
    assert outcomes[0] == outcomes[1]


def test_the_properties_are_bounded_for_ci():
    assert BOUNDED.max_examples <= 200 and BOUNDED.derandomize and BOUNDED.deadline is None
    assert len(INT_KEYS) >= 10 and "ingest.chunk_size" in INT_KEYS  # the int properties do sample int keys
    with pytest.raises(ConfigError, match="scoring.batch_size"):
        _load({"scoring.batch_size": "0"})
