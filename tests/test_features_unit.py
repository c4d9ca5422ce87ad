"""The per-post feature rules, without Spark."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from moodlake.config import ConfigError, SplitSpec, load_config
from moodlake.data.splits import assign_split, hash_unit
from moodlake.data.text import clean_text, is_english, normalise_tags, tokenize
from moodlake.data.vocab import Vocab
from moodlake.features import derive_sentiment, featurize, prepare_image
from moodlake.sources.datasets import parse_vso_text
from tests import helpers

CFG = load_config(environ={})
S = CFG.features


def test_clean_text_removes_hypertext_keeps_urls_and_caps():
    t = clean_text("Title <b>bold</b>", "line one\nline two<!-- hidden\ncomment --> &amp; "
                   "<a href='http://x.org/p'>http://x.org/p</a>\r\n\tend")
    assert t == "Title bold line one line two & http://x.org/p end"
    assert len(clean_text("x" * 5000)) == 4096
    assert clean_text(None, "  <br/> ") is None


def test_tokens_tags_and_english():
    assert tokenize("Don't stop, it's 2013! http://x.org") == ["don't", "stop", "it's", "2013", "http", "x", "org"]
    assert normalise_tags(["#Beach", "beach ", "", "Sea", "SEA", "sun"], max_tags=2) == ["beach", "sea"]
    assert is_english(tokenize("What a wonderful day at the beach with my family"))
    assert not is_english(tokenize("Qué día tan bonito en la playa con mi familia"))
    assert not is_english(tokenize("sunset beach"))  # no function word


def _decode(jpeg_bytes):
    return Image.open(io.BytesIO(jpeg_bytes))


@pytest.mark.parametrize("make, size", [(lambda: helpers.jpeg(640, 480), (640, 480)), (helpers.png, (40, 30)),
                                        (helpers.gif, (20, 20))])
def test_images_become_224_jpegs(make, size):
    out, why = prepare_image(make(), 256, 224, 90)
    assert why is None and out[:3] == b"\xff\xd8\xff"
    im = _decode(out)
    assert (im.size, im.mode) == ((224, 224), "RGB")


def test_centre_crop_keeps_the_centre():
    im = Image.new("RGB", (512, 256), (0, 0, 255))
    im.paste((255, 0, 0), (192, 0, 320, 256))  # a red band in the middle
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out, _ = prepare_image(buf.getvalue(), 256, 224, 95)
    px = _decode(out).load()
    assert px[112, 112][0] > 200 and px[112, 112][2] < 60   # centre red
    assert px[2, 112][2] > 200                               # left edge blue


def test_transparent_png_on_white_and_unusable_images():
    im = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out, _ = prepare_image(buf.getvalue(), 256, 224, 95)
    assert _decode(out).getpixel((100, 100))[0] > 240
    assert prepare_image(helpers.truncated_jpeg(), 256, 224, 90)[0] is None
    assert prepare_image(b"<html>", 256, 224, 90)[1].startswith("UnidentifiedImageError")
    assert prepare_image(None, 256, 224, 90) == (None, "no image")


def _post(**kw):
    base = {"post_id": "x:1", "source": "x", "content_hash": "h", "title": None, "description": None,
            "tags": [], "image": None, "image_status": "missing", "label_set": "mikels8", "label": None,
            "labels": [], "label_dist_json": None, "label_agree": None}
    return {**base, **kw}


def test_featurize_mask_and_the_post_with_nothing_usable():
    f = featurize(_post(title="Happy <i>day</i>", tags=["Sun"], image=helpers.jpeg(300, 300), image_status="ok",
                        label="awe", labels=["awe"]), S)
    assert (f["has_image"], f["has_text"], f["has_tags"]) == (True, True, True)
    assert f["text"] == "Happy day" and f["tags"] == ["sun"] and f["sentiment"] == "positive"
    assert f["failure_code"] is None
    bad = featurize(_post(image=helpers.truncated_jpeg(), image_status="truncated", image_error="image file is truncated"), S)
    assert bad["failure_code"] == "no_usable_modality"
    assert bad["failure_reason"] == "image truncated: image file is truncated; no text; no tags"


def test_english_filter_is_optional():
    import dataclasses

    post = _post(description="hola amigos que tal", tags=["x"])
    assert featurize(post, S)["has_text"]
    f = featurize(post, dataclasses.replace(S, english_filter=True))
    assert not f["has_text"] and f["has_tags"]
    short = _post(description="the cat", tags=["x"])
    assert not featurize(short, dataclasses.replace(S, english_filter=True))["has_text"]  # < 5 words


def test_sentiment_from_emotions():
    m = S.sentiment_map
    assert derive_sentiment("ekman7", None, ["joy", "surprise"], m) == "positive"
    assert derive_sentiment("ekman7", None, ["joy", "anger"], m) is None  # mixed
    assert derive_sentiment("ekman7", "surprise", [], m) is None          # not mapped
    assert derive_sentiment("sentiment2", "negative", [], m) == "negative"


def test_vso_pages_of_both_kinds():
    insta = ('Metadata \n<meta property="twitter:title" content="My baby &amp; me" />\n'
             '<meta property="og:description" content="blacchyna\'s photo on Instagram">\n'
             'Comment by: \nblacchyna\nComment: \nMy baby\nComment Time: \ndatetime="2012-11-27T21:31:43+00:00">1w</time>\n'
             'Comment by: \nfan\nComment: \nAww\nComment Time: \ndatetime="2012-12-02T05:29:26+00:00">4d</time>\n')
    p = parse_vso_text(insta)
    assert (p["caption"], p["owner"], p["uploaded_at"]) == ("My baby & me", "blacchyna", "2012-11-27T21:31:43+00:00")
    assert p["comments"] == "blacchyna: My baby\nfan: Aww"
    twitpic = ('Metadata \n<meta property="og:title" content="#Memories - via @Petra"/>\n'
               '<meta name="twitter:title" value="" />\n<meta name="twitter:description" value="#Memories" />\n'
               '<meta name="twitter:creator" value="@Petra" />\n')
    p = parse_vso_text(twitpic)
    assert (p["caption"], p["owner"], p["comments"]) == ("#Memories", "Petra", None)


def test_splits_are_deterministic_and_follow_the_fractions():
    spec = CFG.dataset("synthetic").split
    ids = [f"synthetic:s7-{i:07d}" for i in range(20_000)]
    first = [assign_split(i, None, spec) for i in ids]
    assert first == [assign_split(i, None, spec) for i in ids]
    share = {s: first.count(s) / len(ids) for s in ("train", "val", "test")}
    assert share == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1}, abs=0.01)
    assert 0 <= hash_unit("a", 0) < 1 and hash_unit("a", 0) != hash_unit("a", 1)


def test_a_hash_split_can_sample_a_source_out():
    spec = SplitSpec(train=0.1, val=0.0, test=0.0, drop=0.9, seed=0)
    ids = [f"goemotions:{i}" for i in range(20_000)]
    got = [assign_split(i, "train", spec) for i in ids]
    assert set(got) == {"train", "sampled_out"} and got.count("train") / len(ids) == pytest.approx(0.1, abs=0.01)
    assert assign_split("a", None, SplitSpec(train=1.0, val=0.0, test=0.0)) == "train"
    # a larger sample keeps every post of a smaller one (the lowest hash units are kept)
    larger = SplitSpec(train=0.2, val=0.0, test=0.0, drop=0.8, seed=0)
    kept = {i for i, s in zip(ids, got) if s == "train"}
    assert kept < {i for i in ids if assign_split(i, "train", larger) == "train"}
    with pytest.raises(ConfigError, match="must be 1"):
        SplitSpec(train=0.1, val=0.0, test=0.0, drop=0.8)
    with pytest.raises(ConfigError, match="negative"):
        SplitSpec(train=1.1, val=0.0, test=0.0, drop=-0.1)
    with pytest.raises(ConfigError, match="only the hash scheme"):
        SplitSpec(scheme="folds", test_fold="partition1", train=0.8, val=0.1, test=0.0, drop=0.1)


def test_the_vso_datasets_with_extra_posts_keep_vso_folds_and_add_training_posts_only():
    vso = CFG.dataset("vso-twitter")
    for name in ("vso-twitter-plus-images", "vso-twitter-plus-texts"):
        d = CFG.dataset(name)
        assert d.label_set == vso.label_set and d.split == vso.split and "vso-twitter" not in d.source_splits
        for source, spec in d.source_splits.items():
            splits = {assign_split(f"{source}:{i}", ss, spec) for i in range(3000) for ss in ("train", "dev")}
            assert splits <= {"train", "sampled_out"} and "train" in splits, (name, source)


def test_fold_and_source_schemes():
    folds = CFG.dataset("vso-twitter").split
    assert assign_split("vso-twitter:1", "partition1", folds) == "test"
    others = [assign_split(f"vso-twitter:{i}", "partition2", folds) for i in range(2000)]
    assert set(others) == {"train", "val"} and others.count("val") / 2000 == pytest.approx(0.1, abs=0.02)
    src = CFG.dataset("goemotions").split
    assert assign_split("goemotions:a", "dev", src) == "test"
    assert assign_split("goemotions:a", "test", src) == "drop"  # not mapped
    assert {assign_split(f"goemotions:{i}", "train", src) for i in range(200)} == {"train", "val"}


def test_vocab_ids_and_version():
    v = Vocab(("<PAD>", "<UNK>", "happy", "day"), ("<PAD>", "<UNK>", "sun"), ("<PAD>", "<UNK>", "a", "b"))
    assert v.word_ids(["happy", "sad", "day"]) == [2, 1, 3]
    assert v.tag_ids(["sun"] * 12) == [2] * 10
    assert v.char_ids("abc") == [2, 3, 1]
    again = Vocab.from_json(v.to_json())
    assert again == v and again.version == v.version
    tampered = json.loads(v.to_json())
    tampered["words"].append("extra")
    with pytest.raises(ValueError, match="does not match"):
        Vocab.from_json(json.dumps(tampered))
    with pytest.raises(ValueError, match="must start with"):
        Vocab(("happy",), ("<PAD>", "<UNK>"), ("<PAD>", "<UNK>"))
