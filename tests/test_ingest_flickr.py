"""Flickr ingestion through the real flickrapi client against the local Flickr test server."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest
from pyspark.sql import functions as F

from moodlake.config import Secret
from moodlake.ingest import Ingestor
from moodlake.sources.flickr import FlickrAuthError, FlickrSource
from moodlake.sources.synthetic import SyntheticSpec
from moodlake_dev.doubles.fake_flickr import FakeCorpus, FakeFlickrServer, FakePhoto
from moodlake_dev.doubles.synthetic_flickr import BASE_ID, photo_id, synthetic_photo

pytestmark = pytest.mark.spark

KEY, SECRET = "test-key-4f1c2a9e77", "test-secret-0b9d3e"
LABELS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
SPEC = SyntheticSpec(labels=LABELS, seed=3)
N_SYNTHETIC = 400

SPECIAL = {
    "7000000001": dict(visibility="private"),
    "7000000002": dict(fail_times=2, fail_mode="code105"),
    "7000000003": dict(fail_times=4, fail_mode="http500"),  # outlasts 3 retries once
    "7000000004": dict(image_status=404),
    "7000000005": dict(image_truncate=300),
    "7000000006": dict(fail_times=1, fail_mode="timeout"),
    "7000000007": dict(sizes=["Square", "Thumbnail", "Small", "Medium", "Large", "Original"]),
    "7000000008": dict(fail_times=1, fail_mode="http429"),
}


@pytest.fixture(scope="module")
def server():
    photos = {pid: dataclasses.replace(synthetic_photo(i, SPEC), id=pid, **kw)
              for i, (pid, kw) in enumerate(SPECIAL.items())}

    def provider(pid):
        i = int(pid) - BASE_ID if pid.isdigit() else -1
        return synthetic_photo(i, SPEC) if 0 <= i < N_SYNTHETIC else None

    corpus = FakeCorpus(photos=photos, provider=provider, ids_for_search=[photo_id(i) for i in range(N_SYNTHETIC)])
    with FakeFlickrServer(corpus, valid_keys={KEY: SECRET}, timeout_sleep_s=2.0) as s:
        yield s


def flickr_cfg(cfg, server, **flickr):
    settings = dataclasses.replace(
        cfg.flickr, rest_url=server.rest_url, api_key=Secret(KEY), api_secret=Secret(SECRET), calls_per_hour=0,
        max_retries=3, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=1.0, threads_per_task=4,
    )
    return dataclasses.replace(cfg, flickr=dataclasses.replace(settings, **flickr))


def source(cfg, name, ids_path=None, search=None, label_set=None):
    return FlickrSource(settings=cfg.flickr, ids_path=str(ids_path) if ids_path else None, search=search,
                        name=name, label_set_name="mikels8" if label_set else None, label_set=label_set)


def api_calls(server, since: int = 0):
    return [c for c in server.calls()[since:] if c.method.startswith("flickr.")]


def test_ids_with_faults_then_a_rerun_that_only_retries(spark, cfg, server, tmp_path, capfd):
    c = flickr_cfg(cfg, server)
    ids = [photo_id(i) for i in range(30)] + list(SPECIAL) + ["9999999999", photo_id(3), "12ab"]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    src = source(c, "flickr-faults", f)
    mark = len(server.calls())
    r = Ingestor(spark, c).run(src)

    assert r.input_records == 41 and r.reconciles()
    assert (r.posts_new, r.failures) == (36, 5)
    assert server.duplicate_successful_calls() == {}
    per_photo = Counter(x.photo_id for x in api_calls(server, mark) if x.successful)
    assert all(per_photo[photo_id(i)] == 2 for i in range(30))  # getInfo + getSizes, once each
    assert r.api_calls == len(api_calls(server, mark))

    posts = {p.source_id: p for p in spark.table(c.table("posts")).where("source = 'flickr-faults'").collect()}
    p0, s0 = posts[photo_id(0)], synthetic_photo(0, SPEC)
    assert p0.image == s0.image() and p0.title == s0.title and p0.tags == s0.tags and p0.owner == s0.owner_nsid
    assert p0.uploaded_at.replace(tzinfo=dt.timezone.utc).timestamp() == s0.date_uploaded
    assert "getInfo" in p0.raw and p0.image_status == "ok"
    assert posts["7000000004"].image_status == "missing" and "404" in posts["7000000004"].image_error
    assert posts["7000000005"].image_status == "truncated"
    assert "image:size_medium" in posts["7000000007"].quality_flags
    assert {"7000000002", "7000000006", "7000000008"} <= set(posts)  # retried, then landed

    fails = {x.input_ref.split(":")[-1]: x for x in
             spark.table(c.table("ingest_failures")).where("source = 'flickr-faults'").collect()}
    assert {k: (v.reason_code, v.permanent) for k, v in fails.items()} == {
        "31": ("not_found", True),              # private
        "33": ("transient_exhausted", False),  # HTTP 500 four times
        "39": ("not_found", True),
        "40": ("duplicate_input", True),
        "41": ("invalid_id", True),
    }
    assert fails["33"].attempts == 4 and "HTTP 500" in fails["33"].reason

    # Again: landed and permanently failed ids are skipped; only the transient one is fetched.
    mark = len(server.calls())
    r2 = Ingestor(spark, c).run(src)
    assert (r2.skipped, r2.posts_new, r2.failures) == (38, 1, 2) and r2.reconciles()
    assert {x.photo_id for x in api_calls(server, mark)} == {"7000000003"}
    left = {x.reason_code for x in spark.table(c.table("ingest_failures")).where("source = 'flickr-faults'").collect()}
    assert left == {"not_found", "duplicate_input", "invalid_id"}  # the transient failure is gone

    out = capfd.readouterr()
    for text in (out.out, out.err):
        assert KEY not in text and SECRET not in text


def test_invalid_key_stops_the_job_at_once(spark, cfg, server, tmp_path):
    c = flickr_cfg(cfg, server, api_key=Secret("not-a-valid-key-999"), api_secret=Secret("nope-nope-nope"))
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(photo_id(i) for i in range(100, 160)) + "\n")
    mark = len(server.calls())
    with pytest.raises(FlickrAuthError) as e:
        Ingestor(spark, c).run(source(c, "flickr-badkey", f))
    msg = str(e.value)
    assert "invalid API key" in msg and "not-a-valid-key-999" not in msg and "nope-nope-nope" not in msg
    made = api_calls(server, mark)
    assert len(made) <= 2 * 4  # at most one call per fetching thread (2 tasks x 4 threads)
    assert {x.code for x in made} == {100}
    run = spark.table(c.table("ingest_runs")).where("source = 'flickr-badkey'").first()
    assert run.status == "failed" and "invalid API key" in run.message
    assert spark.table(c.table("posts")).where("source = 'flickr-badkey'").count() == 0


def test_the_call_budget_paces_every_executor(spark, cfg, server, tmp_path):
    rate_per_s, burst = 8, 2
    c = flickr_cfg(cfg, server, calls_per_hour=rate_per_s * 3600, burst=burst)
    c = dataclasses.replace(c, lakehouse=dataclasses.replace(c.lakehouse, home=str(tmp_path / "home")))
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(photo_id(i) for i in range(200, 212)) + "\n")
    mark = len(server.calls())
    r = Ingestor(spark, c).run(source(c, "flickr-budget", f))
    assert r.posts_new == 12
    times = sorted(x.t for x in api_calls(server, mark))
    assert len(times) == 24
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert worst <= burst + rate_per_s  # never above the budget in any 1-second window
    assert times[-1] - times[0] >= (24 - burst) / rate_per_s * 0.9
    assert (tmp_path / "home" / "state").is_dir()  # the schedule is kept for the next run


def test_search_by_upload_window(spark, cfg, server):
    c = flickr_cfg(cfg, server)
    lo = int(dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    hi = int(dt.datetime(2013, 7, 1, tzinfo=dt.timezone.utc).timestamp())
    expected = {photo_id(i) for i in range(N_SYNTHETIC) if lo <= synthetic_photo(i, SPEC).date_uploaded <= hi}
    expected |= {pid for pid, kw in SPECIAL.items()  # the fault photos are searchable too, unless private
                 if kw.get("visibility") != "private" and lo <= server.corpus.get(pid).date_uploaded <= hi}
    assert 20 < len(expected) < 200
    c = dataclasses.replace(c, flickr=dataclasses.replace(c.flickr, search_per_page=10))  # several pages
    r = Ingestor(spark, c).run(source(c, "flickr-search", search={"min_upload_date": lo, "max_upload_date": hi}))
    assert r.posts_new == len(expected) and r.failures == 0
    got = {p.source_id for p in spark.table(c.table("posts")).where("source = 'flickr-search'").select("source_id").collect()}
    assert got == expected


def test_no_secret_in_any_table(spark, cfg):
    for key in ("posts", "ingest_failures", "ingest_runs"):
        df = spark.table(cfg.table(key))
        text_cols = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        hits = df.where(F.concat_ws(" ", *text_cols).rlike(f"{KEY}|{SECRET}|not-a-valid-key-999")).count()
        assert hits == 0, key
