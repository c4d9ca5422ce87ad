"""The ingest benchmark's baseline (lib/moodlake_dev/bench/ingest.py) is the fair one: plain flickrapi
doing the same per-photo work at MoodLake's concurrency, not a sequential loop. No Spark: the baseline
against the Flickr-compatible server in this process."""
from __future__ import annotations

import pytest

from moodlake.sources.synthetic import SyntheticSpec
from moodlake_dev.bench.ingest import KEY, SECRET, baseline, task_slots
from moodlake_dev.doubles.fake_flickr import FakeFlickrServer
from moodlake_dev.doubles.synthetic_flickr import photo_id, synthetic_corpus


def test_the_baseline_does_each_photos_work_once_with_its_threads_all_busy():
    corpus = synthetic_corpus(40, SyntheticSpec(labels=("negative", "positive"), seed=3), image_pool=4)
    with FakeFlickrServer(corpus, valid_keys={KEY: SECRET}, global_slow_s=0.05) as server:
        ids = [photo_id(i) for i in range(40)]
        result = baseline(server.rest_url, ids, threads=8)
        assert result["posts"] == 32 and result["threads"] == 8  # the first 8 warm the threads' clients
        assert server.count("flickr.photos.getInfo") == server.count("flickr.photos.getSizes") == 40
        assert server.count("image") == 40
        assert sum(v - 1 for v in server.duplicate_successful_calls().values()) == 0
        # the requests overlap as MoodLake's fetch threads do (a sequential loop would show 1)
        assert server.max_concurrency_seen >= 6, server.max_concurrency_seen


@pytest.mark.parametrize("master, slots", [("local[2]", 2), ("local", 1), ("local[16]", 16)])
def test_the_baseline_concurrency_follows_the_spark_master(master, slots):
    assert task_slots(master) == slots


def test_a_cluster_master_needs_the_baseline_concurrency_named():
    with pytest.raises(SystemExit, match="--baseline-threads"):
        task_slots("spark://host:7077")
