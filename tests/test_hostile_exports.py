"""Malformed export folders (``moodlake ingest dataset export``): every line ends as a post (its bad
parts flagged) or in ingest_failures with a reason; lines read = posts + failures; paths cannot
leave the export folder (``..``, absolute paths, links pointing outside): refused, never read.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from pyspark.sql import functions as F

from moodlake.ingest import ExecContext, Ingestor
from moodlake.sources.datasets import dataset_source
from tests import helpers

SECRET = b"TOP-SECRET-OUTSIDE-THE-EXPORT\n"


def _j(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def write_hostile_export(tmp_path):
    """The export folder (and, beside it, the files it must not reach). Returns
    (folder, {input_ref: expected reason_code}, {source_id: expected flags}, number of records)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(helpers.jpeg(32, 32, (1, 2, 3)) + SECRET)
    (outside / "other.jsonl").write_bytes(_j({"id": "smuggled", "title": "from outside"}) + b"\n")
    root = tmp_path / "export"
    (root / "img").mkdir(parents=True)
    (root / "img" / "ok.jpg").write_bytes(helpers.jpeg())
    os.symlink(outside / "secret.jpg", root / "img" / "link-out.jpg")
    os.symlink(root / "img" / "ok.jpg", root / "img" / "alias.jpg")
    os.symlink(outside / "other.jsonl", root / "linked.jsonl")
    (root / "img" / "up").symlink_to(outside, target_is_directory=True)  # a folder link leading out

    lines = [  # (line, expected reason_code or None for a post)
        (_j({"id": "ok", "title": "fine", "image": "img/ok.jpg"}), None),
        (_j({"id": "alias", "title": "a link inside the folder", "image": "img/alias.jpg"}), None),
        (_j({"id": "noimage", "title": "t", "image": "img/nope.jpg"}), None),
        (_j({"id": "dotdot", "image": "../outside/secret.jpg"}), "unsafe_path"),
        (_j({"id": "dotdot2", "image": "img/../../outside/secret.jpg"}), "unsafe_path"),
        (_j({"id": "abs", "image": str(outside / "secret.jpg")}), "unsafe_path"),
        (_j({"id": "passwd", "image": "/etc/passwd"}), "unsafe_path"),
        (_j({"id": "win", "image": "..\\outside\\secret.jpg"}), "unsafe_path"),
        (_j({"id": "link", "image": "img/link-out.jpg"}), "unsafe_path"),
        (_j({"id": "dirlink", "image": "img/up/secret.jpg"}), "unsafe_path"),
        (_j({"id": "nul", "image": "img/ok.jpg\u0000../../x"}), "unsafe_path"),
        (_j({"id": {"a": 1}, "title": "an object as id"}), "invalid_id"),
        (_j({"id": True, "title": "a bool as id"}), "invalid_id"),
        (_j({"id": 1.5, "title": "a float as id"}), "invalid_id"),
        (_j({"id": 42, "title": 7, "tags": {"a": 1}, "labels": "joy", "label": ["x"], "taken_at": [1],
             "label_agree": "3", "label_dist": {"joy": "high"}, "image": 5}), None),
        (_j({"id": "far-future", "title": "d", "taken_at": 10 ** 20, "uploaded_at": "not a date"}), None),
        (b'{"id": "nan", "title": "n", "label_agree": NaN, "label_scores": {"v": Infinity}}', None),
        (b'{"id": "cut", "title": ', "invalid_json"),
        (b"[" * 100_000, "invalid_json"),  # nested too deeply for the parser
        (b'{"id": "latin1", "title": "caf\xe9 cr\xe8me"}', None),
        (b'{"id": "garbage", "title": "\xff\xfe\x81 bytes"}', None),
        (b"", "empty_line"),
        (b'["not", "an", "object"]', "invalid_record"),
        (_j({"title": "no id"}), "missing_id"),
        (_j({"id": "  "}), "missing_id"),
    ]
    (root / "posts.jsonl").write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    (root / "more.jsonl").write_bytes(b"\xef\xbb\xbf" + _j({"id": "bom", "title": "a byte order mark"}) + b"\n")
    expected = {f"posts.jsonl:{i}": code for i, (_, code) in enumerate(lines, start=1) if code}
    expected["linked.jsonl"] = "unsafe_path"
    flags = {
        "42": {"tags:invalid", "labels:invalid", "dates:invalid", "label_agree:invalid", "label_dist:invalid",
               "image:invalid"},
        "far-future": {"dates:invalid"},
        "nan": {"label_agree:invalid"},
        "latin1": {"record:non_utf8"},
        "garbage": {"record:non_utf8"},
    }
    return root, expected, flags, len(lines) + 1 + 1


