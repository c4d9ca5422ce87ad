"""Posts from the Flickr API through the ``flickrapi`` client.

Per photo: ``flickr.photos.getInfo`` (title, description, tags, dates, owner), then
``flickr.photos.getSizes``, then the image of the configured size ('Medium 640'). The ids come
from a list file (see :mod:`moodlake.sources.idlists`) or from ``flickr.photos.search`` over an
upload-date window (the nightly new posts), run on the driver.

Every API call, on the driver or any executor, first takes a slot of the run's global budget
(:mod:`moodlake.coordinator`). Errors:

* timeouts (``flickr.timeout_s`` on every request), connection errors, answers cut short, HTTP
  5xx / 429, non-JSON answers and Flickr code 105 are retried ``flickr.max_retries`` times with
  bounded exponential backoff and jitter, waiting at least what a ``Retry-After`` header asks (up
  to :data:`RETRY_AFTER_MAX_S`); each retry takes a new budget slot. When retries run out the photo
  goes to ``ingest_failures`` as not permanent, and the next run tries it again;
* code 1 (not found, or private) and other refusals about the photo are permanent failures;
* code 100 (invalid API key) and 96-99 (signature / authentication) stop the whole job at once:
  no executor makes another call;
* malformed payloads (a field of the wrong type, no ``photo`` object) are permanent failures
  (``malformed_payload``) with the reason; missing optional fields and invalid dates land as
  NULL with a quality flag; titles, descriptions and tags are HTML-unescaped once; more than
  :data:`MAX_TAGS` tags are cut to that many (flag ``tags:truncated``, the count in ``raw``).

A search over an upload window whose total passes Flickr's cap (:data:`SEARCH_RESULT_CAP` results
per query) is bisected into narrower windows until each fits; a one-second window that still
passes it becomes an ``ingest_failures`` row (``search_window_over_cap``) with its count.

The key and secret come from the environment or ``conf/local/`` (see config); they are sent only
inside flickrapi's OAuth signature and are masked in every message MoodLake writes.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import html
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
FLICKR_EPOCH = 1_072_915_200  # 2004-01-01: the lower bound of a search split with no --since
RETRY_AFTER_MAX_S = 300.0  # a longer Retry-After is waited only this long before the next try
MAX_TAGS = 500  # Flickr allows 75 per photo; more is hostile input, cut with a flag
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # an API answer declaring more is refused unread

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


class MalformedPayload(Exception):
    """A Flickr answer that does not have the shape of one (the message says what is wrong)."""


class ResponseTooLarge(Exception):
    """An answer declaring more than MAX_RESPONSE_BYTES."""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


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
        # flickrapi hides the response: a hook keeps its Retry-After (per thread) and refuses
        # answers too large to hold, before their body is read.
        self._local = threading.local()
        self.api.flickr_oauth.session.hooks["response"].append(self._on_api_response)
        self.http.hooks["response"].append(self._on_response)
        logging.getLogger("flickrapi").setLevel(logging.CRITICAL)  # it logs response bodies on errors

    def _on_response(self, r, *args, **kwargs):
        self._local.retry_after = _retry_after(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
        return r

    def _on_api_response(self, r, *args, **kwargs):
        self._on_response(r)
        n = r.headers.get("Content-Length", "")
        if n.isdigit() and int(n) > MAX_RESPONSE_BYTES:
            r.close()
            raise ResponseTooLarge(f"the answer declares {int(n):,} bytes (limit {MAX_RESPONSE_BYTES:,})")
        return r

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` + 1: exponential from ``backoff_initial_s``,
        capped at ``backoff_max_s``, with jitter (50-100 %); at least ``retry_after`` (itself capped
        at RETRY_AFTER_MAX_S) when the server sent one."""
        s = self.settings
        delay = min(s.backoff_max_s, s.backoff_initial_s * 2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
        return delay

    def _sleep_backoff(self, attempt: int, retry_after: float | None = None) -> None:
        time.sleep(self.backoff_delay(attempt, retry_after))

    def _redact(self, text: str) -> str:
        return redact(text, (self.settings.api_key, self.settings.api_secret))

    def _with_retries(self, what: str, attempt: Callable[[], tuple[bool, object, str]]):
        """Run ``attempt`` until it is done: it returns (True, value, "") or (False, None, why it
        was transient), or raises for what is not worth retrying. Backoff between tries."""
        why = ""
        for n in range(self.settings.max_retries + 1):
            self._local.retry_after = None
            done, value, why = attempt()
            if done:
                return value
            if n < self.settings.max_retries:
                self._sleep_backoff(n, self._local.retry_after)
        raise TransientExhausted(f"{what}: gave up after {self.settings.max_retries + 1} attempts ({why})",
                                 self.settings.max_retries + 1)

    def call(self, method: str, **params) -> dict:
        """One API call under the budget, retried while the failure is transient."""
        from flickrapi.exceptions import FlickrError
        from requests.exceptions import RequestException

        def attempt():
            self.ctx.client.acquire()
            self.ctx.client.add(calls=1)
            try:
                return True, self.api.do_flickr_call(method, **params), ""
            except FlickrError as e:
                code = e.code
                if isinstance(code, str):
                    code = int(code) if code.strip().lstrip("-").isdigit() else None
                if code is None and "Status code" not in str(e):
                    raise PermanentError("malformed_payload", self._redact(f"unreadable Flickr error: {e}")[:500]) from None
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
            except ResponseTooLarge as e:
                raise PermanentError("response_too_large", f"{method}: {e}") from None
            except RequestException as e:  # timeouts, refused or cut connections
                return False, None, f"{type(e).__name__}: {self._redact(str(e))[:200]}"
            except (ValueError, AttributeError, KeyError, TypeError) as e:  # not JSON (an HTML page), or no object
                return False, None, f"not a Flickr answer ({type(e).__name__}: {self._redact(str(e))[:120]})"

        reply = self._with_retries(method, attempt)
        if not isinstance(reply, dict):
            raise PermanentError("malformed_payload", f"{method}: the answer is a {type(reply).__name__}, not an object")
        return reply

    def download(self, url: str) -> tuple[bytes | None, str | None]:
        """(bytes, None), or (None, why) when the image is gone for good (4xx). A body shorter
        than its Content-Length (a cut connection) is retried like a timeout."""
        from requests.exceptions import RequestException

        def attempt():
            try:
                r = self.http.get(url, timeout=self.settings.timeout_s)
            except RequestException as e:  # timeouts, refused or cut connections, bad encodings
                return False, None, type(e).__name__
            if r.status_code == 200:
                declared = r.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) != len(r.content):
                    return False, None, f"image cut short ({len(r.content):,} of {int(declared):,} bytes)"
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
        """Every photo the search finds, once, window by window (see :meth:`_search_windows`)."""
        client = FlickrClient(self.settings, ctx)
        q = {k: v for k, v in self.search.items() if k != "max" and v is not None}
        limit = self.search.get("max")
        seen: set[str] = set()
        n = repeated = 0
        for item in self._search_windows(client, q):
            if item.error is None:
                if item.source_id in seen:  # Flickr repeats results across pages as uploads move them
                    repeated += 1
                    continue
                seen.add(item.source_id)
                n += 1
            yield item
            if limit and n >= limit:
                break
        log.info("flickr search %s: %d photos%s", q, n, f" ({repeated} repeated results dropped)" if repeated else "")

    def _search_page(self, client: FlickrClient, q: dict, page: int) -> dict:
        try:
            reply = client.call("flickr.photos.search", sort="date-posted-asc",
                                per_page=self.settings.search_per_page, page=page, **q)
        except (PermanentError, TransientExhausted) as e:
            raise IngestError(f"flickr.photos.search failed: {e}") from None
        photos = reply.get("photos")
        if not isinstance(photos, dict) or not isinstance(photos.get("photo", []), list):
            raise IngestError(f"flickr.photos.search answered without a photo list (page {page} of {q})")
        return photos

    def _search_windows(self, client: FlickrClient, q: dict) -> Iterable[WorkItem]:
        """The search's items; an upload window with more than SEARCH_RESULT_CAP results (which
        Flickr would silently cut) is bisected, ``[lo, mid]`` then ``[mid + 1, hi]`` (Flickr's
        bounds are inclusive), until each window fits. A one-second window that does not fit
        yields what Flickr gives plus a failure item saying how many were left out."""
        cap, per_page = SEARCH_RESULT_CAP, self.settings.search_per_page
        windows = [(q.get("min_upload_date"), q.get("max_upload_date"))]
        while windows:
            lo, hi = windows.pop()
            wq = {**q, "min_upload_date": lo, "max_upload_date": hi}
            wq = {k: v for k, v in wq.items() if v is not None}
            photos = self._search_page(client, wq, 1)
            total, pages = _int(photos.get("total")), _int(photos.get("pages"))
            if total > cap:
                lo_s = int(lo) if lo is not None else FLICKR_EPOCH
                hi_s = int(hi) if hi is not None else int(time.time())
                if hi_s > lo_s:
                    mid = (lo_s + hi_s) // 2
                    log.info("flickr search window %s..%s has %d photos (cap %d): split at %s", lo_s, hi_s, total, cap, mid)
                    windows += [(mid + 1, hi_s), (lo_s, mid)]  # popped in upload order
                    continue
                when = dt.datetime.fromtimestamp(lo_s, dt.timezone.utc).isoformat()
                reason = (f"{total:,} photos match the search {q} in the one second {when}; Flickr returns at most "
                          f"{cap:,} per query, so {total - cap:,} of them could not be listed")
                log.warning(reason)
                yield WorkItem(f"search-window:{lo_s}", None, {"raw": {"query": wq, "total": total}},
                               error=("search", "search_window_over_cap", reason))
            last = min(pages, -(-cap // per_page))  # the pages within Flickr's cap
            page = 1
            while True:
                for i, ph in enumerate(photos.get("photo", []), start=1):
                    pid = str(ph.get("id", "")).strip() if isinstance(ph, dict) else ""
                    if pid:
                        yield WorkItem(f"search:{pid}", pid, {})
                    else:
                        yield WorkItem(f"search-result:{lo}-{hi}:page{page}:{i}", None, {"raw": ph},
                                       error=("search", "malformed_result", "a search result without a photo id"))
                page += 1
                if page > last:
                    break
                photos = self._search_page(client, wq, page)

    # -- executor side
    def process(self, item: WorkItem, ctx: ExecContext):
        client = _client(self, ctx)
        pid = item.source_id
        p = item.payload
        try:
            info = client.call("flickr.photos.getInfo", photo_id=pid).get("photo")
            fields = parse_info(info)
            sizes = _sizes(client.call("flickr.photos.getSizes", photo_id=pid).get("sizes"))
            chosen = choose_size(sizes, self.settings.image_size)
            image, image_err = (None, "no image size offered")
            flags, raw_info = list(fields.pop("flags")), fields.pop("raw_info")
            if chosen is not None:
                image, image_err = client.download(chosen["source"])
                if chosen.get("label") != self.settings.image_size:
                    flags.append(f"image:size_{str(chosen.get('label', '?')).lower().replace(' ', '_')}")
            row = records.post_row(
                source=self.name, source_id=pid, **fields,
                image=image, image_source=chosen["source"] if chosen else None, image_error=image_err,
                **ctx.image_limits,
                label_set_name=self.label_set_name, label_set=self.label_set, label=p.get("label"),
                label_agree=p.get("agree"), label_disagree=p.get("disagree"),
                flags=flags,
                raw={"getInfo": raw_info or info, "getSizes": sizes, "input": p.get("raw")},
            )
        except PermanentError as e:
            return [self.failure_for(item, "fetch", e.code, str(e))]
        except MalformedPayload as e:
            return [self.failure_for(item, "parse", "malformed_payload", f"photo {pid}: {e}")]
        except TransientExhausted as e:
            f = self.failure_for(item, "fetch", "transient_exhausted", str(e), permanent=False)
            f[1]["attempts"] = e.attempts
            return [f]
        except AbortedError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug or an input nobody foresaw: recorded, retried next run
            log.warning("flickr photo %s: unexpected %s", pid, type(e).__name__, exc_info=True)
            return [self.failure_for(item, "fetch", "unexpected_error",
                                     client._redact(f"{type(e).__name__}: {e}")[:500], permanent=False)]
        return [("post", row)]


def _int(value) -> int:
    """A count from a Flickr answer (numbers come as strings too); 0 when unreadable."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _text(obj: dict, key: str, sub: str = "_content") -> str | None:
    """Text field ``key`` of a Flickr object (``{"_content": ...}`` or a plain value), HTML
    entities decoded once. Numbers become text; a list or object is a malformed payload."""
    value = obj.get(key)
    if isinstance(value, dict):
        value = value.get(sub)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MalformedPayload(f"{key} is a {type(value).__name__}, expected text")
    return html.unescape(str(value))


def _tags(info: dict, flags: list[str]) -> tuple[list[str], int]:
    """Tags as published (``raw``, else the normalised ``_content``), entities decoded once,
    whitespace collapsed; at most MAX_TAGS. Returns (tags, how many the payload had)."""
    tags = info.get("tags")
    entries = tags.get("tag", []) if isinstance(tags, dict) else tags
    if entries is None or entries == "":
        return [], 0
    if isinstance(entries, (dict, str, int, float)):
        entries = [entries]  # one tag where a list belongs (what XML-to-JSON converters do)
    if not isinstance(entries, list):
        raise MalformedPayload(f"tags is a {type(entries).__name__}, expected a list")
    out: list[str] = []
    for entry in entries[:MAX_TAGS]:
        value = entry.get("raw", entry.get("_content")) if isinstance(entry, dict) else entry
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            if "tags:malformed_removed" not in flags:
                flags.append("tags:malformed_removed")
            continue
        out.append(" ".join(html.unescape(str(value)).split()))
    if len(entries) > MAX_TAGS:
        flags.append("tags:truncated")
    return out, len(entries)


def _timestamp(value, name: str, flags: list[str]) -> dt.datetime | None:
    """A date of the payload as UTC, or None with a ``<name>:invalid`` flag when unreadable
    (Flickr's '0000-00-00 00:00:00' for unknown dates included)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(type(value).__name__)
        parsed = records.to_utc(value)
        if parsed is not None and not -5_364_662_400 <= parsed.timestamp() < time.time() + 2 * 86400:  # 1800..now
            raise ValueError("out of range")
        return parsed
    except (TypeError, ValueError, OverflowError, OSError):
        flags.append(f"{name}:invalid")
        return None


def parse_info(info) -> dict:
    """The post fields of a getInfo ``photo`` object (keyword arguments of ``records.post_row``
    plus ``flags`` and, when cut, ``raw_info``). Raises MalformedPayload when it is not usable."""
    if not isinstance(info, dict):
        raise MalformedPayload(f"getInfo has no photo object (got {type(info).__name__})")
    flags: list[str] = []
    owner = info.get("owner")
    if isinstance(owner, dict):
        owner = owner.get("nsid")
    if owner is not None and not isinstance(owner, str):
        raise MalformedPayload(f"owner is a {type(owner).__name__}, expected text")
    tags, n_tags = _tags(info, flags)
    raw_info = None
    if n_tags > MAX_TAGS:
        log.warning("flickr photo %s has %d tags: kept the first %d", info.get("id"), n_tags, MAX_TAGS)
        raw_info = {**info, "tags": {"tag": info["tags"]["tag"][:MAX_TAGS] if isinstance(info.get("tags"), dict)
                                     else info["tags"][:MAX_TAGS], "truncated_from": n_tags}}
    dates = info.get("dates") or {}
    if not isinstance(dates, dict):
        raise MalformedPayload(f"dates is a {type(dates).__name__}, expected an object")
    taken = None if str(dates.get("takenunknown", "0")) == "1" else _timestamp(dates.get("taken"), "taken_at", flags)
    uploaded = _timestamp(dates.get("posted") or info.get("dateuploaded"), "uploaded_at", flags)
    return {"owner": owner, "title": _text(info, "title"), "description": _text(info, "description"),
            "tags": tags, "taken_at": taken, "uploaded_at": uploaded, "flags": flags, "raw_info": raw_info}


def _sizes(sizes) -> list[dict]:
    """The usable entries of a getSizes ``sizes`` object (each with a label and an http(s) source)."""
    if not isinstance(sizes, dict):
        raise MalformedPayload(f"getSizes has no sizes object (got {type(sizes).__name__})")
    entries = sizes.get("size", [])
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise MalformedPayload(f"getSizes size is a {type(entries).__name__}, expected a list")
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("source"), str)
            and e["source"].startswith(("http://", "https://"))]


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
