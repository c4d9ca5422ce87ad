"""Building the rows that land: a post (with every unusable part marked) or a failure.

Every source turns its input into these two shapes through :func:`post_row` and
:func:`failure_row`, so checks, flags and hashes are the same everywhere. The functions run on
executors: plain Python, no Spark.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Iterable, Mapping

from moodlake import content
from moodlake.tables import FAILURE_CONTENT, POST_CONTENT

RAW_LIMIT = 64 * 1024
UTC = dt.timezone.utc


def post_id(source: str, source_id: str) -> str:
    return f"{source}:{source_id}"


def failure_id(source: str, input_ref: str) -> str:
    return hashlib.sha256(f"{source}\x00{input_ref}".encode()).hexdigest()


def to_utc(value: Any) -> dt.datetime | None:
    """A timestamp from a datetime, unix seconds or an ISO / 'YYYY-MM-DD HH:MM:SS' string."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return dt.datetime.fromtimestamp(int(value), tz=UTC)
    s = str(value).strip().replace("Z", "+00:00")
    parsed = dt.datetime.fromisoformat(s)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json_default(o):
    if isinstance(o, dt.datetime):
        return o.isoformat()
    if isinstance(o, bytes):
        return {"sha256": content.sha256_hex(o), "size": len(o)}
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)


def _content_hash(row: Mapping[str, Any]) -> str:
    h = {k: v for k, v in row.items() if k not in ("image", "content_hash")}
    return hashlib.sha256(canonical_json(h).encode("utf-8")).hexdigest()


def resolve_label(label: str | None, label_set: tuple[str, ...] | None, flags: list[str]) -> str | None:
    """The label if it belongs to the label set; otherwise None and a ``label:unknown`` flag."""
    if label is None or label == "":
        return None
    if label_set is not None and label not in label_set:
        flags.append("label:unknown")
        return None
    return label


def post_row(
    *,
    source: str,
    source_id: str,
    raw: Any,
    source_split: str | None = None,
    owner: str | bytes | None = None,
    title: str | bytes | None = None,
    description: str | bytes | None = None,
    tags: Iterable | None = None,
    image: bytes | None = None,
    image_source: str | None = None,
    image_error: str | None = None,
    max_image_bytes: int | None = None,
    max_image_pixels: int | None = content.MAX_IMAGE_PIXELS,
    taken_at: Any = None,
    uploaded_at: Any = None,
    label_set_name: str | None = None,
    label_set: tuple[str, ...] | None = None,
    label: str | None = None,
    labels: Iterable[str] | None = None,
    label_dist: Mapping[str, float] | None = None,
    label_agree: int | None = None,
    label_disagree: int | None = None,
    label_scores: Mapping[str, float] | None = None,
    flags: Iterable[str] = (),
) -> dict:
    """A complete post row (the content columns of ``moodlake.posts``).

    ``image_error`` says why an image that should exist could not be obtained (HTTP 404, file
    not found) when ``image`` is None; None with no image means the post simply has none. ``raw`` is any JSON-serialisable payload (bytes are summarised by hash and size).
    """
    fl: list[str] = list(flags)
    texts = {}
    for name, value in (("owner", owner), ("title", title), ("description", description)):
        texts[name], f = content.decode_text(value, name)
        fl.extend(f)
    tag_list, f = content.clean_tags(tags)
    fl.extend(f)

    if image is None and image_error:
        check = content.ImageCheck(content.IMAGE_MISSING, None, None, None, image_error, ("image:unavailable",))
    else:
        check = content.check_image(image, image_source, max_image_bytes, max_image_pixels)
    fl.extend(check.flags)
    keep_bytes = image is not None and check.status != content.IMAGE_TOO_LARGE

    resolved = resolve_label(label, label_set, fl)
    label_list = []
    for lab in labels or ([label] if label else []):
        ok = resolve_label(lab, label_set, fl)
        if ok is not None and ok not in label_list:
            label_list.append(ok)

    row = {
        "post_id": post_id(source, source_id),
        "source": source,
        "source_id": str(source_id),
        "source_split": source_split,
        "owner": texts["owner"],
        "title": texts["title"],
        "description": texts["description"],
        "tags": tag_list,
        "image": bytes(image) if keep_bytes else None,
        "image_source": image_source,
        "image_mime": check.mime,
        "image_size": len(image) if image is not None else None,
        "image_sha256": content.sha256_hex(image) if image is not None else None,
        "image_width": check.width,
        "image_height": check.height,
        "image_status": check.status,
        "image_error": check.detail,
        "taken_at": to_utc(taken_at),
        "uploaded_at": to_utc(uploaded_at),
        "label_set": label_set_name if (resolved or label_list or label_dist or label_scores) else None,
        "label": resolved,
        "labels": label_list,
        "label_dist": {str(k): float(v) for k, v in label_dist.items()} if label_dist else None,
        "label_agree": label_agree,
        "label_disagree": label_disagree,
        "label_scores": {str(k): float(v) for k, v in label_scores.items()} if label_scores else None,
        "quality_flags": list(dict.fromkeys(fl)),
        "raw": raw if isinstance(raw, str) else canonical_json(raw),
    }
    row["content_hash"] = _content_hash(row)
    assert list(row) == [f.name for f in POST_CONTENT.fields]
    return row


def failure_row(
    *,
    source: str,
    input_ref: str,
    stage: str,
    reason_code: str,
    reason: str,
    permanent: bool,
    post_id: str | None = None,
    attempts: int | None = None,
    raw: Any = None,
) -> dict:
    if raw is not None and not isinstance(raw, str):
        raw = raw.decode("utf-8", errors="backslashreplace") if isinstance(raw, bytes) else canonical_json(raw)
    if raw is not None and len(raw) > RAW_LIMIT:
        raw = raw[:RAW_LIMIT] + f"... [truncated from {len(raw)} characters]"
    row = {
        "failure_id": failure_id(source, input_ref),
        "source": source,
        "post_id": post_id,
        "input_ref": input_ref,
        "stage": stage,
        "reason_code": reason_code,
        "reason": reason,
        "permanent": permanent,
        "attempts": attempts,
        "raw": raw,
    }
    assert list(row) == [f.name for f in FAILURE_CONTENT.fields]
    return row