def test_the_driver_refuses_unsafe_paths_before_any_read(tmp_path, cfg):
    """Listing the work items (driver side) already refuses every path leaving the folder, and
    the items that go on carry only paths inside it."""
    root, expected, _, n = write_hostile_export(tmp_path)
    src = dataset_source("export", root, cfg, name="hostile-export-plan")
    items = list(src.work_items())
    assert len(items) == n
    refused = {it.input_ref: it.error for it in items if it.error}
    assert {ref: err[1] for ref, err in refused.items()} == expected
    for ref, (stage, code, reason) in refused.items():
        assert reason and stage in ("read", "parse")
        if code == "unsafe_path":
            assert reason.endswith("not read")
    resolved = root.resolve()
    for it in items:
        if not it.error and it.payload.get("image_path"):
            p = os.path.realpath(it.payload["image_path"])
            assert p.startswith(str(resolved) + os.sep), p


def test_a_link_swapped_after_listing_is_refused_where_it_is_read(tmp_path, cfg):
    """Defence in depth: the executor checks the path again when it reads it."""
    root, _, _, _ = write_hostile_export(tmp_path)
    src = dataset_source("export", root, cfg, name="hostile-export-swap")
    item = next(it for it in src.work_items() if it.source_id == "alias")
    (root / "img" / "alias.jpg").unlink()
    os.symlink(tmp_path / "outside" / "secret.jpg", root / "img" / "alias.jpg")  # swapped after the listing
    [(kind, row)] = src.process(item, ExecContext(client=None, max_image_bytes=10_000_000))
    assert kind == "failure" and row["reason_code"] == "unsafe_path" and "not read" in row["reason"]
    assert "TOP-SECRET" not in json.dumps(row)


@pytest.mark.spark
def test_a_hostile_export_lands_or_fails_every_record_and_reads_nothing_outside(spark, cfg, tmp_path):
    root, expected, flags, n = write_hostile_export(tmp_path)
    name = "hostile-export"
    r = Ingestor(spark, cfg).run(dataset_source("export", root, cfg, label_set="ekman7", name=name))
    assert r.input_records == n and r.reconciles()
    assert r.posts_new + r.failures == n and r.failures == len(expected)  # lines read = posts + failures

    posts = {p.source_id: p for p in spark.table(cfg.table("posts")).where(F.col("source") == name).collect()}
    fails = {f.input_ref: f for f in spark.table(cfg.table("ingest_failures")).where(F.col("source") == name).collect()}
    assert len(posts) + len(fails) == n  # nothing lost, nothing twice
    assert {ref: f.reason_code for ref, f in fails.items()} == expected
    assert all(f.reason and f.permanent for f in fails.values())
    assert set(posts) == {"ok", "alias", "noimage", "42", "far-future", "nan", "latin1", "garbage", "bom"}
    for sid, want in flags.items():
        assert want <= set(posts[sid].quality_flags), (sid, posts[sid].quality_flags)
    assert posts["ok"].image_status == posts["alias"].image_status == "ok"
    assert (posts["noimage"].image_status, posts["noimage"].image_error) == ("missing", "file not found")
    assert posts["42"].title == "7" and posts["42"].labels == [] and posts["42"].image is None
    assert posts["latin1"].title == "café crème" and posts["bom"].title == "a byte order mark"

    # nothing outside the folder was read: neither the secret image nor the linked jsonl
    secret_sha = hashlib.sha256((tmp_path / "outside" / "secret.jpg").read_bytes()).hexdigest()
    assert all(p.image_sha256 != secret_sha for p in posts.values())
    everything = json.dumps([p.asDict() for p in posts.values()] + [f.asDict() for f in fails.values()], default=str)
    assert "TOP-SECRET" not in everything and "smuggled" not in everything and "root:x:" not in everything
