"""Logging set-up, and the redaction of secrets from everything MoodLake writes.

Secret values (the Flickr key and secret) are registered once; every log record and every
message that goes into a table passes through :func:`redact`.
"""
from __future__ import annotations

import logging
import sys
import warnings

from moodlake.config import Secret

_SECRETS: set[str] = set()
MASK = "********"
# A shorter 'secret' (a test key like "k") would mask ordinary words; real keys are 16-32 chars.
MIN_SECRET_LENGTH = 4


def _value(secret: Secret | str | None) -> str | None:
    value = secret.reveal() if isinstance(secret, Secret) else secret
    return value if value and len(value) >= MIN_SECRET_LENGTH else None


def register_secret(secret: Secret | str | None) -> None:
    value = _value(secret)
    if value:
        _SECRETS.add(value)


def redact(text: str | None, extra: tuple[Secret | None, ...] = ()) -> str | None:
    """``text`` with every registered (and every ``extra``) secret value masked."""
    if text is None:
        return None
    values = set(_SECRETS) | {v for v in map(_value, extra) if v}
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = ()
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with timestamps; secrets redacted; chatty libraries quietened."""
    root = logging.getLogger()
    if any(getattr(h, "_moodlake", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._moodlake = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "flickrapi", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # petastorm 0.13 still calls pyarrow's deprecated legacy filesystem (fine with pyarrow 14)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
