"""Content checks: real image formats, lies in file names, broken bytes, bad text."""
from __future__ import annotations

from moodlake import content, records
from tests import helpers


def test_valid_jpeg():
    c = content.check_image(helpers.jpeg(64, 48), "a.jpg")
    assert (c.status, c.mime, c.width, c.height, c.flags) == ("ok", "image/jpeg", 64, 48, ())


def test_png_named_jpg_is_valid_but_flagged():
    c = content.check_image(helpers.png(40, 30), "17.jpg")
    assert (c.status, c.mime, c.width) == ("ok", "image/png", 40)
    assert "image:extension_mismatch" in c.flags


def test_animated_gif_named_jpg():
    c = content.check_image(helpers.gif(3), "5.jpg")
    assert c.status == "ok" and c.mime == "image/gif"
    assert {"image:extension_mismatch", "image:animated"} <= set(c.flags)


def test_truncated_jpeg():
    c = content.check_image(helpers.truncated_jpeg(), "t.jpg")
    assert c.status == "truncated" and c.mime == "image/jpeg" and "image:truncated" in c.flags


def test_corrupt_jpeg():
    c = content.check_image(helpers.corrupt_jpeg(), "c.jpg")
    assert c.status in ("corrupt", "truncated") and c.detail


def test_html_error_page_is_not_an_image():
    c = content.check_image(b"<!DOCTYPE html><html><body>404</body></html>", "x.jpg")
    assert c.status == "not_an_image" and c.mime is None and "HTML" in c.detail


def test_empty_missing_and_too_large():
    assert content.check_image(b"").status == "empty"
    assert content.check_image(None).status == "missing"
    assert content.check_image(helpers.jpeg(), max_bytes=10).status == "too_large"


def test_non_utf8_text_decodes_and_is_flagged():
    text, flags = content.decode_text("caf\xe9 na\xefve".encode("latin-1"), "title")
    assert text == "café naïve" and flags == ("title:non_utf8",)
    text, flags = content.decode_text("ok ✓".encode(), "title")
    assert text == "ok ✓" and flags == ()
    text, flags = content.decode_text(b"a\x00b", "description")
    assert text == "ab" and "description:nul_removed" in flags


def test_tags_empty_removed_duplicates_flagged():
    tags, flags = content.clean_tags(["Sunset", "", "  ", "sunset", "beach"])
    assert tags == ["Sunset", "sunset", "beach"]
    assert set(flags) == {"tags:empty_removed", "tags:duplicates"}


def test_post_row_hash_follows_content():
    base = dict(source="export", source_id="1", raw={"x": 1}, title="hello", tags=["a"], image=helpers.jpeg())
    a, b = records.post_row(**base), records.post_row(**base)
    assert a["content_hash"] == b["content_hash"]
    assert records.post_row(**{**base, "title": "hello!"})["content_hash"] != a["content_hash"]
    assert records.post_row(**{**base, "image": helpers.jpeg(color=(1, 2, 3))})["content_hash"] != a["content_hash"]


def test_post_row_marks_unknown_label_and_keeps_post():
    r = records.post_row(source="export", source_id="1", raw={}, label="joyful", label_set=("joy", "anger"),
                         label_set_name="x")
    assert r["label"] is None and "label:unknown" in r["quality_flags"]
    r = records.post_row(source="export", source_id="1", raw={}, labels=["joy", "meh", "joy"],
                         label_set=("joy", "anger"), label_set_name="x")
    assert r["labels"] == ["joy"] and "label:unknown" in r["quality_flags"]


def test_failure_row_truncates_raw_and_is_stable():
    f = records.failure_row(source="s", input_ref="f.jsonl:3", stage="parse", reason_code="invalid_json",
                            reason="bad", permanent=True, raw="x" * 100_000)
    assert len(f["raw"]) < 70_000 and f["raw"].endswith("characters]")
    assert f["failure_id"] == records.failure_id("s", "f.jsonl:3") != records.failure_id("s", "f.jsonl:4")
