"""CMU-MultimodalSDK computational sequences (``.csd``, HDF5): read, check, write.

Layout (the SDK's, as in ../shared/data/cmu_mosi/CMU_MOSI_Opinion_Labels.csd)::

    /<root name>/                    one group per sequence (the SDK writes one a file), e.g. "COVAREP",
                                     "Opinion Segment Labels"
        data/<video id>/features     [n, d] numbers: one row per step (a frame, a word, a segment's labels)
        data/<video id>/intervals    [n, 2] start and end of each step, seconds
        metadata/<key>               each a 1-element string dataset holding JSON: "root name",
                                     "dimension names" (a list of d names), "dataset name", ...

Intervals are float32 in the SDK's files; they are read as float64 and features as float32.

What is wrong with one video (:class:`CsdFailure`, a row of ``moodlake.ingest_failures``, each with a
``reason_code``): ``not_a_group``, ``missing_dataset``, ``bad_shape``, ``not_numeric``, ``no_rows``,
``rows_mismatch`` (features and intervals disagree), ``dims_mismatch`` (other columns than the
sequence's), ``non_finite`` (NaN or infinite), ``interval_end_before_start``,
``intervals_out_of_order`` (a step starting before the one above it), ``unreadable`` (damaged
storage). What makes a whole file unusable (missing, not HDF5, truncated, no sequence, a sequence
without its ``data`` group) raises :class:`CsdError` naming the file.

Order: feature sequences are time series, so their steps must not go back in time. Label sequences
are checked with ``ordered=False``: a segment is addressed by its index, and the real CMU-MOSI labels
list segments out of time order in 2 of 93 videos (VbQk4H8hgr0: segment 45 starts at 66.6 s, after
one starting at 153.7 s; d6hH302o4v8: 3 such), which is how the corpus numbers them, not damage.
Overlapping and zero-length intervals are accepted (94 segments of CMU-MOSI overlap the one before
by a little; one lasts 0 s).

Plain Python (h5py, NumPy): runs on Spark executors and in tests without Spark.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

DATA, METADATA, FEATURES, INTERVALS = "data", "metadata", "features", "intervals"
FEATURES_ROLE, LABELS_ROLE = "features", "labels"


class CsdError(ValueError):
    """A computational-sequence file that cannot be read at all; the message names the file and why."""

    def __init__(self, path: str | Path, what: str):
        super().__init__(f"{path}: {what}")
        self.path, self.what = str(path), what


@dataclass(frozen=True)
class _Video:
    path: str
    sequence: str       # the root name: the modality (COVAREP, ...) or the labels' name
    video_id: str

    @property
    def input_ref(self) -> str:
        return input_ref(self.path, self.sequence, self.video_id)


@dataclass(frozen=True)
class VideoEntry(_Video):
    """A video as listed, before its data is read: enough to plan and count (rows from the shapes)."""

    rows: int          # rows of intervals (else of features; 0 when neither is a dataset)
    dims: int | None   # columns of features when it is a 2-D dataset


@dataclass(frozen=True)
class CsdRecord(_Video):
    """One video of one sequence, checked."""

    intervals: np.ndarray               # float64 [n, 2]
    features: np.ndarray                # float32 [n, d]
    feature_names: tuple[str, ...] | None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def dims(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class CsdFailure(_Video):
    """A video that cannot be used, and why."""

    reason_code: str
    reason: str
    rows: int = 0    # steps (segments) it held, as listed: what the counts lose with it


def input_ref(path: str, sequence: str, video_id: str) -> str:
    """Where a video is: ``<file>::<sequence>/<video id>`` (``ingest_failures.input_ref``)."""
    return f"{path}::{sequence}/{video_id}"


def _decode(value: Any) -> Any:
    """A metadata value: bytes/str holding JSON (the SDK's way) parsed, else the text; arrays as lists."""
    if isinstance(value, np.ndarray):
        items = [_decode(v) for v in value.reshape(-1)]
        return items[0] if len(items) == 1 else items
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_metadata(group: h5py.Group | None) -> dict[str, Any]:
    """The ``metadata`` group as a dict (datasets and attributes; values JSON-decoded)."""
    if group is None:
        return {}
    out: dict[str, Any] = {k: _decode(v) for k, v in group.attrs.items()}
    for key, obj in group.items():
        if isinstance(obj, h5py.Dataset):
            try:
                out[key] = _decode(obj[()])
            except (OSError, TypeError, ValueError) as e:  # an unreadable entry: say so, keep the rest
                out[key] = f"<unreadable: {type(e).__name__}>"
    return out


def dimension_names(metadata: Mapping[str, Any]) -> tuple[str, ...] | None:
    """``dimension names`` of the metadata when it is a list of names (one per feature column)."""
    names = metadata.get("dimension names")
    if isinstance(names, str):
        names = [names]
    if isinstance(names, list) and names and all(isinstance(n, (str, int, float)) for n in names):
        return tuple(str(n) for n in names)
    return None


class CsdFile:
    """An open ``.csd`` file: ``with CsdFile(path) as f: ...``. Opening checks the file as a whole."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._metadata: dict[str, dict[str, Any]] = {}
        p = Path(path)
        if not p.is_file():
            raise CsdError(path, "no such file" if not p.exists() else "not a regular file")
        if not h5py.is_hdf5(self.path):
            raise CsdError(path, "not an HDF5 file (a computational sequence .csd is HDF5)")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise CsdError(path, f"HDF5 file that cannot be opened ({e})") from None
        try:
            self.sequences = self._check()
        except Exception:
            self._h5.close()
            raise

    def _check(self) -> list[str]:
        roots = list(self._h5.keys())
        if not roots:
            raise CsdError(self.path, "no computational sequence in it (no top-level group)")
        for root in roots:
            g = self._h5[root]
            if not isinstance(g, h5py.Group):
                raise CsdError(self.path, f"top-level entry {root!r} is a dataset, not a sequence group")
            if DATA not in g:
                raise CsdError(self.path, f"sequence {root!r} has no '{DATA}' group")
            if not isinstance(g[DATA], h5py.Group):
                raise CsdError(self.path, f"'{root}/{DATA}' is a dataset, not a group of videos")
        return roots

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "CsdFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def metadata(self, sequence: str) -> dict[str, Any]:
        """The sequence's metadata (read once)."""
        if sequence not in self._metadata:
            md = self._h5[sequence].get(METADATA)
            self._metadata[sequence] = read_metadata(md if isinstance(md, h5py.Group) else None)
        return self._metadata[sequence]

    def videos(self, sequence: str) -> list[VideoEntry]:
        """Every video of ``sequence`` with its shapes, in the file's order (nothing read yet)."""
        try:
            return [VideoEntry(self.path, sequence, vid, *_shape(obj)) for vid, obj in self._h5[sequence][DATA].items()]
        except (OSError, KeyError, ValueError) as e:  # a damaged index of videos
            raise CsdError(self.path, f"the videos of {sequence!r} cannot be listed ({type(e).__name__}: {e})") from None

    def expected_dims(self, sequence: str) -> tuple[int | None, tuple[str, ...] | None]:
        """(feature columns every video of ``sequence`` must have, their names or None).

        The metadata's ``dimension names`` decide when at least one video has that many columns;
        otherwise (no names, or names that fit no video) the most common width among the videos.
        """
        names = dimension_names(self.metadata(sequence))
        widths = Counter(v.dims for v in self.videos(sequence) if v.dims is not None)
        if names is not None and widths.get(len(names)):
            return len(names), names
        return (widths.most_common(1)[0][0] if widths else None), None

    def read(self, sequence: str, video_id: str, *, ordered: bool = True, dims: int | None = None,
             names: tuple[str, ...] | None = None) -> CsdRecord | CsdFailure:
        """Video ``video_id`` of ``sequence``, checked: a record, or a failure with its reason."""
        entry = self._h5[sequence][DATA].get(video_id)
        listed = _shape(entry)[0]

        def fail(code: str, why: str) -> CsdFailure:
            return CsdFailure(self.path, sequence, video_id, code, f"video {video_id} of {sequence!r}: {why}", listed)

        if not isinstance(entry, h5py.Group):
            return fail("not_a_group", "is not a group holding 'features' and 'intervals'")
        arrays = {}
        for name in (FEATURES, INTERVALS):
            ds = entry.get(name)
            if not isinstance(ds, h5py.Dataset):
                return fail("missing_dataset", f"has no '{name}' dataset" if ds is None
                            else f"'{name}' is a group, not a dataset")
            if ds.dtype.kind not in "fiub":
                return fail("not_numeric", f"'{name}' holds {ds.dtype} values, not numbers")
            if ds.ndim != 2:
                return fail("bad_shape", f"'{name}' has shape {ds.shape}; expected 2 dimensions "
                                         f"({'[steps, 2]' if name == INTERVALS else '[steps, features]'})")
            arrays[name] = ds
        ft, iv = arrays[FEATURES], arrays[INTERVALS]
        if iv.shape[1] != 2:
            return fail("bad_shape", f"'intervals' has shape {iv.shape}; expected [steps, 2] (start, end)")
        if ft.shape[0] != iv.shape[0]:
            return fail("rows_mismatch", f"'features' has {ft.shape[0]} rows but 'intervals' {iv.shape[0]}")
        if iv.shape[0] == 0:
            return fail("no_rows", "has no steps (0 rows)")
        if ft.shape[1] == 0:
            return fail("bad_shape", "'features' has 0 columns")
        if dims is not None and ft.shape[1] != dims:
            return fail("dims_mismatch", f"'features' has {ft.shape[1]} columns; the sequence's videos have {dims}"
                        + (" (its dimension names)" if names else ""))
        try:
            features = np.asarray(ft[()], dtype=np.float32)
            intervals = np.asarray(iv[()], dtype=np.float64)
        except (OSError, ValueError) as e:  # damaged storage inside a file that opened
            return fail("unreadable", f"its data cannot be read ({type(e).__name__}: {e})")
        for name, a in ((INTERVALS, intervals), (FEATURES, features)):
            bad = ~np.isfinite(a)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                kinds = " and ".join(k for k, m in (("NaN", np.isnan(a)), ("infinite", np.isinf(a))) if m.any())
                return fail("non_finite", f"'{name}' holds {int(bad.sum())} {kinds} value(s), the first in row {row}")
        back = intervals[:, 1] < intervals[:, 0]
        if back.any():
            row = int(np.argmax(back))
            return fail("interval_end_before_start", f"interval {row} ends at {intervals[row, 1]:g} s, before it "
                                                     f"starts at {intervals[row, 0]:g} s ({int(back.sum())} such)")
        if ordered:
            down = np.diff(intervals[:, 0]) < 0
            if down.any():
                row = int(np.argmax(down)) + 1
                return fail("intervals_out_of_order", f"step {row} starts at {intervals[row, 0]:g} s, before step "
                                                      f"{row - 1} ({intervals[row - 1, 0]:g} s; {int(down.sum())} such)")
        return CsdRecord(self.path, sequence, video_id, intervals, features,
                         names if names and len(names) == features.shape[1] else None, self.metadata(sequence))



def _shape(obj) -> tuple[int, int | None]:
    """(rows, feature columns) of a video group from its datasets' shapes: rows of intervals (what a
    step is), else of features, else 0; columns when features is a 2-D dataset."""
    rows, dims = 0, None
    if isinstance(obj, h5py.Group):
        ft, iv = obj.get(FEATURES), obj.get(INTERVALS)
        for ds in (ft, iv):
            if isinstance(ds, h5py.Dataset) and ds.ndim >= 1:
                rows = int(ds.shape[0])
        if isinstance(ft, h5py.Dataset) and ft.ndim == 2:
            dims = int(ft.shape[1])
    return rows, dims


def read_csd(path: str | Path, *, ordered: bool = True) -> Iterator[CsdRecord | CsdFailure]:
    """Every video of every sequence of the file, in the file's order: records and failures.

    ``ordered``: whether steps must not go back in time (feature sequences; False for labels).
    Raises :class:`CsdError` when the file as a whole is unusable.
    """
    with CsdFile(path) as f:
        for seq in f.sequences:
            dims, names = f.expected_dims(seq)
            for v in f.videos(seq):
                yield f.read(seq, v.video_id, ordered=ordered, dims=dims, names=names)


def write_csd(path: str | Path, root: str, videos: Mapping[str, tuple[np.ndarray, np.ndarray]],
              metadata: Mapping[str, Any] | None = None) -> Path:
    """Write one computational sequence in the SDK's layout: ``videos`` maps a video id to
    (intervals [n, 2], features [n, d]); ``metadata`` values are stored as the SDK does, each a
    1-element string dataset holding its JSON (``root name`` is set to ``root``). Arrays are
    written as given (intervals float64, features float32 when they are floats), unchecked."""
    path = Path(path)
    md = {"root name": root, **(metadata or {})}
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        data = g.create_group(DATA)
        for vid, (intervals, features) in videos.items():
            v = data.create_group(vid)
            v.create_dataset(INTERVALS, data=_as_written(intervals, np.float64))
            v.create_dataset(FEATURES, data=_as_written(features, np.float32))
        m = g.create_group(METADATA)
        for key, value in md.items():
            m.create_dataset(key, (1,), dtype=h5py.string_dtype(), data=[json.dumps(value)])
    return path


def _as_written(a, float_type) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(float_type) if a.dtype.kind == "f" else a
