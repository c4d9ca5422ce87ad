"""A small service on the driver that every executor of an ingest run talks to.

It holds what must be global to a run:

* the **call budget** (e.g. 3,600 Flickr calls per hour per key) shared by all executors: a
  generic cell rate algorithm (GCRA). Each call reserves the next free slot and is told how long
  to wait for it, so calls are spaced exactly at the budget's rate after an initial burst, no
  slot is lost to contention, and the budget is never exceeded however many executors ask. The
  schedule is saved under ``$MOODLAKE_HOME/state`` so that a restarted job does not start with a
  fresh hour's budget;
* **progress** (posts landed, failures, calls), which the driver prints as it goes;
* an **abort** flag: a fatal error on one executor (an invalid API key) stops the others before
  their next call.

Executors reach it over HTTP at the driver's address with a per-run token. Plain standard
library: ``http.server`` on the driver, ``urllib`` on executors.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)


class CallBudget:
    """GCRA over wall-clock time: ``calls_per_hour`` steady rate with ``burst`` calls of slack.

    Over any window of ``w`` seconds at most ``burst + w * rate`` calls are granted.
    """

    def __init__(self, calls_per_hour: int, burst: int, state_file: Path | None = None, clock=time.time):
        if calls_per_hour <= 0:
            raise ValueError("calls_per_hour must be > 0 (use no budget to lift it)")
        self.interval = 3600.0 / calls_per_hour
        self.tolerance = (burst - 1) * self.interval
        self.state_file = state_file
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next call
        self.granted = 0
        if state_file and state_file.exists():
            try:
                self._tat = float(json.loads(state_file.read_text())["tat"])
            except (ValueError, KeyError, OSError) as e:
                log.warning("ignoring unreadable budget state %s: %s", state_file, e)

    def reserve(self) -> float:
        """Reserve one call; return the seconds to wait before making it."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            allowed_at = tat - self.tolerance
            self._tat = tat + self.interval
            self.granted += 1
            return max(0.0, allowed_at - now)

    def save(self) -> None:
        if self.state_file:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            with self._lock:
                tmp.write_text(json.dumps({"tat": self._tat, "interval": self.interval}))
            os.replace(tmp, self.state_file)


@dataclass
class Progress:
    posts: int = 0
    failures: int = 0
    calls: int = 0


class Coordinator:
    """The driver side. Use as a context manager; pass :attr:`endpoint` to executors."""

    def __init__(self, budget: CallBudget | None = None, host: str = "127.0.0.1"):
        self.budget = budget
        self.progress = Progress()
        self.abort_reason: str | None = None
        self._lock = threading.Lock()
        self._token = secrets.token_hex(16)
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="moodlake-coordinator", daemon=True)

    @property
    def endpoint(self) -> "Endpoint":
        host, port = self._server.server_address[:2]
        return Endpoint(f"http://{host}:{port}", self._token)

    def __enter__(self) -> "Coordinator":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.budget:
            self.budget.save()

    def abort(self, reason: str) -> None:
        with self._lock:
            if self.abort_reason is None:
                self.abort_reason = reason

    def _handle(self, path: str, body: dict) -> dict:
        if path == "/acquire":
            if self.abort_reason:
                return {"abort": self.abort_reason}
            wait = self.budget.reserve() if self.budget else 0.0
            return {"wait": wait}
        if path == "/progress":
            with self._lock:
                self.progress.posts += int(body.get("posts", 0))
                self.progress.failures += int(body.get("failures", 0))
                self.progress.calls += int(body.get("calls", 0))
            return {"abort": self.abort_reason}
        if path == "/abort":
            self.abort(str(body.get("reason", "aborted by an executor")))
            return {}
        raise KeyError(path)

    def _handler(self):
        coordinator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                if self.headers.get("X-MoodLake-Token") != coordinator._token:
                    self.send_error(403)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    reply = coordinator._handle(self.path, json.loads(self.rfile.read(length) or b"{}"))
                except KeyError:
                    self.send_error(404)
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the driver's console for progress
                pass

        return Handler


class AbortedError(RuntimeError):
    """The run was aborted (by a fatal error elsewhere); the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """What an executor needs to reach the coordinator (picklable)."""

    url: str
    token: str

    def client(self) -> "CoordinatorClient":
        return CoordinatorClient(self)


class CoordinatorClient:
    """The executor side: budget slots, buffered progress, the abort flag."""

    def __init__(self, endpoint: Endpoint, flush_every_s: float = 0.5):
        self.endpoint = endpoint
        self._pending = Progress()
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._flush_every = flush_every_s
        self.abort_reason: str | None = None

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.endpoint.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-MoodLake-Token": self.endpoint.token},
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.loads(resp.read())
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    def acquire(self) -> None:
        """Wait for this call's slot in the global budget; raise AbortedError if the run stopped."""
        reply = self._post("/acquire", {})
        if reply.get("abort"):
            self.abort_reason = reply["abort"]
            raise AbortedError(reply["abort"])
        if reply["wait"] > 0:
            time.sleep(reply["wait"])

    def add(self, posts: int = 0, failures: int = 0, calls: int = 0) -> None:
        with self._lock:
            self._pending.posts += posts
            self._pending.failures += failures
            self._pending.calls += calls
            due = time.monotonic() - self._last_flush >= self._flush_every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            body = vars(self._pending).copy()
            self._pending = Progress()
            self._last_flush = time.monotonic()
        if any(body.values()):
            reply = self._post("/progress", body)
            if reply.get("abort"):
                self.abort_reason = reply["abort"]

    def abort(self, reason: str) -> None:
        self.abort_reason = reason
        self._post("/abort", {"reason": reason})
