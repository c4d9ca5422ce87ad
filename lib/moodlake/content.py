"""Checks of raw content: what an image really is, whether it decodes, how text bytes decode.

Pure functions with no Spark and no I/O, used on executors by every source. They never raise on
bad input: they report what is wrong, so that a post lands with the unusable part marked
(``quality_flags``) instead of being dropped.
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

# Magic numbers of the formats that social-media images come in.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)
_EXTENSION_MIME = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff", "webp": "image/webp",
}

# image_status values (documented with the posts table)
IMAGE_OK = "ok"
IMAGE_MISSING = "missing"          # the post has no image (none offered, or the file is absent)
IMAGE_EMPTY = "empty"              # zero bytes
IMAGE_NOT_IMAGE = "not_an_image"   # the bytes are no known image format (HTML error page, text)
IMAGE_TRUNCATED = "truncated"      # a known format whose data ends early
IMAGE_CORRUPT = "corrupt"          # a known format that does not decode
IMAGE_TOO_LARGE = "too_large"      # over ingest.max_image_bytes, or declares more pixels than allowed

# Pixels an image may declare before it is decoded (a decompression bomb: a small file that
# declares 60000x60000 pixels would take 10 GiB once decoded). The same figure as Pillow's own
# MAX_IMAGE_PIXELS, stated here so that the limit does not hang on a library's default;
# ingest.max_image_pixels and features.max_image_pixels set the jobs' limits (this is their default).
MAX_IMAGE_PIXELS = 89_478_485


def pixels_refused(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of the declared size is refused, or None."""
    if max_pixels is not None and width * height > max_pixels:
        return f"declares {width}x{height} = {width * height:,} pixels > the limit of {max_pixels:,} (not decoded)"
    return None


def bomb_refused(error: Exception) -> str:
    """The reason for Pillow's own DecompressionBombError, raised by ``Image.open`` (before any
    limit of ours is looked at) for images over twice its MAX_IMAGE_PIXELS."""
    m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(error))
    if not m:
        return f"not decoded: {str(error)[:180]}"
    return f"declares {int(m[1]):,} pixels > Pillow's limit of {int(m[2]):,} (not decoded)"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type from the content's magic number, or None when it is no known image."""
    for magic, offset, mime in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def mime_from_name(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    return _EXTENSION_MIME.get(name.rsplit(".", 1)[-1].lower())


@dataclass(frozen=True)
class ImageCheck:
    status: str
    mime: str | None
    width: int | None
    height: int | None
    detail: str | None  # why it is unusable, or None
    flags: tuple[str, ...]


def check_image(data: bytes | None, name: str | None = None, max_bytes: int | None = None,
                max_pixels: int | None = MAX_IMAGE_PIXELS) -> ImageCheck:
    """Sniff, decode fully and measure an image; say precisely what is wrong with it if anything.

    ``name`` (a file name or URL) is only compared with the content: a GIF named ``.jpg`` is a
    valid GIF, flagged ``image:extension_mismatch``. An image declaring more than ``max_pixels``
    pixels is refused from its header, before any pixel is decoded (``too_large``).
    """
    if data is None:
        return ImageCheck(IMAGE_MISSING, None, None, None, "no image", ("image:missing",))
    if len(data) == 0:
        return ImageCheck(IMAGE_EMPTY, None, None, None, "zero bytes", ("image:empty",))
    mime = sniff_mime(data)
    flags: list[str] = []
    declared = mime_from_name(name)
    if mime is None:
        head = data[:64].lstrip().lower()
        what = "HTML" if head.startswith((b"<!doctype html", b"<html")) else "unknown content"
        return ImageCheck(IMAGE_NOT_IMAGE, None, None, None, f"not an image ({what})", ("image:not_an_image",))
    if declared and declared != mime:
        flags.append("image:extension_mismatch")
    if max_bytes is not None and len(data) > max_bytes:
        return ImageCheck(IMAGE_TOO_LARGE, mime, None, None, f"{len(data)} bytes > {max_bytes}",
                          tuple(flags + ["image:too_large"]))

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides, below
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                refused = pixels_refused(width, height, max_pixels)
                if refused:
                    return ImageCheck(IMAGE_TOO_LARGE, mime, width, height, refused,
                                      tuple(flags + ["image:too_many_pixels"]))
                im.load()  # decodes every byte: truncation and corruption surface here
                if getattr(im, "n_frames", 1) > 1:
                    flags.append("image:animated")
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "end of file" in msg.lower() or "unexpected end" in msg.lower():
            return ImageCheck(IMAGE_TRUNCATED, mime, None, None, msg[:200], tuple(flags + ["image:truncated"]))
        return ImageCheck(IMAGE_CORRUPT, mime, None, None, msg[:200], tuple(flags + ["image:corrupt"]))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:  # over Pillow's own limit
        return ImageCheck(IMAGE_TOO_LARGE, mime, None, None, bomb_refused(e), tuple(flags + ["image:too_many_pixels"]))
    except (UnidentifiedImageError, SyntaxError, ValueError) as e:
        return ImageCheck(IMAGE_CORRUPT, mime, None, None, f"{type(e).__name__}: {str(e)[:180]}",
                          tuple(flags + ["image:corrupt"]))
    return ImageCheck(IMAGE_OK, mime, width, height, None, tuple(flags))


def decode_text(data: bytes | str | None, field: str) -> tuple[str | None, tuple[str, ...]]:
    """Text as UTF-8; bytes that are not UTF-8 are decoded as Windows-1252 (what such posts
    nearly always are) or replaced, and flagged ``<field>:non_utf8``. NUL characters, which
    downstream tools choke on, are removed and flagged.
    """
    if data is None:
        return None, ()
    flags: list[str] = []
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            flags.append(f"{field}:non_utf8")
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("utf-8", errors="replace")
    else:
        text = data
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):  # lone surrogates from a lax decoder
            flags.append(f"{field}:non_utf8")
            text = text.encode("utf-8", errors="replace").decode("utf-8")
    if "\x00" in text:
        flags.append(f"{field}:nul_removed")
        text = text.replace("\x00", "")
    return text, tuple(flags)


def clean_tags(tags) -> tuple[list[str], tuple[str, ...]]:
    """Tags as published, minus empty ones; duplicates are kept in bronze but flagged.

    (Normalisation, de-duplication and the 10-tag cap belong to the feature tables.)
    """
    if tags is None:
        return [], ()
    out: list[str] = []
    flags: list[str] = []
    for t in tags:
        t, f = decode_text(t, "tags") if isinstance(t, (bytes, str)) else (str(t), ())
        flags.extend(f)
        if t is None or not t.strip():
            if "tags:empty_removed" not in flags:
                flags.append("tags:empty_removed")
            continue
        out.append(t.strip())
    if len({t.lower() for t in out}) < len(out):
        flags.append("tags:duplicates")
    return out, tuple(dict.fromkeys(flags))
