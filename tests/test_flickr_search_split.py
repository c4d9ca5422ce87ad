"""A Flickr search window with more results than Flickr returns per query (4,000) is bisected
into narrower upload windows until each fits (issue #18). The fake server honours the cap as
Flickr does, so an unsplit search would miss photos."""
from __future__ import annotations

import dataclasses
import functools
from urllib.parse import parse_qs

import pytest
from pyspark.sql import functions as F

from moodlake.config import Secret
from moodlake.ingest import Ingestor
from moodlake.sources import flickr
from moodlake.sources.flickr import FlickrSource
from moodlake_dev.doubles.fake_flickr import FakeCorpus, FakeFlickrServer, FakePhoto

KEY, SECRET = "split-key-77ab01", "split-secret-c4e902"
DAY = 1_700_006_400  # 2023-11-15 00:00:00 UTC
N_DAY = 9_000  # uploads in that one day: more than twice the cap


@functools.lru_cache(maxsize=None)
def _photo(pid: str) -> FakePhoto | None:
    i = int(pid) - 900_000 if pid.isdigit() else -1
    if not 0 <= i < N_DAY:
        return None
    # no sizes offered: no image to download, so the test stays cheap (two calls a photo)
    return FakePhoto(id=pid, title=f"upload {i}", date_uploaded=DAY + i * 86_400 // N_DAY, sizes=[])


@pytest.fixture(scope="module")
def server():
    corpus = FakeCorpus(provider=_photo, ids_for_search=[str(900_000 + i) for i in range(N_DAY)])
    with FakeFlickrServer(corpus, valid_keys={KEY: SECRET}, verify_signatures=False) as s:
        yield s


def flickr_cfg(cfg, server, **flickr):
    settings = dataclasses.replace(
        cfg.flickr, rest_url=server.rest_url, api_key=Secret(KEY), api_secret=Secret(SECRET), calls_per_hour=0,
        max_retries=3, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=5.0, threads_per_task=8,
        search_per_page=500)
    return dataclasses.replace(cfg, flickr=dataclasses.replace(settings, **flickr),
                               ingest=dataclasses.replace(cfg.ingest, chunk_size=N_DAY + 100))


def test_the_fake_server_caps_one_query_like_flickr(server):
    """Without splitting, paging through one query yields only the first 4,000 photos."""
    api = server.client(KEY, SECRET)
    q = dict(min_upload_date=DAY, max_upload_date=DAY + 86_399, sort="date-posted-asc", per_page=500)
    first = api.photos.search(page=1, **q)["photos"]
    assert (int(first["total"]), first["pages"]) == (N_DAY, 18)
    seen = set()
    for page in range(1, 19):
        seen |= {p["id"] for p in api.photos.search(page=page, **q)["photos"]["photo"]}
    assert len(seen) == flickr.SEARCH_RESULT_CAP  # pages 9-18 repeat page 8


@pytest.mark.spark
@pytest.mark.slow
def test_a_day_of_9000_uploads_is_split_and_all_land(spark, cfg, server):
    c = flickr_cfg(cfg, server)
    server.reset_log()
    src = FlickrSource(settings=c.flickr, name="flickr-split",
                       search={"min_upload_date": DAY, "max_upload_date": DAY + 86_399})
    r = Ingestor(spark, c).run(src)
    assert r.reconciles() and (r.input_records, r.posts_new, r.failures) == (N_DAY, N_DAY, 0)
    posts = spark.table(c.table("posts")).where(F.col("source") == "flickr-split")
    assert posts.count() == posts.select("source_id").distinct().count() == N_DAY
    assert spark.table(c.table("ingest_failures")).where(F.col("source") == "flickr-split").count() == 0

    searches = [parse_qs(x.query) for x in server.calls("flickr.photos.search")]
    windows = {(int(q["min_upload_date"][0]), int(q["max_upload_date"][0])) for q in searches}
    leaves = sorted(w for w in windows if not any(o != w and w[0] <= o[0] and o[1] <= w[1] for o in windows))
    assert leaves[0][0] == DAY and leaves[-1][1] == DAY + 86_399
    assert all(a[1] + 1 == b[0] for a, b in zip(leaves, leaves[1:]))  # no gap, no overlap
    assert len(leaves) == 4  # 9,000 -> 2 x 4,500 -> 4 x 2,250
    assert server.duplicate_successful_calls() == {}


@pytest.mark.spark
def test_one_second_over_the_cap_is_a_recorded_failure(spark, cfg, server, monkeypatch):
    """60 uploads in one second with a cap of 50: the 50 Flickr lists land, the second is an
    ingest_failures row that says 10 were left out; the photos of the other seconds all land."""
    cap, second = 50, DAY + 86_400 * 3
    extra = [FakePhoto(id=f"95{i:04d}", date_uploaded=second, sizes=[]) for i in range(60)]
    extra += [FakePhoto(id=f"96{i:04d}", date_uploaded=second - 50 + i, sizes=[]) for i in range(30)]
    for p in extra:
        server.corpus.add(p)
    monkeypatch.setattr(flickr, "SEARCH_RESULT_CAP", cap)  # the search runs on the driver
    monkeypatch.setattr(server, "search_cap", cap)
    c = flickr_cfg(cfg, server)
    r = Ingestor(spark, c).run(FlickrSource(settings=c.flickr, name="flickr-second",
                                            search={"min_upload_date": second - 100, "max_upload_date": second + 100}))
    assert r.reconciles() and (r.input_records, r.posts_new, r.failures) == (50 + 30 + 1, 80, 1)
    f = spark.table(c.table("ingest_failures")).where(F.col("source") == "flickr-second").collect()
    assert [(x.reason_code, x.stage) for x in f] == [("search_window_over_cap", "search")]
    assert "60 photos" in f[0].reason and "10 of them could not be listed" in f[0].reason
    got = {x.source_id for x in spark.table(c.table("posts")).where(F.col("source") == "flickr-second").collect()}
    assert {f"96{i:04d}" for i in range(30)} <= got and len(got & {p.id for p in extra[:60]}) == cap
