"""Posts from the Flickr API through the ``flickrapi`` client.

Per photo: ``flickr.photos.getInfo`` (title, description, tags, dates, owner), then
``flickr.photos.getSizes``, then the image of the configured size ('Medium 640'). The ids come
from a list file (see :mod:`moodlake.sources.idlists`) or from ``flickr.photos.search`` over an
upload-date window (the nightly new posts), run on the driver.

Every API call, on the driver or any executor, first takes a slot of the run's global budget
(:mod:`moodlake.coordinator`). Errors:

* timeouts, connection errors, HTTP 5xx / 429 and Flickr code 105 are retried with exponential
  backoff (each retry takes a new budget slot); when retries run out the photo goes to
  ``ingest_failures`` as not permanent, and the next run tries it again;
* code 1 (not found, or private) and other refusals about the photo are permanent failures;
* code 100 (invalid API key) and 96-99 (signature / authentication) stop the whole job at once:
  no executor makes another call.

The key and secret come from the environment or ``conf/local/`` (see config); they are sent only
inside flickrapi's OAuth signature and are masked in every message MoodLake writes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from moodlake import records
from moodlake.config import ConfigError, FlickrSettings
from moodlake.coordinator import AbortedError, CallBudget
from moodlake.ingest import ExecContext, IngestError, Source, WorkItem
from moodlake.logs import redact

log = logging.getLogger(__name__)

FATAL_CODES = {100: "invalid API key", 96: "invalid signature", 97: "missing signature",
               98: "login failed / invalid auth token", 99: "insufficient permissions"}
TRANSIENT_CODES = {105: "service currently unavailable", 106: "write operation failed", 0: "unknown error"}
_STATUS = re.compile(r"Status code (\d{3})")
SEARCH_RESULT_CAP = 4000  # Flickr returns at most this many results for one query

# Preference when the configured size is missing: the nearest smaller sizes, then larger ones.
SIZE_ORDER = ["Square", "Large Square", "Thumbnail", "Small", "Small 320", "Small 400", "Medium",
              "Medium 640", "Medium 800", "Large", "Large 1600", "Large 2048", "Original"]


class FlickrAuthError(IngestError):
    """Flickr refused the credentials: the job stops at once."""


class PermanentError(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


class TransientExhausted(Exception):
    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.attempts = attempts


def _fingerprint(settings: FlickrSettings) -> str:
    key = settings.api_key.reveal() if settings.api_key else ""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def choose_size(sizes: list[dict], wanted: str) -> dict | None:
    """The size labelled ``wanted``, else the nearest smaller one, else the nearest larger."""
    by_label = {s.get("label"): s for s in sizes}
    if wanted in by_label:
        return by_label[wanted]
    rank = SIZE_ORDER.index(wanted) if wanted in SIZE_ORDER else len(SIZE_ORDER)
    smaller = [lab for lab in reversed(SIZE_ORDER[:rank]) if lab in by_label]
    larger = [lab for lab in SIZE_ORDER[rank + 1:] if lab in by_label]
    for lab in smaller + larger:
        return by_label[lab]
    return sizes[-1] if sizes else None


class FlickrClient:
    """flickrapi with MoodLake's budget, retries and error classification. One per Spark task."""

    def __init__(self, settings: FlickrSettings, ctx: ExecContext, pool_size: int = 8):
        import flickrapi
        import requests
        from requests.adapters import HTTPAdapter

        if settings.api_key is None or settings.api_secret is None:
            raise ConfigError("Flickr API key and secret are not configured")
        self.settings = settings
        self.ctx = ctx
        self.api = flickrapi.FlickrAPI(settings.api_key.reveal(), settings.api_secret.reveal(),
                                       format="parsed-json", store_token=False, timeout=settings.timeout_s)
        self.api.REST_URL = settings.rest_url
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 10))
        self.api.flickr_oauth.session.mount("http://", adapter)
        self.api.flickr_oauth.session.mount("https://", adapter)
        self.http = requests.Session()
        self.http.mount("http://", HTTPAdapter(pool_maxsize=max(pool_size, 10)))
        self.http.mount("https://", HTTPAdapter(pool_maxsize=max(pool_size, 10)))
        logging.getLogger("flickrapi").setLevel(logging.CRITICAL)  # it logs response bodies on errors

    def _sleep_backoff(self, attempt: int) -> None:
        s = self.settings
        delay = min(s.backoff_max_s, s.backoff_initial_s * 2 ** attempt)
        time.sleep(delay * (0.5 + random.random() / 2))

    def _redact(self, text: str) -> str:
        return redact(text, (self.settings.api_key, self.settings.api_secret))

    def _with_retries(self, what: str, attempt: Callable[[], tuple[bool, object, str]]):
        """Run ``attempt`` until it is done: it returns (True, value, "") or (False, None, why it
        was transient), or raises for what is not worth retrying. Backoff between tries."""
        why = ""
        for n in range(self.settings.max_retries + 1):
            done, value, why = attempt()
            if done:
                return value
            if n < self.settings.max_retries:
                self._sleep_backoff(n)
        raise TransientExhausted(f"{what}: gave up after {self.settings.max_retries + 1} attempts ({why})",
                                 self.settings.max_retries + 1)

    def call(self, method: str, **params) -> dict:
        """One API call under the budget, retried while the failure is transient."""
        from flickrapi.exceptions import FlickrError
        from requests.exceptions import ConnectionError, Timeout

        def attempt():
            self.ctx.client.acquire()
            self.ctx.client.add(calls=1)
            try:
                return True, self.api.do_flickr_call(method, **params), ""
            except FlickrError as e:
                code = e.code
                if code is None:
                    m = _STATUS.search(str(e))
                    status = int(m.group(1)) if m else None
                    if status is not None and (status >= 500 or status == 429):
                        return False, None, f"HTTP {status}"
                    raise PermanentError("http_error", self._redact(f"HTTP error: {e}")) from None
                if code in FATAL_CODES:
                    reason = (f"Flickr rejected the credentials (error {code}: {FATAL_CODES[code]}). "
                              "Check FLICKR_API_KEY / FLICKR_API_SECRET or conf/local/.")
                    self.ctx.client.abort(reason)
                    raise AbortedError(reason) from None
                if code in TRANSIENT_CODES:
                    return False, None, f"Flickr error {code}: {TRANSIENT_CODES[code]}"
                if code == 1:
                    raise PermanentError("not_found", self._redact(f"Flickr error 1: {e}")) from None
                raise PermanentError(f"flickr_error_{code}", self._redact(f"Flickr error {code}: {e}")) from None
            except (Timeout, ConnectionError) as e:
                return False, None, f"{type(e).__name__}: {self._redact(str(e))[:200]}"

        return self._with_retries(method, attempt)

    def download(self, url: str) -> tuple[bytes | None, str | None]:
        """(bytes, None), or (None, why) when the image is gone for good (4xx)."""
        from requests.exceptions import ConnectionError, Timeout

        def attempt():
            try:
                r = self.http.get(url, timeout=self.settings.timeout_s)
            except (Timeout, ConnectionError) as e:
                return False, None, type(e).__name__
            if r.status_code == 200:
                return True, (r.content, None), ""
            if 400 <= r.status_code < 500 and r.status_code != 429:
                return True, (None, f"HTTP {r.status_code} for the image"), ""
            return False, None, f"HTTP {r.status_code}"

        return self._with_retries("image download", attempt)


