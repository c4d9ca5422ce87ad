"""Flickr ingest under faults of the local Flickr server (issue #18): timeouts, HTTP 500, slow
answers, rate limiting (HTTP 429 + Retry-After, a per-key window, code 105), HTML error pages and
image downloads cut short. The real flickrapi client talks to the fake over HTTP; every run must
finish with every requested id once in ``posts`` or ``ingest_failures``: ids = landed + failed.

Each fault prints one ``RELIABILITY`` line (rows lost, rows duplicated, extra seconds a photo took
over unfaulted ones): ``pytest tests/test_flickr_faults.py -s | grep RELIABILITY``.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict

import pytest
import requests
from pyspark.sql import functions as F

from moodlake.config import ConfigError, FlickrSettings, Secret
from moodlake.coordinator import Coordinator
from moodlake.ingest import ExecContext, Ingestor
from moodlake.sources.flickr import (
    RETRY_AFTER_MAX_S,
    FlickrClient,
    FlickrSource,
    TransientExhausted,
    _retry_after,
)
from moodlake_dev.doubles.fake_flickr import API_METHODS, FakeCorpus, FakeFlickrServer, FakePhoto, placeholder_jpeg

KEY, SECRET = "faults-key-5d2e8a", "faults-secret-91c7f0"
N = 16  # photos per fault run
TIMEOUT_S = 0.3  # the client's timeout in these tests; the server's 'timeout' fault sleeps longer
BASE = 1_600_000_000


def _photos(prefix: str, n: int) -> list[FakePhoto]:
    return [FakePhoto(id=f"{prefix}{i:04d}", title=f"photo {i}", tags=["sky", f"t{i}"], date_uploaded=BASE + i,
                      width=64, height=48, image=placeholder_jpeg(i % 5, 64, 48)) for i in range(n)]


@pytest.fixture(scope="module")
def server():
    with FakeFlickrServer(FakeCorpus(_photos("81", 400)), valid_keys={KEY: SECRET}, timeout_sleep_s=1.0) as s:
        yield s


def flickr_cfg(cfg, server, **flickr):
    settings = dataclasses.replace(
        cfg.flickr, rest_url=server.rest_url, api_key=Secret(KEY), api_secret=Secret(SECRET), calls_per_hour=0,
        max_retries=3, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=TIMEOUT_S, threads_per_task=4,
    )
    return dataclasses.replace(cfg, flickr=dataclasses.replace(settings, **flickr))


def ids_file(tmp_path, ids):
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    return str(f)


def landed_and_failed(spark, c, name):
    """(source ids in posts, source ids in ingest_failures) of one source, as lists (repeats kept)."""
    posts = [r.source_id for r in spark.table(c.table("posts")).where(F.col("source") == name)
             .select("source_id").collect()]
    fails = [r.post_id.split(":", 1)[1] for r in spark.table(c.table("ingest_failures"))
             .where((F.col("source") == name) & F.col("post_id").isNotNull()).select("post_id").collect()]
    return posts, fails


def lost_and_duplicated(seen: Counter, ids) -> tuple[int, int]:
    """(rows lost, rows duplicated) of ``ids``, given how often each id is in posts + ingest_failures."""
    return sum(1 for i in ids if seen[i] == 0), sum(seen[i] - 1 for i in set(ids) if seen[i] > 1)


def reconcile(spark, c, name, ids):
    """(rows lost, rows duplicated) of ``ids``: each must be once in posts or in ingest_failures."""
    posts, fails = landed_and_failed(spark, c, name)
    return lost_and_duplicated(Counter(posts + fails), ids)


SLICE = 12  # photos per fault
# fault -> how it is injected (on its own slice of photos, all in one ingest run)
FAULTS = {
    "none": None,
    "timeout": dict(mode="timeout", times=1),  # every call and download: the first try gets no answer in time
    "http500": dict(mode="http500", times=2),
    "slow": dict(mode="slow", times=None, slow_s=0.1),  # every answer 0.1 s late (under the timeout)
    "http429_retry_after": dict(mode="http429", times=1, retry_after=1, methods=("flickr.photos.getInfo",)),
    "code105": dict(mode="code105", times=2, methods=API_METHODS),  # Flickr's "service unavailable" payload
    "html_error_page": dict(mode="html", times=1, methods=API_METHODS),  # status 200, HTML instead of JSON
    "image_cut_short": dict(mode="cut", times=2, methods=("image",), cut_at=100),
}


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


@pytest.mark.spark
def test_ingest_survives_every_fault(spark, cfg, server, tmp_path):
    """One ingest, each fault on its own 12 photos: all land, none twice; prints per fault the
    extra seconds a photo took (first request to last answer, median) over unfaulted photos."""
    c = flickr_cfg(cfg, server)
    photos = _photos("81", 400)
    slices = {name: [p.id for p in photos[k * SLICE:(k + 1) * SLICE]] for k, name in enumerate(FAULTS)}
    ids = [i for s in slices.values() for i in s]
    name = "flickr-faults"
    server.clear_injections()
    server.reset_log()
    for fault, spec in FAULTS.items():
        if spec:
            server.inject(**spec, photo_ids=frozenset(slices[fault]))
    ingestor = Ingestor(spark, c)
    try:
        t0 = time.monotonic()
        r = ingestor.run(FlickrSource(settings=c.flickr, ids_path=ids_file(tmp_path, ids), name=name))
        elapsed = time.monotonic() - t0
    finally:
        server.clear_injections()
    log = server.calls()

    assert r.reconciles() and r.input_records == len(ids)
    seen = Counter(sum(landed_and_failed(spark, c, name), []))
    assert lost_and_duplicated(seen, ids) == (0, 0) and set(seen) == set(ids)
    assert (r.posts_new, r.failures) == (len(ids), 0), "every fault here is recoverable within the retries"
    assert server.duplicate_successful_calls() == {}  # nothing fetched again once it had succeeded
    posts = spark.table(c.table("posts")).where(F.col("source") == name)
    assert posts.where("image_status <> 'ok'").count() == 0  # cut downloads were fetched again, whole

    by_photo = defaultdict(list)
    for x in log:
        by_photo[x.photo_id].append(x)
    span = {pid: max(x.t + x.duration_s for x in xs) - min(x.t for x in xs) for pid, xs in by_photo.items()}
    base = _median([span[i] for i in slices["none"]])
    for fault, spec in FAULTS.items():
        faulted = [x for i in slices[fault] for x in by_photo[i] if x.fault]
        if spec is None:
            assert faulted == []
        else:
            assert {x.fault for x in faulted} == {"injected_" + spec["mode"]} and len(faulted) >= SLICE
        extra = _median([span[i] for i in slices[fault]]) - base
        lost, duplicated = lost_and_duplicated(seen, slices[fault])
        print(f"\nRELIABILITY fault={fault} ids={SLICE} lost={lost} duplicated={duplicated} "
              f"faulted_answers={len(faulted)} extra_s_per_photo={extra:.2f} (run {elapsed:.1f} s in all)")
        assert (lost, duplicated) == (0, 0)
        if fault == "http429_retry_after":
            # Retry-After honoured: the retry came >= 1 s after the 429 (the backoff alone is <= 0.05 s)
            gaps = [b.t - a.t for i in slices[fault] for a, b in zip(by_photo[i], by_photo[i][1:])
                    if a.http_status == 429]
            assert len(gaps) == SLICE and min(gaps) >= 0.95, sorted(gaps)


def test_client_waits_out_a_rate_limit_window(server):
    """The server's per-key window (10 calls/s, then 429 + Retry-After): 8 threads making 30 calls
    all succeed, pacing themselves by Retry-After instead of failing."""
    from concurrent.futures import ThreadPoolExecutor

    server.clear_injections()
    server.reset_log()
    server.rate_limit = (10, 1.0)
    client, coordinator = _client(server, max_retries=8)
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: client.call("flickr.photos.getInfo", photo_id=f"81{i:04d}"), range(30)))
        took = time.monotonic() - t0
    finally:
        server.rate_limit = None
        coordinator.__exit__(None, None, None)
    assert [x["photo"]["id"] for x in replies] == [f"81{i:04d}" for i in range(30)]
    limited = [x for x in server.calls() if x.fault == "rate_limit"]
    assert limited and all(x.http_status == 429 for x in limited)
    assert took >= 2.0  # 30 calls at 10 a second
    print(f"\nRELIABILITY fault=rate_limit_window calls=30 lost=0 duplicated=0 answered_429={len(limited)} "
          f"took_s={took:.1f}")


@pytest.mark.spark
def test_retries_exhausted_then_next_run_recovers(spark, cfg, server, tmp_path):
    """The server answers 500 to every getSizes: after max_retries + 1 tries each photo lands in
    ingest_failures (not permanent); when the server is well again the next run lands them all."""
    c = flickr_cfg(cfg, server, max_retries=2)
    ids = [p.id for p in _photos("81", 400)[300:300 + N]]
    name = "flickr-fault-http500-forever"
    src = FlickrSource(settings=c.flickr, ids_path=ids_file(tmp_path, ids), name=name)
    server.clear_injections()
    server.reset_log()
    server.inject("http500", times=None, methods=("flickr.photos.getSizes",))
    try:
        r = Ingestor(spark, c).run(src)
    finally:
        server.clear_injections()
    assert r.reconciles() and (r.posts_new, r.failures) == (0, len(ids))
    assert reconcile(spark, c, name, ids) == (0, 0)
    fails = spark.table(c.table("ingest_failures")).where(F.col("source") == name).collect()
    assert {(f.reason_code, f.permanent, f.attempts) for f in fails} == {("transient_exhausted", False, 3)}
    assert all("HTTP 500" in f.reason for f in fails)
    assert Counter(x.photo_id for x in server.calls("flickr.photos.getSizes")) == {i: 3 for i in ids}

    t0 = time.monotonic()
    r2 = Ingestor(spark, c).run(src)
    recover_s = time.monotonic() - t0
    print(f"\nRELIABILITY fault=http500_every_try ids={len(ids)} first_run_failed={r.failures} "
          f"second_run_landed={r2.landed} recover_s={recover_s:.1f}")
    assert (r2.posts_new, r2.failures, r2.skipped) == (len(ids), 0, 0)
    posts, failed = landed_and_failed(spark, c, name)
    assert sorted(posts) == sorted(ids) and failed == []  # the failures were cleared as they landed


# -- the client alone (no Spark) ---------------------------------------------------------------


def _client(server, **settings) -> tuple[FlickrClient, Coordinator]:
    s = FlickrSettings(api_key=Secret(KEY), api_secret=Secret(SECRET), rest_url=server.rest_url, calls_per_hour=0,
                       timeout_s=TIMEOUT_S, max_retries=1, backoff_initial_s=0.01, backoff_max_s=0.02)
    s = dataclasses.replace(s, **settings)
    coordinator = Coordinator(None).__enter__()
    return FlickrClient(s, ExecContext(coordinator.endpoint.client(), 10_000_000)), coordinator


def test_every_request_has_a_timeout(server):
    """A server that does not answer: each try ends after timeout_s, not when the server wakes up."""
    server.clear_injections()
    server.inject("timeout", times=None)
    client, coordinator = _client(server)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransientExhausted) as e:
            client.call("flickr.photos.getInfo", photo_id="810000")
        api_s = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(TransientExhausted):
            client.download(server.image_url(server.corpus.get("810001")))
        image_s = time.monotonic() - t0
    finally:
        server.clear_injections()
        coordinator.__exit__(None, None, None)
    assert "Timeout" in str(e.value) and e.value.attempts == 2
    assert 2 * TIMEOUT_S <= api_s < 2 * TIMEOUT_S + 0.5 and image_s < 2 * TIMEOUT_S + 0.5  # server sleeps 1 s a try
    with pytest.raises(ConfigError):
        FlickrSettings(timeout_s=0)


def test_backoff_is_bounded_exponential_with_jitter_and_honours_retry_after(server):
    client, coordinator = _client(server, backoff_initial_s=1.0, backoff_max_s=8.0)
    coordinator.__exit__(None, None, None)
    for attempt, full in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        delays = [client.backoff_delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jitter
    assert client.backoff_delay(0, retry_after=5) >= 5
    assert client.backoff_delay(0, retry_after=10_000) == RETRY_AFTER_MAX_S
    assert _retry_after("7") == 7 and _retry_after(None) is None and _retry_after("soon") is None
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after(when) <= 30


def test_fake_server_cuts_an_image_short(server):
    """The 'cut' fault declares the whole image and closes after cut_at bytes: requests sees an
    incomplete body (the client must retry, not store a broken image)."""
    server.clear_injections()
    server.inject("cut", times=1, methods=("image",), cut_at=50)
    url = server.image_url(server.corpus.get("810002"))
    try:
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url, timeout=5)
        assert requests.get(url, timeout=5).content == server.corpus.get("810002").image
    finally:
        server.clear_injections()
