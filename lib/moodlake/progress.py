"""Progress of long work, printed by the driver: done/total, rate, failures, ETA."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("moodlake.progress")


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_progress(label: str, done: int, total: int | None, failed: int, elapsed: float, calls: int | None = None) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{label}: {done:,}"]
    if total:
        parts[0] += f"/{total:,} ({100.0 * done / total:.1f}%)"
    parts.append(f"{rate:.1f}/s")
    parts.append(f"{failed:,} failed")
    if calls is not None:
        parts.append(f"{calls:,} API calls")
    if total and rate > 0 and done < total:
        parts.append(f"ETA {_hms((total - done) / rate)}")
    parts.append(f"elapsed {_hms(elapsed)}")
    return " | ".join(parts)


class ProgressReporter:
    """Logs ``counts()`` -> (done, failed, calls) every ``interval_s`` seconds until stopped."""

    def __init__(self, label: str, total: int | None, counts: Callable[[], tuple[int, int, int | None]],
                 interval_s: float = 5.0):
        self.label, self.total, self.counts, self.interval_s = label, total, counts, interval_s
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="moodlake-progress", daemon=True)

    def _line(self) -> str:
        done, failed, calls = self.counts()
        return format_progress(self.label, done + failed, self.total, failed, time.monotonic() - self._start, calls)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            log.info(self._line())

    def __enter__(self) -> "ProgressReporter":
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        log.info(self._line())