_CLIENT_LOCK = threading.Lock()


def _client(source: "FlickrSource", ctx: ExecContext) -> FlickrClient:
    """One client per task (per ExecContext), shared by the task's threads."""
    with _CLIENT_LOCK:
        c = getattr(ctx, "_flickr", None)
        if c is None:
            c = FlickrClient(source.settings, ctx, pool_size=source.threads)
            ctx._flickr = c  # type: ignore[attr-defined]
        return c


@dataclass
class FlickrSource(Source):
    settings: FlickrSettings
    ids_path: str | None = None
    ids_format: str = "auto"
    search: dict | None = None  # tags, tag_mode, text, min_upload_date, max_upload_date, max
    label_set_name: str | None = None
    label_set: tuple[str, ...] | None = None
    name: str = "flickr"
    skip_existing: bool = True

    def __post_init__(self):
        self.threads = self.settings.threads_per_task
        if (self.ids_path is None) == (self.search is None):
            raise ValueError("give either an id list or a search")

    def describe(self) -> dict:
        d = {"source": self.name, "rest_url": self.settings.rest_url, "label_set": self.label_set_name,
             "calls_per_hour": self.settings.calls_per_hour}
        d.update({"ids": self.ids_path, "format": self.ids_format} if self.ids_path else {"search": self.search})
        return d

    def budget(self, cfg) -> CallBudget | None:
        if self.settings.calls_per_hour == 0:
            return None
        state = cfg.lakehouse.state / f"flickr-budget-{_fingerprint(self.settings)}.json"
        return CallBudget(self.settings.calls_per_hour, self.settings.burst, state_file=state)

    def fatal_error(self, reason: str) -> Exception:
        return FlickrAuthError(reason)

    # -- driver side
    def work_items(self, ctx: ExecContext) -> Iterable[WorkItem]:
        if self.ids_path:
            from moodlake.sources.idlists import read_id_list

            _, items = read_id_list(self.ids_path, self.ids_format)
            yield from items
            return
        yield from self._search(ctx)

    def _search(self, ctx: ExecContext) -> Iterable[WorkItem]:
        client = FlickrClient(self.settings, ctx)
        q = {k: v for k, v in self.search.items() if k != "max" and v is not None}
        limit = self.search.get("max")
        page, pages, n = 1, 1, 0
        while page <= pages:
            try:
                reply = client.call("flickr.photos.search", sort="date-posted-asc",
                                    per_page=self.settings.search_per_page, page=page, **q)
            except (PermanentError, TransientExhausted) as e:
                raise IngestError(f"flickr.photos.search failed: {e}") from None
            photos = reply["photos"]
            pages = int(photos.get("pages") or 0)
            total = int(photos.get("total") or 0)
            if page == 1:
                log.info("flickr search %s: %d photos in %d pages", q, total, pages)
                if total > SEARCH_RESULT_CAP:
                    log.warning("Flickr returns at most %d results per query and this one has %d: "
                                "narrow the upload window (--since/--until) to get them all", SEARCH_RESULT_CAP, total)
            for i, ph in enumerate(photos.get("photo", []), start=1):
                yield WorkItem(f"search:page{page}:{i}", str(ph["id"]), {})
                n += 1
                if limit and n >= limit:
                    return
            page += 1

    # -- executor side
    def process(self, item: WorkItem, ctx: ExecContext):
        client = _client(self, ctx)
        pid = item.source_id
        p = item.payload
        try:
            info = client.call("flickr.photos.getInfo", photo_id=pid)["photo"]
            sizes = client.call("flickr.photos.getSizes", photo_id=pid)["sizes"].get("size", [])
            chosen = choose_size(sizes, self.settings.image_size)
            image, image_err = (None, "no image size offered")
            flags = []
            if chosen is not None:
                image, image_err = client.download(chosen["source"])
                if chosen.get("label") != self.settings.image_size:
                    flags.append(f"image:size_{chosen.get('label', '?').lower().replace(' ', '_')}")
        except PermanentError as e:
            return [self.failure_for(item, "fetch", e.code, str(e))]
        except TransientExhausted as e:
            f = self.failure_for(item, "fetch", "transient_exhausted", str(e), permanent=False)
            f[1]["attempts"] = e.attempts
            return [f]
        dates = info.get("dates", {})
        taken = None if str(dates.get("takenunknown", "0")) == "1" else dates.get("taken")
        row = records.post_row(
            source=self.name, source_id=pid,
            owner=(info.get("owner") or {}).get("nsid"),
            title=(info.get("title") or {}).get("_content"),
            description=(info.get("description") or {}).get("_content"),
            tags=[t.get("raw", t.get("_content")) for t in (info.get("tags") or {}).get("tag", [])],
            image=image, image_source=chosen["source"] if chosen else None, image_error=image_err,
            max_image_bytes=ctx.max_image_bytes,
            taken_at=taken, uploaded_at=dates.get("posted") or info.get("dateuploaded"),
            label_set_name=self.label_set_name, label_set=self.label_set, label=p.get("label"),
            label_agree=p.get("agree"), label_disagree=p.get("disagree"),
            flags=flags,
            raw={"getInfo": info, "getSizes": sizes, "input": p.get("raw")},
        )
        return [("post", row)]


