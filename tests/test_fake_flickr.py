"""The fake Flickr server, driven through the real flickrapi client over HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime

import flickrapi
import pytest
import requests
from flickrapi.exceptions import FlickrError

from moodlake_dev.doubles.fake_flickr import (
    DEFAULT_SIZES,
    FakeCorpus,
    FakeFlickrServer,
    FakePhoto,
    normalise_tag,
    placeholder_jpeg,
)

KEYS = {"key": "secret", "other": "other-secret"}


def _photo(photo_id: str, **fields) -> FakePhoto:
    return FakePhoto(id=photo_id, image=placeholder_jpeg(int(photo_id) % 7), **fields)


def _server(*photos: FakePhoto, **options) -> FakeFlickrServer:
    return FakeFlickrServer(FakeCorpus(photos), valid_keys=KEYS, **options)


def _wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _rest_post(server: FakeFlickrServer, **params) -> requests.Response:
    """An unsigned call, naming the key as api_key (as Flickr allows)."""
    return requests.post(server.rest_url, data={"format": "json", "nojsoncallback": 1, **params}, timeout=5)


def test_get_info_and_get_sizes_round_trip():
    photo = FakePhoto(
        id="4242", secret="beef01", server="7", farm=3, owner_nsid="555@N01", owner_username="ann",
        owner_realname="Ann Example", title="Rainy Tuesday", description="grey <b>skies</b>",
        tags=["Rain", "Grey Sky!", "geo:lat=51.5"], date_taken=datetime(2019, 3, 4, 5, 6, 7),
        date_uploaded=1551675000, width=2048, height=1536, license="4", views=17,
    )
    with _server(photo) as server:
        api = server.client("key")
        info = api.photos.getInfo(photo_id="4242")
        sizes = api.photos.getSizes(photo_id="4242")

    assert info["stat"] == "ok"
    p = info["photo"]
    assert (p["id"], p["secret"], p["server"], p["farm"]) == ("4242", "beef01", "7", 3)
    assert p["owner"]["nsid"] == "555@N01"
    assert (p["owner"]["username"], p["owner"]["realname"]) == ("ann", "Ann Example")
    assert p["title"]["_content"] == "Rainy Tuesday"
    assert p["description"]["_content"] == "grey <b>skies</b>"
    assert p["dateuploaded"] == "1551675000" and p["dates"]["posted"] == "1551675000"
    assert p["dates"]["taken"] == "2019-03-04 05:06:07"
    assert (p["license"], p["views"], p["media"]) == ("4", "17", "photo")
    assert p["visibility"] == {"ispublic": 1, "isfriend": 0, "isfamily": 0}
    assert [(t["raw"], t["_content"], t["machine_tag"]) for t in p["tags"]["tag"]] == [
        ("Rain", "rain", 0), ("Grey Sky!", "greysky", 0), ("geo:lat=51.5", "geo:lat=51.5", 1)]
    assert all(t["author"] == "555@N01" for t in p["tags"]["tag"])
    assert p["urls"]["url"] == [
        {"type": "photopage", "_content": "https://www.flickr.com/photos/555@N01/4242/"}]

    by_label = {s["label"]: s for s in sizes["sizes"]["size"]}
    assert list(by_label) == list(DEFAULT_SIZES)
    assert (by_label["Square"]["width"], by_label["Square"]["height"]) == (75, 75)
    assert (by_label["Medium 640"]["width"], by_label["Medium 640"]["height"]) == (640, 480)
    assert (by_label["Original"]["width"], by_label["Original"]["height"]) == (2048, 1536)
    assert by_label["Medium 640"]["source"] == f"{server.base_url}/7/4242_beef01_z.jpg"
    assert by_label["Medium"]["source"] == f"{server.base_url}/7/4242_beef01.jpg"


def test_custom_size_list_is_what_get_sizes_offers():
    with _server(_photo("1", sizes=["Small", "Medium 640"])) as server:
        sizes = server.client().photos.getSizes(photo_id="1")["sizes"]["size"]
    assert [s["label"] for s in sizes] == ["Small", "Medium 640"]


def test_image_download_serves_the_photo_bytes():
    photo = _photo("1")
    with _server(photo) as server:
        sizes = server.client().photos.getSizes(photo_id="1")["sizes"]["size"]
        sources = {s["label"]: s["source"] for s in sizes}
        got = requests.get(sources["Medium 640"], timeout=5)
        head = requests.head(sources["Large"], timeout=5)
        records = server.calls("image")

    assert got.status_code == 200 and got.content == photo.image
    assert got.headers["Content-Type"] == "image/jpeg"
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(photo.image))
    assert [(r.photo_id, r.size, r.successful) for r in records] == [("1", "Medium 640", True)]


@pytest.mark.parametrize(
    ("fields", "path_change", "status", "length"),
    [
        ({"image": None}, None, 404, None),
        ({"image_status": 500}, None, 500, None),
        ({"image_status": 404}, None, 404, None),
        ({"image_truncate": 100}, None, 200, 100),
        ({}, ("_0a1b2c3d4e", "_ffff"), 404, None),  # wrong secret
    ],
)
def test_image_faults(fields, path_change, status, length):
    photo = FakePhoto(id="9", **{"image": placeholder_jpeg(9), **fields})
    with _server(photo) as server:
        url = server.image_url(photo, "Medium 640")
        if path_change:
            url = url.replace(*path_change)
        got = requests.get(url, timeout=5)
        record = server.calls("image")[0]
    assert got.status_code == status
    assert record.http_status == status and not record.successful
    if length is not None:
        assert len(got.content) == length == int(got.headers["Content-Length"])
        assert got.content == placeholder_jpeg(9)[:length]
        assert record.fault == "truncate"


@pytest.mark.parametrize("photo_id", ["404404", "2"])
def test_unknown_or_private_photo_is_code_1(photo_id):
    with _server(_photo("1"), _photo("2", visibility="private")) as server:
        api = server.client()
        for method in (api.photos.getInfo, api.photos.getSizes):
            with pytest.raises(FlickrError) as err:
                method(photo_id=photo_id)
            assert err.value.code == 1
            assert f'Photo "{photo_id}" not found' in str(err.value)
        assert [r.code for r in server.calls()] == [1, 1]


def test_invalid_key_is_code_100():
    with _server(_photo("1")) as server:
        with pytest.raises(FlickrError) as err:
            server.client("nokey", "secret").photos.getInfo(photo_id="1")
        assert err.value.code == 100
        assert server.calls()[0].consumer_key == "nokey"


def test_wrong_secret_fails_the_signature_check_unless_disabled():
    with _server(_photo("1")) as server:
        with pytest.raises(FlickrError) as err:
            server.client("key", "not-the-secret").photos.getInfo(photo_id="1")
        assert err.value.code == 96
        # a signature over non-ASCII parameters verifies too
        assert server.client("key").photos.search(text="café")["stat"] == "ok"
    with _server(_photo("1"), verify_signatures=False) as server:
        assert server.client("key", "not-the-secret").photos.getInfo(photo_id="1")["stat"] == "ok"


def test_oauth_token_is_refused_with_code_98():
    with _server(_photo("1")) as server:
        token = flickrapi.auth.FlickrAccessToken("tok", "tok-secret", "read")
        api = flickrapi.FlickrAPI("key", "secret", token=token, format="parsed-json", store_token=False)
        api.REST_URL = server.rest_url
        with pytest.raises(FlickrError) as err:
            api.photos.getInfo(photo_id="1")
    assert err.value.code == 98


def test_unsigned_calls_unknown_methods_and_other_formats():
    with _server(_photo("1")) as server:
        assert _rest_post(server, method="flickr.photos.getInfo", photo_id="1", api_key="other").json()[
            "photo"]["id"] == "1"
        assert _rest_post(server, method="flickr.photos.getInfo", photo_id="1").json()["code"] == 100
        with pytest.raises(FlickrError) as unknown:
            server.client().people.getInfo(user_id="x")
        api_xml = flickrapi.FlickrAPI("key", "secret", format="etree", store_token=False)
        api_xml.REST_URL = server.rest_url
        with pytest.raises(FlickrError, match="Status code 400"):
            api_xml.photos.getInfo(photo_id="1")
        assert server.calls()[0].consumer_key == "other"
    assert unknown.value.code == 112
    assert 'Method "flickr.people.getInfo" not found' in str(unknown.value)


def test_code105_fails_fail_times_then_succeeds():
    with _server(_photo("1", fail_times=2, fail_mode="code105"), _photo("2")) as server:
        api = server.client()
        codes = []
        for _ in range(2):
            with pytest.raises(FlickrError) as err:
                api.photos.getSizes(photo_id="1")  # any method counts
            codes.append(err.value.code)
        assert api.photos.getInfo(photo_id="1")["photo"]["id"] == "1"
        assert api.photos.getInfo(photo_id="2")["stat"] == "ok"  # other photos are unaffected
        records = server.calls()
    assert codes == [105, 105]
    assert [(r.photo_id, r.fault, r.successful) for r in records] == [
        ("1", "code105", False), ("1", "code105", False), ("1", None, True), ("2", None, True)]


@pytest.mark.parametrize(("mode", "status"), [("http500", 500), ("http503", 503), ("http429", 429)])
def test_http_faults_surface_as_flickr_error_without_code(mode, status):
    with _server(_photo("1", fail_times=1, fail_mode=mode)) as server:
        api = server.client()
        with pytest.raises(FlickrError) as err:
            api.photos.getInfo(photo_id="1")
        assert api.photos.getInfo(photo_id="1")["stat"] == "ok"
        first = server.calls()[0]
    assert err.value.code is None
    assert str(err.value) == f"do_request: Status code {status} received"
    assert (first.http_status, first.fault) == (status, mode)


def test_rate_limit_answers_429_with_retry_after_per_key():
    with _server(_photo("1"), rate_limit=(3, 60.0)) as server:
        api = server.client("key")
        for _ in range(3):
            api.photos.getInfo(photo_id="1")
        with pytest.raises(FlickrError, match="Status code 429") as err:
            api.photos.getInfo(photo_id="1")
        raw = _rest_post(server, method="flickr.photos.getInfo", photo_id="1", api_key="key")
        assert server.client("other").photos.getInfo(photo_id="1")["stat"] == "ok"  # own window
        image = requests.get(server.image_url(server.corpus.get("1")), timeout=5)
        limited = [r for r in server.calls() if r.fault == "rate_limit"]
    assert err.value.code is None
    assert raw.status_code == 429 and 59 <= int(raw.headers["Retry-After"]) <= 60
    assert image.status_code == 200
    assert [(r.consumer_key, r.http_status) for r in limited] == [("key", 429), ("key", 429)]


def test_rate_limit_window_slides():
    with _server(_photo("1"), rate_limit=(2, 0.3)) as server:
        api = server.client()
        api.photos.getInfo(photo_id="1")
        api.photos.getInfo(photo_id="1")
        with pytest.raises(FlickrError, match="429"):
            api.photos.getInfo(photo_id="1")
        time.sleep(0.35)
        assert api.photos.getInfo(photo_id="1")["stat"] == "ok"


def test_timeout_mode_makes_the_client_time_out_then_succeeds():
    with _server(_photo("1", fail_times=1, fail_mode="timeout"), timeout_sleep_s=1.0) as server:
        api = server.client(timeout=0.5)
        started = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout):
            api.photos.getInfo(photo_id="1")
        assert 0.5 <= time.monotonic() - started < 1.0
        assert api.photos.getInfo(photo_id="1")["photo"]["id"] == "1"
        _wait_for(lambda: server.count() == 2)  # the timed-out request is logged once answered
        faults = sorted((r.fault or "") for r in server.calls())
        duplicates = server.duplicate_successful_calls()
    assert faults == ["", "timeout"]
    assert duplicates == {}


def test_stop_does_not_wait_for_injected_sleeps():
    server = _server(_photo("1", fail_times=1, fail_mode="timeout"), timeout_sleep_s=30.0).start()
    with pytest.raises(requests.exceptions.Timeout):
        server.client(timeout=0.2).photos.getInfo(photo_id="1")
    image_url = server.image_url(server.corpus.get("1"))
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(image_url, timeout=1)


def test_slow_photo_and_global_delay():
    with _server(_photo("1", slow_s=0.3), _photo("2"), global_slow_s=0.1) as server:
        api = server.client()
        started = time.monotonic()
        api.photos.getInfo(photo_id="2")
        fast = time.monotonic() - started
        started = time.monotonic()
        api.photos.getInfo(photo_id="1")
        slow = time.monotonic() - started
    assert 0.1 <= fast < 0.3
    assert slow >= 0.4


def _search_corpus() -> list[FakePhoto]:
    photos = []
    for i in range(1, 26):
        tags = ["sky"] + (["Sea"] if i % 2 else []) + (["Storm Cloud"] if i % 3 == 0 else [])
        photos.append(FakePhoto(
            id=str(i), title=f"Photo {i}" + (" Sunset" if i % 5 == 0 else ""),
            description="at the HARBOUR" if i == 7 else "", tags=tags,
            date_uploaded=1_600_000_000 + i * 100, visibility="private" if i == 25 else "public",
        ))
    return photos


def test_search_filters_sorts_and_paginates():
    with _server(*_search_corpus()) as server:
        api = server.client()

        def ids(**params):
            photos = api.photos.search(per_page=500, **params)["photos"]
            assert photos["total"] == len(photos["photo"])
            return [int(p["id"]) for p in photos["photo"]]

        odd = [i for i in range(23, 0, -2)]
        assert ids(tags="sea") == odd  # newest first by default; private 25 left out
        assert ids(tags="SEA,stormcloud", tag_mode="all") == [i for i in odd if i % 3 == 0]
        assert ids(tags="sea,storm cloud") == [i for i in range(24, 0, -1) if i % 2 or i % 3 == 0]
        assert ids(text="sunset", sort="date-posted-asc") == [5, 10, 15, 20]
        assert ids(text="harbour") == [7]
        assert ids(text="storm") == [i for i in range(24, 0, -1) if i % 3 == 0]  # raw tag text
        window = {"min_upload_date": 1_600_000_300, "max_upload_date": 1_600_000_600}
        assert ids(tags="sky", **window) == [6, 5, 4, 3]  # both bounds inclusive
        # MySQL datetimes are read as UTC: 2020-09-13 12:30:00 is 1_600_000_200
        assert ids(min_upload_date="2020-09-13 12:30:00", max_upload_date=1_600_000_500) == [5, 4, 3, 2]

        pages = [api.photos.search(tags="sky", per_page=7, page=n)["photos"] for n in (1, 2, 3, 4, 5)]
        assert [(p["page"], p["pages"], p["perpage"], p["total"]) for p in pages[:4]] == [
            (n, 4, 7, 24) for n in (1, 2, 3, 4)]
        assert [len(p["photo"]) for p in pages] == [7, 7, 7, 3, 0]
        assert [int(p["id"]) for page in pages for p in page["photo"]] == list(range(24, 0, -1))
        first = pages[0]["photo"][0]
        assert first == {"id": "24", "owner": "10000001@N00", "secret": "0a1b2c3d4e", "server": "65535",
                         "farm": 66, "title": "Photo 24", "ispublic": 1, "isfriend": 0, "isfamily": 0}
        assert api.photos.search(tags="sky", per_page=9999)["photos"]["perpage"] == 500
        with pytest.raises(FlickrError) as err:
            api.photos.search(page=2)
    assert err.value.code == 3


def test_lazy_provider_serves_a_large_corpus_without_building_it():
    built = []

    def provider(photo_id: str) -> FakePhoto | None:
        if not photo_id.isdigit() or not 0 < int(photo_id) <= 20_000:
            return None
        built.append(photo_id)
        n = int(photo_id)
        return FakePhoto(id=photo_id, tags=["lucky"] if n % 1000 == 0 else ["plain"],
                         date_uploaded=1_500_000_000 + n)

    corpus = FakeCorpus(provider=provider, ids_for_search=[str(i) for i in range(1, 20_001)])
    with FakeFlickrServer(corpus, valid_keys=KEYS) as server:
        api = server.client()
        assert api.photos.getInfo(photo_id="12345")["photo"]["dateuploaded"] == "1500012345"
        assert built == ["12345"]
        with pytest.raises(FlickrError) as err:
            api.photos.getInfo(photo_id="20001")
        assert err.value.code == 1
        found = api.photos.search(tags="lucky", sort="date-posted-asc")["photos"]
        again = api.photos.search(tags="lucky", sort="date-posted-asc", page=2)["photos"]
    assert [p["id"] for p in found["photo"]] == [str(i * 1000) for i in range(1, 21)]
    assert (found["total"], again["total"], again["photo"]) == (20, 20, [])
    assert len(built) == 1 + 20_000 + 20  # one scan for the query (cached), then one page's photos


def test_call_log_counts_and_duplicates():
    with _server(_photo("1"), _photo("2")) as server:
        api = server.client("key")
        api.photos.getInfo(photo_id="1")
        api.photos.getInfo(photo_id="1")
        api.photos.getInfo(photo_id="2")
        api.photos.getSizes(photo_id="1")
        server.client("other").photos.search(tags="x")
        server.client("other").photos.search(tags="x")
        with pytest.raises(FlickrError):
            api.photos.getInfo(photo_id="3")
        assert server.count() == 7
        assert server.count("flickr.photos.getInfo") == 4
        assert [r.photo_id for r in server.calls("flickr.photos.getInfo")] == ["1", "1", "2", "3"]
        assert server.successful_calls_by_key()[("flickr.photos.getSizes", "1")] == 1
        assert server.duplicate_successful_calls() == {
            ("flickr.photos.getInfo", "1"): 2, ("flickr.photos.search", "tags=x"): 2}
        assert {r.consumer_key for r in server.calls()} == {"key", "other"}
        assert all(r.t <= s.t for r, s in zip(server.calls(), server.calls()[1:]))
        assert "secret" not in repr(server.calls())
        server.reset_log()
        assert server.count() == 0 and server.duplicate_successful_calls() == {}


def test_concurrent_clients():
    photos = [_photo(str(i)) for i in range(1, 11)]
    errors: list[BaseException] = []
    answered: list[str] = []

    def worker(n: int) -> None:
        api = server.client("key" if n % 2 else "other")
        try:
            for i in range(50):
                method = api.photos.getInfo if i % 2 else api.photos.getSizes
                reply = method(photo_id=str(1 + (n + i) % 10))
                answered.append(reply["stat"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with _server(*photos, global_slow_s=0.002) as server:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert answered == ["ok"] * 800
        assert server.count() == 800
        assert all(r.successful for r in server.calls())
        assert 2 <= server.max_concurrency_seen <= 16


def test_photo_validation_and_tag_normalisation():
    with pytest.raises(ValueError, match="fail_mode"):
        FakePhoto(id="1", fail_mode="explode")
    with pytest.raises(ValueError, match="visibility"):
        FakePhoto(id="1", visibility="friends")
    with pytest.raises(ValueError, match="size labels"):
        FakePhoto(id="1", sizes=["Huge"])
    with pytest.raises(ValueError, match="date_taken"):
        FakePhoto(id="1", date_taken="04/03/2019")
    assert normalise_tag("  Über-Cool Tag_2 ") == "übercooltag2"


def test_command_line_serves_a_photos_json(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8fake-jpeg")
    (tmp_path / "photos.json").write_text(json.dumps([
        {"id": "1", "title": "From file", "image_file": "a.jpg"},
        {"id": "2", "title": "Generated", "placeholder_image": True},
    ]))
    command = [sys.executable, "-m", "moodlake_dev.doubles.fake_flickr",
               "--photos-json", str(tmp_path / "photos.json"), "--key", "k", "--secret", "s"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            rest_url = proc.stdout.readline().strip()
            api = flickrapi.FlickrAPI("k", "s", format="parsed-json", store_token=False, timeout=5)
            api.REST_URL = rest_url
            assert api.photos.getInfo(photo_id="1")["photo"]["title"]["_content"] == "From file"
            sources = {s["label"]: s["source"] for s in api.photos.getSizes(photo_id="2")["sizes"]["size"]}
            assert requests.get(sources["Medium 640"], timeout=5).content == placeholder_jpeg(1)
            image = requests.get(sources["Medium 640"].replace("/2_", "/1_"), timeout=5).content
            assert image == b"\xff\xd8fake-jpeg"
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
