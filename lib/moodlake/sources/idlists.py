"""Lists of Flickr photo ids, optionally with labels or votes, in the formats research sets use.

* ``plain``: one photo id per line (``#`` comments and blank lines are not records).
* ``csv``: comma- or tab-separated; with a header naming ``photo_id`` (or ``id``) and optionally
  ``label``, ``agree``, ``disagree``; without one, the first column is the id, the second the
  label. VSO / Sentibank and cross-sentiment id lists exported as text take this form.
* ``fi``: the FI (You et al., AAAI 2016) AMT result files ``agg/<emotion>_N.csv``: lines
  ``emotion,image_url,disagree_votes,agree_votes``; the photo id is the number that starts the
  Flickr image file name (``.../8460/7924423716_dc9c8bbd3b.jpg``).
* ``mat``: ``finalDataset.mat`` of the cross-modal sentiment set (Katsurai & Satoh, ICASSP 2016):
  ``DATA.dataset`` photo ids, ``DATA.ground_truth`` 1 / 0 / -1.

Each line becomes a :class:`WorkItem`; a line that holds no valid id becomes one with an
``error``, so that it lands in ``ingest_failures`` rather than disappearing.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator

from moodlake.ingest import WorkItem

_ID = re.compile(r"^\d{1,20}$")
_FLICKR_FILE = re.compile(r"/(\d+)_[0-9a-f]+(?:_[a-z0-9])?\.(?:jpe?g|png|gif)$", re.I)
MAT_LABELS = {1: "positive", 0: "neutral", -1: "negative"}
DEFAULT_LABEL_SETS = {"fi": "mikels8", "mat": "sentiment3"}


def detect_format(path: Path) -> str:
    if path.suffix.lower() == ".mat":
        return "mat"
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            fields = re.split(r"[,\t]", line)
            if len(fields) == 4 and fields[1].lower().startswith("http"):
                return "fi"
            return "csv" if len(fields) > 1 else "plain"
    return "plain"


def _item(ref: str, pid: str | None, raw: str, **payload) -> WorkItem:
    pid = (pid or "").strip()
    if not _ID.match(pid):
        return WorkItem(ref, None, {"raw": raw}, error=("parse", "invalid_id", f"not a Flickr photo id: {pid[:60]!r}"))
    return WorkItem(ref, pid, {"raw": raw, **payload})


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.strip() and not line.lstrip().startswith("#"):
                yield i, line


def read_plain(path: Path) -> Iterator[WorkItem]:
    for i, line in _lines(path):
        yield _item(f"{path.name}:{i}", line.strip(), line)


def read_csv(path: Path) -> Iterator[WorkItem]:
    lines = list(_lines(path))
    if not lines:
        return
    delim = "\t" if "\t" in lines[0][1] else ","
    first = next(csv.reader(io.StringIO(lines[0][1]), delimiter=delim))
    header = [h.strip().lower() for h in first]
    has_header = not _ID.match(first[0].strip())
    cols = {"id": 0, "label": 1}
    if has_header:
        id_col = next((header.index(n) for n in ("photo_id", "id", "photoid") if n in header), None)
        if id_col is None:
            raise ValueError(f"{path}: the header names no photo_id column: {first}")
        cols = {"id": id_col, **{n: header.index(n) for n in ("label", "agree", "disagree") if n in header}}
        lines = lines[1:]
    for i, line in lines:
        row = next(csv.reader(io.StringIO(line), delimiter=delim), [])
        get = lambda name: row[cols[name]].strip() if name in cols and cols[name] < len(row) else None  # noqa: E731
        payload = {"label": get("label") or None}
        for n in ("agree", "disagree"):
            v = get(n)
            payload[n] = int(v) if v and v.lstrip("-").isdigit() else None
        yield _item(f"{path.name}:{i}", get("id"), line, **payload)


def read_fi(path: Path) -> Iterator[WorkItem]:
    for i, line in _lines(path):
        parts = [p.strip() for p in line.split(",")]
        ref = f"{path.name}:{i}"
        if len(parts) != 4:
            yield WorkItem(ref, None, {"raw": line}, error=("parse", "malformed_line", "expected emotion,url,disagree,agree"))
            continue
        emotion, url, disagree, agree = parts
        m = _FLICKR_FILE.search(url)
        if not (disagree.isdigit() and agree.isdigit()):
            yield WorkItem(ref, None, {"raw": line}, error=("parse", "malformed_line", "vote counts are not integers"))
            continue
        yield _item(ref, m.group(1) if m else url, line, label=emotion.lower(),
                    agree=int(agree), disagree=int(disagree), url=url)


def read_mat(path: Path) -> Iterator[WorkItem]:
    import numpy as np
    import scipy.io

    data = scipy.io.loadmat(str(path))["DATA"][0, 0]
    ids = np.asarray(data["dataset"]).ravel()
    truth = np.asarray(data["ground_truth"]).ravel()
    if len(ids) != len(truth):
        raise ValueError(f"{path}: {len(ids)} ids but {len(truth)} labels")
    for i, (pid, y) in enumerate(zip(ids, truth), start=1):
        pid_s = str(int(pid)) if float(pid).is_integer() else repr(pid)
        yield _item(f"{path.name}:DATA.dataset[{i}]", pid_s, f"{pid_s},{int(y)}", label=MAT_LABELS.get(int(y), str(int(y))))


READERS = {"plain": read_plain, "csv": read_csv, "fi": read_fi, "mat": read_mat}


def read_id_list(path: str | Path, fmt: str = "auto") -> tuple[str, Iterator[WorkItem]]:
    """(format, items) of an id list file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such id list: {p}")
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ValueError(f"unknown id list format {fmt!r}; known: {', '.join(READERS)}")
    return fmt, READERS[fmt](p)
