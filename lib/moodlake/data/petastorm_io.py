"""Writing Petastorm datasets and reading their row-group layout.

:func:`write_split` materialises one split (train, val or test) of posts with the Unischema of
:func:`moodlake.data.schema.post_schema`. :func:`row_groups` lists the split's Parquet row groups
in the order ``petastorm.make_reader`` enumerates them, and :func:`split_row_counts` gives the rows
each reader shard will read, so that a DDP job can size its epoch before it reads anything.

Row-group sizing. Petastorm shards a dataset by row group (row group ``i`` goes to shard
``i % shard_count``), so shards differ by up to a row group, which the data layer evens out (smaller
batches, or rows left out of an epoch with ``drop_last``). Row groups are therefore kept small:
``row_group_size_mb=1`` (about 40-60 posts with a 224-px photo JPEG of 15-25 kB) and at most
``max_rows_per_file=128`` rows per Parquet file (Spark's ``maxRecordsPerFile``; a file holds at
least one row group), which bounds the row groups of posts without images or with small JPEGs,
whose 1 MB would otherwise hold hundreds or thousands of rows. A split of 3,000 posts with photos
then has some 60 row groups, and a text-only one at least 24. Reading cost hardly changes: a
worker reads one whole row group per request either way.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from petastorm.codecs import NdarrayCodec
from petastorm.etl.dataset_metadata import get_schema_from_dataset_url, load_row_groups, materialize_dataset
from petastorm.fs_utils import get_filesystem_and_path_or_paths
from petastorm.unischema import Unischema, dict_to_spark_row

from moodlake import safe_pickle
from moodlake.data import remote_fs

safe_pickle.install()  # stored schemas are unpickled as data only, never code (moodlake.safe_pickle)

ROW_GROUP_SIZE_MB = 1
MAX_ROWS_PER_FILE = 128
# parquet-mr 1.15 first compares a row group's size with its limit after this many rows (default
# 100, i.e. 2-10 MB of posts with images): checking from the 4th row lets 1 MB row groups happen.
# (petastorm sets the older key names, parquet.block.size.row.check.min, which 1.15 ignores.)
_ROW_CHECK_KEY, _ROW_CHECK_MIN = "parquet.page.size.row.check.min", 4


def dataset_url(url_or_path: str | Path) -> str:
    """A URL petastorm understands: local paths become absolute ``file://`` URLs (raw, as Hadoop
    writes them: a space stays a space), URLs stay (:func:`moodlake.storage.spark_url`)."""
    from moodlake.storage import spark_url

    return spark_url(url_or_path)


def _encodable(schema: Unischema, row: Mapping[str, Any]) -> dict:
    """``row`` with array fields as numpy arrays of the schema's dtype; raises on missing or unknown keys."""
    missing, unknown = set(schema.fields) - set(row), set(row) - set(schema.fields)
    if missing or unknown:
        raise ValueError(f"row {row.get('post_id')!r} does not match the schema {schema._name}: "
                         f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    out = dict(row)
    for name, field in schema.fields.items():
        if isinstance(field.codec, NdarrayCodec):
            out[name] = np.asarray(row[name], dtype=field.numpy_dtype)
    return out


def storage_schema(schema: Unischema) -> Unischema:
    """``schema`` with every codec of a class defined outside petastorm (e.g. ``JpegCodec``) replaced by
    its nearest petastorm base class with the same settings.

    Readers load the stored schema with :mod:`moodlake.safe_pickle`'s unpickler, which refuses classes
    from other packages; the subclasses of MoodLake only change encoding (``JpegCodec`` stores
    JPEG bytes unchanged), so the stored base class decodes the same bytes identically.
    """
    fields = []
    for field in schema.fields.values():
        codec = field.codec
        if codec is not None and not type(codec).__module__.startswith("petastorm."):
            base = next(c for c in type(codec).__mro__ if c.__module__.startswith("petastorm."))
            stored = base.__new__(base)
            stored.__dict__.update(codec.__dict__)
            field = field._replace(codec=stored)
        fields.append(field)
    return Unischema(schema._name, fields)


def write_split(spark, rows: Iterable[Mapping[str, Any]], url: str | Path, schema: Unischema, *,
                row_group_size_mb: int = ROW_GROUP_SIZE_MB, max_rows_per_file: int = MAX_ROWS_PER_FILE) -> str:
    """Write ``rows`` as a Petastorm dataset at ``url`` (a path or URL), replacing what is there.

    ``rows``: an RDD or a list of dicts with exactly the schema's field names; array fields as
    numpy arrays or lists (cast to the field's dtype), ``image`` as JPEG bytes (stored unchanged),
    a uint8 array (encoded) or None. Rows are encoded with ``schema``'s codecs and the dataset
    stores :func:`storage_schema` of it. Returns the dataset's URL. See the module docstring for
    the row-group sizes.
    """
    url = dataset_url(url)
    if hasattr(rows, "mapPartitions"):  # an RDD: checked on the executors
        encoded = rows.map(lambda row: dict_to_spark_row(schema, _encodable(schema, row)))
    else:  # a list: encoded here, so that a bad row fails with its own error
        spark_rows = [dict_to_spark_row(schema, _encodable(schema, row)) for row in rows]
        if not spark_rows:
            raise ValueError(f"no rows to write to {url}")
        encoded = spark.sparkContext.parallelize(spark_rows, max(1, min(len(spark_rows),
                                                                          spark.sparkContext.defaultParallelism)))
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    before = hadoop.get(_ROW_CHECK_KEY)
    hadoop.setInt(_ROW_CHECK_KEY, _ROW_CHECK_MIN)
    try:
        with materialize_dataset(spark, url, storage_schema(schema), row_group_size_mb,
                                 filesystem_factory=remote_fs.factory(url)):
            (spark.createDataFrame(encoded, schema.as_spark_schema())
             .write.mode("overwrite").option("maxRecordsPerFile", max_rows_per_file).parquet(url))
    finally:
        if before is None:
            hadoop.unset(_ROW_CHECK_KEY)
        else:
            hadoop.set(_ROW_CHECK_KEY, before)
    return url


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of a split; ``index`` is petastorm's, so the group is read by shard
    ``index % shard_count``."""

    index: int
    path: str
    row_group: int
    num_rows: int


def _filesystem(url: str | Path):
    """(petastorm's filesystem, path) of the dataset at ``url``; FileNotFoundError if nothing is there."""
    url = dataset_url(url)
    filesystem, path = get_filesystem_and_path_or_paths(url, filesystem=remote_fs.for_url(url))
    if not filesystem.exists(path):
        raise FileNotFoundError(f"no dataset at {url}")
    return filesystem, path


def _open(url: str | Path):
    """(filesystem, the split's ParquetDataset opened as ``make_reader`` opens it)."""
    import pyarrow.parquet as pq

    filesystem, path = _filesystem(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyarrow 14's legacy ParquetDataset, which petastorm needs
        return filesystem, pq.ParquetDataset(path, filesystem=filesystem, validate_schema=False)


def row_groups(url: str | Path) -> list[RowGroup]:
    """The split's row groups in the order ``make_reader`` enumerates them (its own
    ``load_row_groups``), with their row counts from the Parquet footers."""
    import pyarrow.parquet as pq

    filesystem, dataset = _open(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pieces = load_row_groups(dataset)
    footers: dict[str, Any] = {}
    groups = []
    for index, piece in enumerate(pieces):
        if piece.path not in footers:
            with filesystem.open(piece.path, "rb") as f:
                footers[piece.path] = pq.ParquetFile(f).metadata
        groups.append(RowGroup(index, piece.path, piece.row_group,
                               footers[piece.path].row_group(piece.row_group).num_rows))
    if not groups:
        raise ValueError(f"the dataset at {dataset_url(url)} has no row groups")
    return groups


def split_row_counts(url: str | Path, shard_count: int) -> list[int]:
    """Rows that ``make_reader(url, cur_shard=s, shard_count=shard_count)`` reads, for each shard ``s``."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be >= 1, not {shard_count}")
    counts = [0] * shard_count
    for group in row_groups(url):
        counts[group.index % shard_count] += group.num_rows
    return counts


def read_columns(url: str | Path, groups: Sequence[RowGroup], columns: Sequence[str]) -> list[dict[str, list]]:
    """Plain (undecoded) ``columns`` of each of ``groups``, e.g. ``post_id`` and ``char_len``."""
    import pyarrow.parquet as pq

    filesystem, _ = _open(url)
    tables: dict[tuple[str, int], dict] = {}
    for path in dict.fromkeys(g.path for g in groups):
        with filesystem.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            for i in range(parquet.num_row_groups):
                tables[path, i] = parquet.read_row_group(i, columns=list(columns)).to_pydict()
    return [tables[g.path, g.row_group] for g in groups]


def stored_schema(url: str | Path) -> Unischema:
    """The Unischema stored with the dataset at ``url``."""
    _filesystem(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_schema_from_dataset_url(dataset_url(url), filesystem=remote_fs.for_url(url))
