"""Logging set-up, and the redaction of secrets from everything MoodLake writes.

Secret values (the Flickr key and secret) are registered once; every log record and every
message that goes into a table passes through :func:`redact`.

The ``moodlake`` command logs to the console (standard error) and to ``<lakehouse.home>/logs/
moodlake.log``; libraries' Python warnings (petastorm's and pyarrow's FutureWarnings and
DeprecationWarnings) go to the file only, and so do the summary lines that it prints on standard
output (records logged with ``extra=SUMMARY``), so that the console shows each once.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

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


#: ``extra`` of a record that states a command's result in one line (an ingest run's counts, a
#: scoring run's, ...): callers that print the result (the CLI) keep it off the console.
SUMMARY = {"moodlake_summary": True}
LOG_FILE = "moodlake.log"


class ConsoleFilter(logging.Filter):
    """Leaves summary lines (``summaries=False``) and Python warnings (``warnings=False``: they go
    to the log file) off the console."""

    def __init__(self, summaries: bool = True, warnings: bool = True):
        super().__init__()
        self.summaries, self.warnings = summaries, warnings

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.summaries and getattr(record, "moodlake_summary", False):
            return False
        return self.warnings or record.name != "py.warnings"


def log_file(home: str | Path) -> Path:
    """``<home>/logs/moodlake.log``."""
    from moodlake.services import logs_dir

    return logs_dir(home) / LOG_FILE


class LazyFileHandler(logging.FileHandler):
    """Appends to ``path``, opened (its folder created) at the first record: a command that logs
    nothing writes nothing (a dry run). Where the folder cannot be created, the file is left out."""

    def __init__(self, path: str | Path):
        super().__init__(path, encoding="utf-8", delay=True)
        self.unwritable = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not self.unwritable:
            try:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
                self.stream = self._open()
            except OSError:
                self.unwritable = True
        if not self.unwritable:
            super().emit(record)


def setup_logging(level: int = logging.INFO, file: str | Path | None = None, summaries: bool = True) -> None:
    """Log to stderr with timestamps; secrets redacted; chatty libraries quietened.

    With ``file``, every record is also appended there, and Python warnings go there only (not to
    the console). ``summaries=False`` leaves :data:`SUMMARY` records off the console (for callers
    that print them)."""
    root = logging.getLogger()
    if any(getattr(h, "_moodlake", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._moodlake = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(ConsoleFilter(summaries=summaries, warnings=file is None))
    root.addHandler(handler)
    if file is not None:
        to_file = LazyFileHandler(file)
        to_file._moodlake = True  # type: ignore[attr-defined]
        to_file.setFormatter(logging.Formatter("%(asctime)s [pid %(process)d] %(levelname)s %(name)s: %(message)s"))
        to_file.addFilter(RedactingFilter())
        root.addHandler(to_file)
        logging.captureWarnings(True)  # into the file, through the py.warnings logger
    root.setLevel(level)
    for noisy in ("py4j", "flickrapi", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if file is None:
        # petastorm 0.13 still calls pyarrow's deprecated legacy filesystem (fine with pyarrow 14)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
