"""Bad and good inputs made on the fly (no binary fixtures in the repository)."""
from __future__ import annotations

import io

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def gif(frames: int = 2) -> bytes:
    buf = io.BytesIO()
    ims = [Image.new("RGB", (20, 20), (i * 80 % 256, 255 - i * 60 % 256, 30)) for i in range(frames)]
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:])
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(200, 150)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    data = bytearray(jpeg(200, 150))
    data[200:600] = b"\x00" * 400  # scan data and tables destroyed, header intact
    return bytes(data[:20]) + b"\xff\xda" + bytes(data[600:])
