"""A local HTTP server speaking the subset of the Flickr REST API that MoodLake's ingestion uses.

Tests and benchmarks drive the real ``flickrapi`` client against it over HTTP::

    corpus = FakeCorpus([FakePhoto(id="1", title="Sunset", tags=["beach"], image=placeholder_jpeg())])
    with FakeFlickrServer(corpus, valid_keys={"key": "secret"}) as server:
        api = server.client("key")          # flickrapi.FlickrAPI with REST_URL pointed here
        api.photos.getInfo(photo_id="1")    # {"photo": {...}, "stat": "ok"}
        server.duplicate_successful_calls() # {} unless a call was answered successfully twice

What it serves (JSON only, as for ``format=json&nojsoncallback=1``):

* ``flickr.photos.getInfo``, ``flickr.photos.getSizes``, ``flickr.photos.search`` in Flickr's shapes;
  errors as Flickr sends them: code 1 (unknown or private photo), 3 (parameterless search),
  96 (bad OAuth signature), 98 (an OAuth token: this fake issues none), 100 (unknown API key),
  105 (injected), 112 (unknown method).
* Images: GET/HEAD on the ``source`` URLs that getSizes returns, laid out like
  ``live.staticflickr.com``: ``/{server}/{id}_{secret}[_{suffix}].jpg``. Every size serves the
  photo's one image (:attr:`FakePhoto.image`).
* Faults: per photo (:attr:`FakePhoto.fail_times` / :attr:`FakePhoto.fail_mode`, ``slow_s``,
  ``image_status``, ``image_truncate``), per server (``rate_limit``, ``global_slow_s``), and injected
  per test with :meth:`FakeFlickrServer.inject` (:class:`Injection`: timeouts, HTTP 5xx/429, code
  105, slow answers, HTML error pages, image downloads cut short).
* Malformed payloads: :attr:`FakePhoto.info_patch` / :attr:`FakePhoto.sizes_patch` rewrite what
  getInfo / getSizes send (missing fields, wrong types, anything).
* Flickr's search cap: one query never yields results past the first ``search_cap`` (4,000);
  pages past it repeat the last page within it, as Flickr does, while ``total`` stays the real count.

Calls are authenticated like Flickr's: an OAuth 1 ``Authorization`` header (HMAC-SHA1, checked with
oauthlib against the consumer secret in ``valid_keys``) or, unsigned, an ``api_key`` parameter.
Every request lands in a thread-safe call log (:class:`CallRecord`); consumer secrets are never
logged. Run it standalone with ``python -m moodlake_dev.doubles.fake_flickr --photos-json FILE``.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import TextIO
from urllib.parse import parse_qsl, urlencode

from oauthlib.oauth1.rfc5849 import signature, utils

_LOG = logging.getLogger(__name__)

REST_PATH = "/services/rest/"
TAKEN_FORMAT = "%Y-%m-%d %H:%M:%S"
FAIL_MODES = ("code105", "http500", "http503", "http429", "timeout")
# What Injection can do: the photo fail modes, plus a slow answer, an HTML page with status 200
# (a proxy's error page), and (images only) a body cut short of its Content-Length.
INJECT_MODES = FAIL_MODES + ("slow", "html", "cut")
SEARCH_CAP = 4000  # Flickr yields at most this many results for one search query
API_METHODS = ("flickr.photos.getInfo", "flickr.photos.getSizes", "flickr.photos.search")
DROP = object()  # in an info_patch / sizes_patch: remove this key
VISIBILITIES = ("public", "private")

# Flickr's size labels: (URL suffix, longest edge in pixels, square crop). Edge 0 is the original.
SIZE_SPECS: dict[str, tuple[str, int, bool]] = {
    "Square": ("s", 75, True),
    "Large Square": ("q", 150, True),
    "Thumbnail": ("t", 100, False),
    "Small": ("m", 240, False),
    "Small 320": ("n", 320, False),
    "Small 400": ("w", 400, False),
    "Medium": ("", 500, False),
    "Medium 640": ("z", 640, False),
    "Medium 800": ("c", 800, False),
    "Large": ("b", 1024, False),
    "Large 1600": ("h", 1600, False),
    "Large 2048": ("k", 2048, False),
    "Original": ("o", 0, False),
}
DEFAULT_SIZES: tuple[str, ...] = (
    "Square", "Large Square", "Thumbnail", "Small", "Small 320",
    "Medium", "Medium 640", "Medium 800", "Large", "Original",
)
_LABEL_BY_SUFFIX = {suffix: label for label, (suffix, _, _) in SIZE_SPECS.items()}
_IMAGE_PATH = re.compile(
    r"^/(?P<server>[^/]+)/(?P<id>[^/]+?)_(?P<secret>[0-9A-Za-z]+)(?:_(?P<suffix>[a-z]))?\.jpg$"
)
_TAKEN_TEXT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_MACHINE_TAG = re.compile(r"^([A-Za-z_]\w*):([A-Za-z_]\w*)=(.+)$")
# Parameters that say how to answer, not what to answer (left out of CallRecord.query).
_TRANSPORT_PARAMS = frozenset({"method", "format", "nojsoncallback", "api_key"})


def normalise_tag(raw: str) -> str:
    """Flickr's normalised tag (``_content``): lower case, spaces and punctuation removed.

    Machine tags (``namespace:predicate=value``) keep their ``:`` and ``=`` and are only lower-cased.
    """
    raw = raw.strip()
    if _MACHINE_TAG.match(raw):
        return raw.lower()
    return "".join(ch for ch in raw.lower() if ch.isalnum())


@lru_cache(maxsize=64)
def placeholder_jpeg(seed: int = 0, width: int = 640, height: int = 480) -> bytes:
    """A small, decodable JPEG whose colour depends on ``seed`` (cached: cheap to call per photo)."""
    from PIL import Image, ImageDraw

    colour = ((seed * 67) % 256, (seed * 131 + 80) % 256, (seed * 197 + 160) % 256)
    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).rectangle((0, 0, width // 2, height // 2), fill=colour[::-1])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


@dataclass
class FakePhoto:
    """One photo of the fake Flickr, with the faults it injects.

    ``width``/``height`` are the original's; getSizes scales every other size from them.
    ``image`` is the JPEG served for every size (None: the photo has no image file, downloads 404).
    ``sizes`` lists the labels getSizes offers (None: :data:`DEFAULT_SIZES`).

    Faults: the first ``fail_times`` API calls about this photo (getInfo or getSizes, counted by the
    server per photo id) fail as ``fail_mode`` says, later ones succeed:

    * ``code105``: HTTP 200 with ``{"stat": "fail", "code": 105}``;
    * ``http500`` / ``http503`` / ``http429``: that HTTP status (429 with ``Retry-After: 1``);
    * ``timeout``: the server sleeps ``timeout_sleep_s`` (see :class:`FakeFlickrServer`), then
      answers normally; such answers are not counted as successful in the call log.

    ``slow_s`` delays every API call and image download about this photo. ``image_status`` other
    than 200 is sent instead of the image; ``image_truncate`` serves only that many bytes (with a
    Content-Length that matches what is sent).
    """

    id: str
    secret: str = "0a1b2c3d4e"
    server: str = "65535"
    farm: int = 66
    owner_nsid: str = "10000001@N00"
    owner_username: str = "fake_user"
    owner_realname: str = "Fake User"
    title: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    date_taken: datetime | str = "2020-01-01 12:00:00"
    date_uploaded: int = 1577880000
    width: int = 1024
    height: int = 768
    image: bytes | Callable[[], bytes] | None = None  # a callable is called at download time
    sizes: Sequence[str] | None = None
    visibility: str = "public"
    license: str = "0"
    views: int = 0
    fail_times: int = 0
    fail_mode: str = "code105"
    slow_s: float = 0.0
    image_status: int = 200
    image_truncate: int | None = None
    # Malformed payloads: a dict merged (recursively; DROP removes a key) into getInfo's "photo"
    # object / getSizes' "sizes" object, or a callable that returns the new object.
    info_patch: Mapping | Callable[[dict], object] | None = None
    sizes_patch: Mapping | Callable[[dict], object] | None = None

    def __post_init__(self) -> None:
        if self.visibility not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {VISIBILITIES}, not {self.visibility!r}")
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, not {self.fail_mode!r}")
        unknown = [label for label in self.offered_sizes if label not in SIZE_SPECS]
        if unknown:
            raise ValueError(f"unknown size labels {unknown}; known: {list(SIZE_SPECS)}")
        if not _TAKEN_TEXT.fullmatch(self.taken_text):
            raise ValueError(f"date_taken must be a datetime or 'YYYY-MM-DD HH:MM:SS', not {self.date_taken!r}")

    @property
    def taken_text(self) -> str:
        """``date_taken`` as Flickr writes it: ``YYYY-MM-DD HH:MM:SS``."""
        if isinstance(self.date_taken, datetime):
            return self.date_taken.strftime(TAKEN_FORMAT)
        return self.date_taken

    @property
    def offered_sizes(self) -> tuple[str, ...]:
        """The size labels getSizes offers."""
        return DEFAULT_SIZES if self.sizes is None else tuple(self.sizes)

    @property
    def normalised_tags(self) -> list[str]:
        """The tags as Flickr normalises them (see :func:`normalise_tag`)."""
        return [normalise_tag(tag) for tag in self.tags]

    def size_dimensions(self, label: str) -> tuple[int, int]:
        """(width, height) of one size: squares are cropped, other sizes scale down, never up."""
        _, edge, square = SIZE_SPECS[label]
        if square:
            return edge, edge
        longest = max(self.width, self.height)
        if edge == 0 or longest <= edge:
            return self.width, self.height
        scale = edge / longest
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))


class FakeCorpus:
    """The photos a :class:`FakeFlickrServer` serves, looked up by id.

    ``photos`` holds photos built up front (a mapping by id, or an iterable of photos).
    ``provider`` builds a photo on demand for ids not in ``photos`` (None: no such photo); it is
    called on every lookup, so it must be deterministic and cheap, which lets a benchmark serve
    50,000 synthetic posts without holding them. ``ids_for_search`` are the further ids that
    :meth:`search` considers (resolved through the provider); without it search sees only ``photos``.

    Search results are cached per query (pagination stays stable and cheap); :meth:`add` clears the
    cache, so change the corpus through it rather than by mutating photos already served.
    """

    _SEARCH_CACHE_SIZE = 256

    def __init__(
        self,
        photos: Mapping[str, FakePhoto] | Iterable[FakePhoto] | None = None,
        provider: Callable[[str], FakePhoto | None] | None = None,
        ids_for_search: Sequence[str] | None = None,
    ) -> None:
        if isinstance(photos, Mapping):
            self._photos = dict(photos)
        else:
            self._photos = {photo.id: photo for photo in photos or ()}
        self._provider = provider
        self._ids_for_search = ids_for_search
        self._lock = threading.Lock()
        self._search_cache: dict[tuple, list[str]] = {}

    def add(self, photo: FakePhoto) -> None:
        """Adds or replaces a photo."""
        with self._lock:
            self._photos[photo.id] = photo
            self._search_cache.clear()

    def get(self, photo_id: str) -> FakePhoto | None:
        """The photo with this id, public or private, or None."""
        photo = self._photos.get(photo_id)
        if photo is None and self._provider is not None:
            photo = self._provider(photo_id)
        return photo

    def search(
        self,
        tags: Sequence[str] = (),
        tag_mode: str = "any",
        text: str = "",
        min_upload_date: int | None = None,
        max_upload_date: int | None = None,
        sort: str = "date-posted-desc",
    ) -> list[str]:
        """Ids of the public photos that match, sorted; Flickr's rules as the server applies them.

        ``tags`` match normalised tags (``tag_mode`` "all": every tag, otherwise any). ``text`` is a
        case-insensitive substring of the title, the description or a tag. Both upload bounds are
        inclusive, as on Flickr. ``sort`` is ``date-posted-asc|desc`` or ``date-taken-asc|desc``
        (anything else: ``date-posted-desc``, Flickr's default); ties go by id.
        """
        wanted = tuple(sorted({normalise_tag(tag) for tag in tags} - {""}))
        key = (wanted, tag_mode == "all", text.strip().lower(), min_upload_date, max_upload_date, sort)
        with self._lock:
            cached = self._search_cache.get(key)
        if cached is not None:
            return cached
        matches = [photo for photo in self._candidates() if self._matches(photo, *key[:5])]
        field_name, _, direction = sort.rpartition("-")
        by_taken = field_name == "date-taken"
        matches.sort(
            key=lambda p: (p.taken_text if by_taken else p.date_uploaded, p.id),
            reverse=not (direction == "asc" and field_name in ("date-posted", "date-taken")),
        )
        ids = [photo.id for photo in matches]
        with self._lock:
            if len(self._search_cache) >= self._SEARCH_CACHE_SIZE:
                self._search_cache.clear()
            self._search_cache[key] = ids
        return ids

    def _candidates(self) -> Iterable[FakePhoto]:
        with self._lock:
            explicit = list(self._photos.values())
        yield from explicit
        for photo_id in self._ids_for_search or ():
            if photo_id not in self._photos:
                photo = self.get(photo_id)
                if photo is not None:
                    yield photo

    @staticmethod
    def _matches(photo, tags, all_tags, text, min_upload, max_upload) -> bool:
        if photo.visibility != "public":
            return False
        if min_upload is not None and photo.date_uploaded < min_upload:
            return False
        if max_upload is not None and photo.date_uploaded > max_upload:
            return False
        photo_tags = photo.normalised_tags
        if tags:
            hits = [tag in photo_tags for tag in tags]
            if not (all(hits) if all_tags else any(hits)):
                return False
        if text:
            haystack = [photo.title, photo.description, *photo.tags, *photo_tags]
            return any(text in part.lower() for part in haystack)
        return True


@dataclass(frozen=True)
class Injection:
    """A fault the server injects into many calls (see :meth:`FakeFlickrServer.inject`).

    ``mode``: one of :data:`INJECT_MODES`. ``methods``: the Flickr methods it hits, ``"image"`` for
    image downloads (default: every API method and images). ``times``: the first that many requests
    for each ``(method, subject)`` fail (subject: the photo id, or the query of a search), later
    ones are answered normally; None: every request fails. So ``times`` <= the client's retries
    tests recovery, more tests giving up. Modes: ``http500`` / ``http503`` / ``http429`` (with
    ``Retry-After: retry_after``), ``code105`` (Flickr's "service unavailable" payload), ``timeout``
    (sleep the server's ``timeout_sleep_s``, then answer normally: the client is gone), ``slow``
    (sleep ``slow_s``, then answer normally), ``html`` (status 200, an HTML error page instead of
    JSON), ``cut`` (images: send ``cut_at`` bytes of a larger declared Content-Length, then close).
    ``photo_ids``: only requests about these photos (None: every subject), so one run can hold
    several faults, each on its own photos.
    """

    mode: str
    times: int | None = 1
    methods: tuple[str, ...] = API_METHODS + ("image",)
    photo_ids: frozenset[str] | None = None
    slow_s: float = 0.5
    retry_after: int | None = 1
    cut_at: int = 200

    def __post_init__(self) -> None:
        if self.mode not in INJECT_MODES:
            raise ValueError(f"mode must be one of {INJECT_MODES}, not {self.mode!r}")


def _patched(obj: dict, patch) -> object:
    """``obj`` with ``patch`` applied: a callable's result, or a recursive merge (DROP deletes)."""
    if patch is None:
        return obj
    if callable(patch):
        return patch(obj)
    out = dict(obj)
    for key, value in patch.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _patched(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class CallRecord:
    """One request the server answered, as the call log keeps it.

    ``t`` is ``time.monotonic()`` when the request arrived, ``duration_s`` the time to compute its
    answer (injected sleeps included); the record is logged just before the answer is sent.
    ``method`` is the Flickr method ("(none)" if absent), ``"image"`` for an image GET and
    ``"image.head"`` for a HEAD. ``query`` is the call's own parameters, canonically encoded
    (API calls only); ``size`` the size label of an image. ``stat``/``code`` come from the JSON body
    (None for non-JSON answers). ``fault`` names an injected failure or a limit: one of
    :data:`FAIL_MODES`, ``"rate_limit"``, ``"image_status"``, ``"truncate"``, ``"server_error"``, or
    ``"injected_"`` + an :class:`Injection` mode.
    """

    t: float
    duration_s: float
    method: str
    photo_id: str | None
    query: str | None
    size: str | None
    consumer_key: str | None
    http_status: int
    stat: str | None
    code: int | None
    fault: str | None

    @property
    def successful(self) -> bool:
        """HTTP 200, not a Flickr failure, nothing injected but a delay (a complete, correct answer)."""
        return self.http_status == 200 and self.stat != "fail" and self.fault in (None, "injected_slow")

    @property
    def subject(self) -> str | None:
        """What the call was about: the photo id, else (for search) the canonical query."""
        return self.photo_id if self.photo_id is not None else self.query


@dataclass
class _Exchange:
    """One request being answered: the response to send and the fields of its CallRecord."""

    started: float
    method: str = "(none)"
    photo_id: str | None = None
    query: str | None = None
    size: str | None = None
    consumer_key: str | None = None
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stat: str | None = None
    code: int | None = None
    fault: str | None = None
    declared_length: int | None = None  # a Content-Length larger than the body: the body is cut

    def ok(self, payload: dict) -> None:
        self._json({**payload, "stat": "ok"})

    def fail(self, code: int, message: str) -> None:
        self._json({"stat": "fail", "code": code, "message": message})

    def plain(self, status: int, text: str | None = None, fault: str | None = None) -> None:
        self.status = status
        self.content_type = "text/plain; charset=utf-8"
        self.body = (text or HTTPStatus(status).phrase).encode("utf-8")
        self.fault = fault or self.fault

    def _json(self, payload: dict) -> None:
        self.status = 200
        self.content_type = "application/json; charset=utf-8"
        self.body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.stat = payload["stat"]
        self.code = payload.get("code")

    def record(self) -> CallRecord:
        return CallRecord(
            t=self.started, duration_s=time.monotonic() - self.started, method=self.method,
            photo_id=self.photo_id, query=self.query, size=self.size,
            consumer_key=self.consumer_key, http_status=self.status, stat=self.stat,
            code=self.code, fault=self.fault,
        )


class FakeFlickrServer:
    """The fake Flickr on ``127.0.0.1`` (ephemeral port by default), served from a daemon thread.

    ``valid_keys`` maps consumer keys to secrets (default ``{"key": "secret"}``). ``rate_limit``
    ``(calls, seconds)`` allows each key that many API calls in any sliding window of that length;
    beyond it the answer is HTTP 429 with ``Retry-After`` (image downloads are not limited).
    ``global_slow_s`` delays every API call that passes the key and rate checks, and every
    download of an existing image. ``verify_signatures`` checks OAuth HMAC-SHA1
    signatures. ``timeout_sleep_s`` is how long the ``timeout`` fault sleeps before answering.
    Sleeps end early when the server stops, so :meth:`stop` never waits on them.
    ``search_cap``: the most results one search query yields (Flickr: 4,000). Faults for a test:
    :meth:`inject` / :meth:`clear_injections`.
    """

    def __init__(
        self,
        corpus: FakeCorpus,
        valid_keys: Mapping[str, str] | None = None,
        rate_limit: tuple[int, float] | None = None,
        global_slow_s: float = 0.0,
        verify_signatures: bool = True,
        timeout_sleep_s: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        search_cap: int = SEARCH_CAP,
    ) -> None:
        self.corpus = corpus
        self.valid_keys = dict(valid_keys) if valid_keys is not None else {"key": "secret"}
        self.rate_limit = rate_limit
        self.global_slow_s = global_slow_s
        self.verify_signatures = verify_signatures
        self.timeout_sleep_s = timeout_sleep_s
        self.search_cap = search_cap
        self._injections: list[Injection] = []
        self._injected: Counter[tuple[int, str, str | None]] = Counter()
        self._address = (host, port)
        self._methods: dict[str, Callable[[_Exchange, dict[str, str]], None]] = {
            "flickr.photos.getInfo": self._get_info,
            "flickr.photos.getSizes": self._get_sizes,
            "flickr.photos.search": self._search,
        }
        self._lock = threading.Lock()
        self._log: list[CallRecord] = []
        self._windows: dict[str, deque[float]] = {}
        self._fault_counts: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeFlickrServer:
        """Binds the socket and starts serving; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the fake Flickr server is already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, _Handler, app=self)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-flickr-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, cuts open connections and ends injected sleeps. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeFlickrServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (kept after :meth:`stop`, so URLs can still be built)."""
        if self._port is None:
            raise RuntimeError("the fake Flickr server has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash); image URLs live right under it."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def rest_url(self) -> str:
        """The REST endpoint, for ``FlickrAPI.REST_URL``."""
        return self.base_url + REST_PATH

    def client(self, key: str | None = None, secret: str | None = None, timeout: float = 10.0):
        """A real ``flickrapi.FlickrAPI`` (parsed-json, no token) pointed at this server.

        ``key`` defaults to the first valid key, ``secret`` to that key's secret.
        """
        import flickrapi

        key = key if key is not None else next(iter(self.valid_keys))
        secret = secret if secret is not None else self.valid_keys.get(key, "")
        api = flickrapi.FlickrAPI(key, secret, format="parsed-json", store_token=False, timeout=timeout)
        api.REST_URL = self.rest_url
        return api

    def image_url(self, photo: FakePhoto, label: str = "Medium 640") -> str:
        """Where this server serves one size of a photo (the getSizes ``source``)."""
        suffix = SIZE_SPECS[label][0]
        name = f"{photo.id}_{photo.secret}" + (f"_{suffix}" if suffix else "")
        return f"{self.base_url}/{photo.server}/{name}.jpg"

    # -- injected faults ---------------------------------------------------------------------------

    def inject(self, mode: str | Injection, **options) -> Injection:
        """Adds a fault to later calls (``inject("http500", times=2)``, see :class:`Injection`)."""
        injection = mode if isinstance(mode, Injection) else Injection(mode, **options)
        with self._lock:
            self._injections.append(injection)
        return injection

    def clear_injections(self) -> None:
        """Removes every injected fault (and forgets how often each fired)."""
        with self._lock:
            self._injections.clear()
            self._injected.clear()

    def _injection_for(self, method: str, subject: str | None) -> Injection | None:
        """The first injection that fails this request now (counting it), or None."""
        with self._lock:
            for n, injection in enumerate(self._injections):
                if method not in injection.methods or (
                        injection.photo_ids is not None and subject not in injection.photo_ids):
                    continue
                key = (n, method, subject)
                if injection.times is not None and self._injected[key] >= injection.times:
                    continue
                self._injected[key] += 1
                return injection
        return None

    def _apply_injection(self, ex: _Exchange, injection: Injection) -> bool:
        """Puts the injected fault into ``ex``; True when ``ex`` now holds the whole answer."""
        ex.fault = "injected_" + injection.mode
        mode = injection.mode
        if mode in ("timeout", "slow"):
            self._sleep(self.timeout_sleep_s if mode == "timeout" else injection.slow_s)
            return False
        if mode == "code105":
            ex.fail(105, "Service currently unavailable")
        elif mode == "html":
            ex.status, ex.content_type = 200, "text/html; charset=utf-8"
            ex.body = b"<!DOCTYPE html><html><body><h1>Bad Gateway</h1></body></html>"
        elif mode == "cut":
            return False  # applied by _answer_image, once it has the image
        else:
            ex.plain(int(mode[len("http"):]))
            if ex.status == 429 and injection.retry_after is not None:
                ex.headers["Retry-After"] = str(injection.retry_after)
        return True

    # -- call log ----------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[CallRecord]:
        """The call log, in the order the answers were ready, optionally for one method."""
        with self._lock:
            return [r for r in self._log if method is None or r.method == method]

    def count(self, method: str | None = None) -> int:
        """How many requests (of one method) were answered."""
        return len(self.calls(method))

    def successful_calls_by_key(self) -> Counter[tuple[str, str | None]]:
        """How often each ``(method, subject)`` was answered successfully (see CallRecord)."""
        return Counter((r.method, r.subject) for r in self.calls() if r.successful)

    def duplicate_successful_calls(self) -> dict[tuple[str, str | None], int]:
        """The ``(method, subject)`` pairs answered successfully more than once, with their counts.

        Images count per photo: downloading two sizes of one photo is a duplicate too.
        """
        return {k: n for k, n in self.successful_calls_by_key().items() if n > 1}

    def reset_log(self) -> None:
        """Empties the call log and resets :attr:`max_concurrency_seen` (fault counters persist)."""
        with self._lock:
            self._log.clear()
            self._max_in_flight = self._in_flight

    @property
    def max_concurrency_seen(self) -> int:
        """The most requests that were being answered at once."""
        with self._lock:
            return self._max_in_flight

    # -- request handling (called from the handler threads) ------------------------------------

    def _respond(self, http_method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Exchange:
        """Computes the answer to one request, tracking concurrency."""
        ex = _Exchange(started=time.monotonic())
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            path, _, query = target.partition("?")
            if path == REST_PATH:
                self._answer_api(ex, http_method, path, query, headers, body)
            else:
                ex.method = "image" if http_method != "HEAD" else "image.head"
                self._answer_image(ex, path)
        except Exception:
            _LOG.exception("fake Flickr failed on %s %s", http_method, path)
            ex.plain(500, "fake Flickr server error", fault="server_error")
        finally:
            with self._lock:
                self._in_flight -= 1
        return ex

    def _log_exchange(self, ex: _Exchange) -> None:
        record = ex.record()
        with self._lock:
            self._log.append(record)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _answer_api(self, ex, http_method, path, query, headers, body) -> None:
        is_form = headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        form = body.decode("utf-8", "replace") if is_form else ""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(form, keep_blank_values=True))
        ex.method = params.get("method") or "(none)"
        ex.photo_id = params.get("photo_id")
        ex.query = urlencode(sorted((k, v) for k, v in params.items() if k not in _TRANSPORT_PARAMS))
        if params.get("format") != "json":
            ex.plain(400, "this fake Flickr answers format=json only")
            return
        failure = self._authenticate(ex, http_method, headers, path, query, form, params)
        if failure is not None:
            ex.fail(*failure)
            return
        retry_after = self._admit(ex.consumer_key)
        if retry_after is not None:
            ex.plain(429, fault="rate_limit")
            ex.headers["Retry-After"] = str(retry_after)
            return
        method = self._methods.get(ex.method)
        if method is None:
            ex.fail(112, f'Method "{ex.method}" not found')
            return
        injection = self._injection_for(ex.method, ex.photo_id if ex.photo_id is not None else ex.query)
        if injection is not None and self._apply_injection(ex, injection):
            return
        self._sleep(self.global_slow_s)
        method(ex, params)

    def _authenticate(self, ex, http_method, headers, path, query, form, params) -> tuple[int, str] | None:
        """Sets ``ex.consumer_key``; returns Flickr's (code, message) when the caller is refused."""
        header = headers.get("Authorization")
        if header is None:  # an unsigned call names its key as a parameter
            ex.consumer_key = params.get("api_key") or None
            if ex.consumer_key is None:
                return 100, "Invalid API Key (Key has invalid format)"
            return None if ex.consumer_key in self.valid_keys else (100, "Invalid API Key (Key not found)")
        try:
            oauth = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
        except ValueError:
            return 96, "Invalid signature"
        ex.consumer_key = oauth.get("oauth_consumer_key")
        if ex.consumer_key not in self.valid_keys:
            return 100, "Invalid API Key (Key not found)"
        if "oauth_token" in oauth:
            return 98, "Invalid auth token"
        if not self.verify_signatures:
            return None
        if oauth.get("oauth_signature_method") != "HMAC-SHA1":
            return 96, "Invalid signature"
        host = headers.get("Host") or f"{self._address[0]}:{self.port}"
        try:
            request = SimpleNamespace(
                http_method=http_method,
                uri=f"http://{host}{path}",
                signature=oauth.get("oauth_signature", ""),
                params=signature.collect_parameters(
                    uri_query=query, body=form, headers={"Authorization": header}),
            )
        except ValueError:
            return 96, "Invalid signature"
        if not signature.verify_hmac_sha1(request, self.valid_keys[ex.consumer_key], ""):
            return 96, "Invalid signature"
        return None

    def _admit(self, key: str) -> int | None:
        """Counts a call against the key's sliding window; the Retry-After seconds when over it."""
        if self.rate_limit is None:
            return None
        calls, seconds = self.rate_limit
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - seconds:
                window.popleft()
            if len(window) >= calls:
                return max(1, math.ceil(window[0] + seconds - now))
            window.append(now)
        return None

    def _photo_for_call(self, ex: _Exchange) -> FakePhoto | None:
        """The shared start of the per-photo methods: lookup, injected fault, delay, visibility.

        Returns the photo to answer about, or None when ``ex`` already holds the answer.
        """
        photo = self.corpus.get(ex.photo_id) if ex.photo_id else None
        if photo is not None:
            if self._inject_fault(ex, photo):
                return None
            self._sleep(photo.slow_s)
        if photo is None or photo.visibility != "public":
            ex.fail(1, f'Photo "{ex.photo_id or ""}" not found (invalid ID)')
            return None
        return photo

    def _inject_fault(self, ex: _Exchange, photo: FakePhoto) -> bool:
        """Applies the photo's fail_times/fail_mode; True when ``ex`` now holds a failure."""
        if photo.fail_times <= 0:
            return False
        with self._lock:
            self._fault_counts[photo.id] += 1
            if self._fault_counts[photo.id] > photo.fail_times:
                return False
        ex.fault = photo.fail_mode
        if photo.fail_mode == "timeout":
            self._sleep(self.timeout_sleep_s)
            return False
        if photo.fail_mode == "code105":
            ex.fail(105, "Service currently unavailable")
            return True
        ex.plain(int(photo.fail_mode[len("http"):]))
        if ex.status == 429:
            ex.headers["Retry-After"] = "1"
        return True

    def _get_info(self, ex: _Exchange, params: dict[str, str]) -> None:
        photo = self._photo_for_call(ex)
        if photo is None:
            return
        posted = str(photo.date_uploaded)
        page_url = _photo_page(photo)
        tags = [
            {"id": f"{photo.owner_nsid.split('@')[0]}-{photo.id}-{i}", "author": photo.owner_nsid,
             "authorname": photo.owner_username, "raw": raw, "_content": normalise_tag(raw),
             "machine_tag": int(bool(_MACHINE_TAG.match(raw.strip())))}
            for i, raw in enumerate(photo.tags)
        ]
        ex.ok({"photo": _patched({
            "id": photo.id, "secret": photo.secret, "server": photo.server, "farm": photo.farm,
            "dateuploaded": posted, "isfavorite": 0, "license": photo.license,
            "safety_level": "0", "rotation": 0, "originalsecret": photo.secret, "originalformat": "jpg",
            "owner": {"nsid": photo.owner_nsid, "username": photo.owner_username,
                      "realname": photo.owner_realname, "location": "", "iconserver": "0",
                      "iconfarm": 0, "path_alias": None},
            "title": {"_content": photo.title},
            "description": {"_content": photo.description},
            "visibility": {"ispublic": 1, "isfriend": 0, "isfamily": 0},
            "dates": {"posted": posted, "taken": photo.taken_text, "takengranularity": 0,
                      "takenunknown": "0", "lastupdate": posted},
            "views": str(photo.views),
            "editability": {"cancomment": 0, "canaddmeta": 0},
            "publiceditability": {"cancomment": 1, "canaddmeta": 0},
            "usage": {"candownload": 1, "canblog": 0, "canprint": 0, "canshare": 1},
            "comments": {"_content": "0"},
            "notes": {"note": []},
            "people": {"haspeople": 0},
            "tags": {"tag": tags},
            "urls": {"url": [{"type": "photopage", "_content": page_url}]},
            "media": "photo",
        }, photo.info_patch)})

    def _get_sizes(self, ex: _Exchange, params: dict[str, str]) -> None:
        photo = self._photo_for_call(ex)
        if photo is None:
            return
        sizes = []
        for label in photo.offered_sizes:
            width, height = photo.size_dimensions(label)
            sizes.append({
                "label": label, "width": width, "height": height,
                "source": self.image_url(photo, label),
                "url": f"{_photo_page(photo)}sizes/{SIZE_SPECS[label][0] or 'm'}/",
                "media": "photo",
            })
        ex.ok({"sizes": _patched({"canblog": 0, "canprint": 0, "candownload": 1, "size": sizes},
                                 photo.sizes_patch)})

    def _search(self, ex: _Exchange, params: dict[str, str]) -> None:
        try:
            min_upload = _parse_upload_date(params.get("min_upload_date"))
            max_upload = _parse_upload_date(params.get("max_upload_date"))
            per_page = min(500, max(1, int(params.get("per_page") or 100)))
            page = max(1, int(params.get("page") or 1))
        except ValueError as exc:
            ex.plain(400, f"this fake Flickr cannot read a search parameter: {exc}")
            return
        tags = [tag for tag in params.get("tags", "").split(",") if normalise_tag(tag)]
        text = params.get("text", "").strip()
        if not (tags or text or min_upload is not None or max_upload is not None):
            ex.fail(3, "Parameterless searches have been disabled. Please use flickr.photos.getRecent instead.")
            return
        ids = self.corpus.search(
            tags=tags, tag_mode=params.get("tag_mode", "any"), text=text,
            min_upload_date=min_upload, max_upload_date=max_upload,
            sort=params.get("sort") or "date-posted-desc",
        )
        start = (page - 1) * per_page
        if self.search_cap <= start < len(ids):  # past Flickr's cap: the last page within it again
            start = (self.search_cap - 1) // per_page * per_page
        end = min(start + per_page, self.search_cap)
        photos = (self.corpus.get(i) for i in ids[start:end])
        ex.ok({"photos": {
            "page": page, "pages": math.ceil(len(ids) / per_page), "perpage": per_page,
            "total": len(ids),
            "photo": [
                {"id": p.id, "owner": p.owner_nsid, "secret": p.secret, "server": p.server,
                 "farm": p.farm, "title": p.title, "ispublic": 1, "isfriend": 0, "isfamily": 0}
                for p in photos if p is not None
            ],
        }})

    def _answer_image(self, ex: _Exchange, path: str) -> None:
        match = _IMAGE_PATH.match(path)
        if match is None:
            ex.plain(404)
            return
        ex.photo_id = match["id"]
        photo = self.corpus.get(ex.photo_id)
        label = _LABEL_BY_SUFFIX.get(match["suffix"] or "")
        if (photo is None or photo.image is None or label not in photo.offered_sizes
                or (photo.server, photo.secret) != (match["server"], match["secret"])):
            ex.plain(404)
            return
        ex.size = label
        injection = self._injection_for("image", ex.photo_id)
        if injection is not None and self._apply_injection(ex, injection):
            return
        self._sleep(self.global_slow_s + photo.slow_s)
        if photo.image_status != 200:
            ex.plain(photo.image_status, fault="image_status")
            return
        data = photo.image() if callable(photo.image) else photo.image
        if photo.image_truncate is not None and photo.image_truncate < len(data):
            data, ex.fault = data[:photo.image_truncate], "truncate"
        if injection is not None and injection.mode == "cut" and injection.cut_at < len(data):
            ex.declared_length, data = len(data), data[:injection.cut_at]
        ex.status, ex.content_type, ex.body = 200, "image/jpeg", data


def _photo_page(photo: FakePhoto) -> str:
    return f"https://www.flickr.com/photos/{photo.owner_nsid}/{photo.id}/"


def _parse_upload_date(value: str | None) -> int | None:
    """Unix seconds, or a MySQL datetime (UTC), as Flickr accepts both; None when absent."""
    if value is None or value == "":
        return None
    if re.fullmatch(r"\d+(\.\d*)?", value):
        return int(float(value))
    fmt = TAKEN_FORMAT if " " in value else "%Y-%m-%d"
    return int(datetime.strptime(value, fmt).replace(tzinfo=timezone.utc).timestamp())


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeFlickrServer and can cut its open connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, app: FakeFlickrServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client

    def handle_error(self, request, client_address) -> None:
        _LOG.debug("fake Flickr connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive) plumbing; FakeFlickrServer computes every answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    do_POST = do_GET

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ex = app._respond(self.command, self.path, self.headers, body)
        app._log_exchange(ex)  # before answering: a client that has its answer finds it logged
        try:
            self.send_response(ex.status)
            self.send_header("Content-Type", ex.content_type)
            self.send_header("Content-Length", str(ex.declared_length or len(ex.body)))
            for name, value in ex.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(ex.body)
            if ex.declared_length:  # the body was cut short: end the connection mid-answer
                self.wfile.flush()
                self.close_connection = True
        except OSError:  # the client went away (it timed out, or the server is stopping)
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        _LOG.debug("fake Flickr %s: " + format, self.address_string(), *args)


# -- standalone use ----------------------------------------------------------------------------------


def load_photos_json(path: str | Path) -> list[FakePhoto]:
    """Photos from a JSON list of FakePhoto fields.

    Instead of ``image``, an entry may give ``image_file`` (a JPEG, relative to the JSON file) or
    ``"placeholder_image": true`` (a generated JPEG); with neither, the photo has no image.
    """
    path = Path(path)
    photos = []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        entry = dict(entry)
        image_file = entry.pop("image_file", None)
        if image_file is not None:
            entry["image"] = (path.parent / image_file).read_bytes()
        elif entry.pop("placeholder_image", False):
            entry["image"] = placeholder_jpeg(len(photos))
        photos.append(FakePhoto(**entry))
    return photos


def serve_forever(server: FakeFlickrServer, announce: TextIO = sys.stdout) -> None:
    """Starts ``server``, writes its REST URL as one line, and serves until SIGINT or SIGTERM.

    Call it from the main thread (it installs a SIGTERM handler, restored on return).
    """
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with server:
            print(server.rest_url, file=announce, flush=True)
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m moodlake_dev.doubles.fake_flickr``: serve a corpus from a JSON file."""
    parser = argparse.ArgumentParser(prog="python -m moodlake_dev.doubles.fake_flickr", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port (the URL is printed)")
    parser.add_argument("--photos-json", type=Path, help="see load_photos_json; default: no photos")
    parser.add_argument("--key", default="key", help="the consumer key clients must use")
    parser.add_argument("--secret", default="secret", help="its (test) consumer secret")
    parser.add_argument("--rate-limit", metavar="CALLS/SECONDS", help="e.g. 100/1 per key")
    parser.add_argument("--global-slow-s", type=float, default=0.0)
    parser.add_argument("--timeout-sleep-s", type=float, default=2.0)
    parser.add_argument("--no-verify-signatures", action="store_true")
    args = parser.parse_args(argv)
    rate_limit = None
    if args.rate_limit:
        calls, _, seconds = args.rate_limit.partition("/")
        rate_limit = (int(calls), float(seconds or 1))
    corpus = FakeCorpus(load_photos_json(args.photos_json) if args.photos_json else None)
    serve_forever(FakeFlickrServer(
        corpus, valid_keys={args.key: args.secret}, rate_limit=rate_limit,
        global_slow_s=args.global_slow_s, verify_signatures=not args.no_verify_signatures,
        timeout_sleep_s=args.timeout_sleep_s, host=args.host, port=args.port,
    ))


if __name__ == "__main__":
    main()
