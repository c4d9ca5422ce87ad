"""write_split and the row-group layout, checked against real petastorm readers."""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
from petastorm import make_reader
from petastorm.codecs import CompressedImageCodec

from moodlake.data.petastorm_io import row_groups, split_row_counts, stored_schema, write_split
from moodlake.data.schema import JpegCodec, post_schema
from tests.data.conftest import IMAGES, JPEGS, K, make_posts, rows_of

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]


def _read_all(url: str, **kwargs) -> list:
    with make_reader(url, workers_count=1, shuffle_row_groups=False, **kwargs) as reader:
        return list(reader)


def test_write_split_round_trip_returns_every_row_once_with_its_content(posts_split):
    rows = _read_all(posts_split.url)
    assert len(rows) == len(posts_split.posts) == 480
    assert sorted(r.post_id for r in rows) == sorted(posts_split.posts)
    for r in rows:
        post = posts_split.posts[r.post_id]
        for name, dtype in (("text", np.int32), ("chars", np.int16), ("tags", np.int32), ("mask", np.bool_),
                            ("labels", np.float32), ("label_dist", np.float32)):
            assert getattr(r, name).dtype == dtype, name
            np.testing.assert_array_equal(getattr(r, name), np.asarray(post[name], dtype=dtype), err_msg=name)
        assert (r.label, r.char_len) == (post["label"], post["char_len"])
        if post["source_image"] is None:
            assert r.image is None
        else:
            source = IMAGES[post["source_image"]].astype(int)
            assert r.image.shape == (224, 224, 3) and r.image.dtype == np.uint8
            diff = np.abs(r.image.astype(int) - source)
            assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12  # JPEG quality 90


def test_jpeg_bytes_are_stored_unchanged_under_petastorms_own_codec(posts_split):
    stored = stored_schema(posts_split.url)
    assert type(stored.fields["image"].codec) is CompressedImageCodec  # readers' unpickler loads petastorm classes only
    assert type(post_schema(K).fields["image"].codec) is JpegCodec
    path = posts_split.url.removeprefix("file://")
    table = pq.ParquetDataset(path).read(columns=["post_id", "image"]).to_pydict()
    stored_bytes = dict(zip(table["post_id"], table["image"]))
    for post_id, post in posts_split.posts.items():
        assert stored_bytes[post_id] == (None if post["source_image"] is None else JPEGS[post["source_image"]])


def test_row_groups_are_listed_in_petastorms_order_with_their_rows(posts_split):
    groups = row_groups(posts_split.url)
    assert sum(g.num_rows for g in groups) == 480
    assert len(groups) >= 12 and max(g.num_rows for g in groups) <= 40  # max_rows_per_file=40
    assert [g.index for g in groups] == list(range(len(groups)))
    assert [(g.path, g.row_group) for g in groups] == sorted((g.path, g.row_group) for g in groups)


def test_row_groups_of_large_images_hold_about_one_megabyte(spark, tmp_path):
    # JPEGs of noise are ~100 kB: 60 rows make ~6 MB, which must not stay one row group
    noise = np.random.default_rng(0).integers(0, 256, (60, 224, 224, 3), dtype=np.uint8)
    rows = rows_of(make_posts(60, seed=2, prefix="n"))
    for row, pixels in zip(rows, noise):
        row["image"], row["mask"] = pixels, [True, *row["mask"][1:]]
    url = write_split(spark, rows, tmp_path / "noise", post_schema(K))
    sizes = [pq.ParquetFile(g.path).metadata.row_group(g.row_group).total_byte_size for g in row_groups(url)]
    assert len(sizes) >= 4 and max(sizes) <= 1.3 * 2**20, [round(s / 2**20, 2) for s in sizes]
    assert len(_read_all(url)) == 60


@pytest.mark.parametrize("shard_count", [1, 2, 3])
def test_split_row_counts_are_what_make_reader_reads(posts_split, uneven_split, shard_count):
    for split in (posts_split, uneven_split):
        counts = split_row_counts(split.url, shard_count)
        read = [len(_read_all(split.url, cur_shard=s, shard_count=shard_count)) for s in range(shard_count)]
        assert counts == read
        assert sum(counts) == len(split.posts)


def test_uneven_split_has_the_row_groups_its_partitions_imply(uneven_split):
    # partitions of 150, 30 and 5 rows, at most 100 rows per file -> files of 100, 50, 30 and 5 rows
    assert [g.num_rows for g in row_groups(uneven_split.url)] == [100, 50, 30, 5]
    assert split_row_counts(uneven_split.url, 2) == [130, 55]
    assert split_row_counts(uneven_split.url, 3) == [105, 50, 30]


def test_write_split_overwrites_and_refuses_bad_rows(spark, tmp_path):
    rows = rows_of(make_posts(12, seed=9, prefix="w"))
    url = write_split(spark, rows, tmp_path / "split", post_schema(K))
    assert url.startswith("file://")
    url = write_split(spark, rows[:5], url, post_schema(K))
    assert sorted(r.post_id for r in _read_all(url)) == [f"w{i:05d}" for i in range(5)]
    with pytest.raises(ValueError, match=r"missing \['tags'\]"):
        write_split(spark, [{k: v for k, v in rows[0].items() if k != "tags"}], tmp_path / "bad", post_schema(K))
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        write_split(spark, [{**rows[0], "extra": 1}], tmp_path / "bad", post_schema(K))
    with pytest.raises(ValueError, match="not a JPEG"):
        write_split(spark, [{**rows[0], "image": b"GIF89a..."}], tmp_path / "bad", post_schema(K))
    with pytest.raises(ValueError, match="no rows"):
        write_split(spark, [], tmp_path / "bad", post_schema(K))


def test_a_missing_dataset_is_named():
    with pytest.raises(FileNotFoundError, match="no dataset at file:///nonexistent/split"):
        split_row_counts("/nonexistent/split", 2)