def _unix(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    return int(dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc).timestamp())


def flickr_source(cfg, args) -> FlickrSource:
    """The FlickrSource for ``moodlake ingest flickr`` arguments."""
    from moodlake.sources.idlists import DEFAULT_LABEL_SETS, detect_format
    from pathlib import Path

    s = cfg.flickr
    if s.api_key is None or s.api_secret is None:
        raise ConfigError("the Flickr API key and secret are not set: export FLICKR_API_KEY and "
                          "FLICKR_API_SECRET, or put flickr: {api_key: ..., api_secret: ...} in conf/local/flickr.yaml")
    if args.ids:
        fmt = args.format if args.format != "auto" else detect_format(Path(args.ids))
        ls = args.label_set or DEFAULT_LABEL_SETS.get(fmt)
        return FlickrSource(settings=s, ids_path=str(Path(args.ids).resolve()), ids_format=fmt,
                            label_set_name=ls, label_set=cfg.label_set(ls) if ls else None, name=args.source_name)
    search = {"tags": args.tags, "tag_mode": args.tag_mode if args.tags else None, "text": args.text,
              "min_upload_date": _unix(args.since), "max_upload_date": _unix(args.until), "max": args.max}
    if not any(search[k] for k in ("tags", "text", "min_upload_date", "max_upload_date")):
        raise ConfigError("a Flickr search needs --tags, --text, --since or --until")
    return FlickrSource(settings=s, search=search, name=args.source_name)
