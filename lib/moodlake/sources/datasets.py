"""Research sets and exports on disk, each into the posts schema with its label set.

Layouts (see ../shared/data/README.md):

* ``vso-twitter``: ``partitionK/N.jpg`` (JPEG, PNG or GIF, all named .jpg) and
  ``partitionK/N_<hashtag>.txt`` (Instagram page metadata: HTML meta tags, caption, comments);
  ``groundTruthLabel.txt`` maps ``N.jpg`` to positive / negative. Partitions are the
  source's 5 cross-validation folds (``source_split``).
* ``emotion6``: ``images/<keyword>/N.jpg``; ``ground_truth.txt``: valence, arousal and the 7-way
  vote distribution per image. Label = folder keyword (label set ``ekman6``).
* ``goemotions``: ``<taxonomy>/{train,dev,test}.tsv`` (text, comma-separated label indices,
  comment id) and ``<taxonomy>/labels.txt``; taxonomy ``ekman`` (default) or ``original``.
* ``export``: a generic format for posts a user already has: one or more ``*.jsonl`` files
  whose lines are JSON objects (``id`` required; ``title``, ``description``, ``tags``,
  ``image`` (a path relative to the folder), ``owner``, ``taken_at``, ``uploaded_at``,
  ``split``, ``label``, ``labels``, ``label_dist``, ``label_agree``, ``label_disagree``,
  ``label_scores`` optional), images in the same folder tree. Paths may not leave the folder:
  an absolute image path, one with ``..``, or a link (image or ``*.jsonl``) that resolves outside
  it is refused (``unsafe_path``) and never read.

Work items are listed on the driver; files are read on the executors (so the folder must be
visible to them: a local path in local mode, a shared mount on a cluster).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from moodlake import content, records
from moodlake.ingest import ExecContext, Source, WorkItem


def _read_bytes(path: str | None) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, why not)."""
    if not path:
        return None, "no file"
    try:
        return Path(path).read_bytes(), None
    except FileNotFoundError:
        return None, "file not found"
    except OSError as e:
        return None, f"{type(e).__name__}: {e.strerror or e}"


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links followed, lies inside ``root`` (resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, ValueError, RuntimeError):  # a link loop, an embedded NUL
        return False


def _safe_image_path(root: Path, ref: str) -> tuple[str | None, str | None]:
    """(the absolute path of image ``ref`` inside the export folder ``root`` (resolved), None) or
    (None, why it is refused). Nothing is read."""
    if "\x00" in ref:
        return None, f"image path {ref[:200]!r} holds a NUL character"
    if ref.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", ref):
        return None, f"image path {ref[:200]!r} is absolute; it must be relative to the export folder"
    if ".." in re.split(r"[/\\]", ref):
        return None, f"image path {ref[:200]!r} goes up with '..'; it must stay inside the export folder"
    path = root / ref
    if not _inside(root, path):
        return None, f"image path {ref[:200]!r} is a link that resolves outside the export folder"
    return str(path), None


def _require_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: no such folder {p}")
    return p


# --------------------------------------------------------------------------- VSO Twitter

# Instagram pages write <meta property=".." content="..">, TwitPic pages <meta name=".." value="..">.
_META = re.compile(r'<meta\s+(?:property|name)="([^"]+)"\s+(?:content|value)="([^"]*)"', re.I)
_COMMENT = re.compile(r"Comment by:\s*\n(?P<user>[^\n]*)\nComment:\s*\n(?P<text>.*?)\nComment Time:\s*\n(?P<time>[^\n]*)", re.S)
_DATETIME = re.compile(r'datetime="([^"]+)"')


def parse_vso_text(text: str) -> dict:
    """The parts of a VSO tweet file (an Instagram or a TwitPic page): caption, owner, comments
    (HTML kept), post time."""
    meta = {k.lower(): html.unescape(v).strip() for k, v in _META.findall(text)}
    comments = [m.groupdict() for m in _COMMENT.finditer(text)]
    owner = None
    m = re.match(r"(.+?)'s photo on Instagram", meta.get("og:description", ""))
    if m:
        owner = m.group(1)
    elif meta.get("twitter:creator"):
        owner = meta["twitter:creator"].lstrip("@")
    elif comments:
        owner = comments[0]["user"].strip()
    posted = None
    if comments and owner and comments[0]["user"].strip() == owner:
        t = _DATETIME.search(comments[0]["time"])
        posted = t.group(1) if t else None
    return {
        "caption": meta.get("twitter:title") or meta.get("twitter:description") or meta.get("og:title") or None,
        "owner": owner,
        "comments": "\n".join(f"{c['user'].strip()}: {c['text'].strip()}" for c in comments) or None,
        "uploaded_at": posted,
        "page_url": meta.get("og:url") or meta.get("twitter:url"),
    }


@dataclass
class VsoTwitter(Source):
    path: str
    label_set: tuple[str, ...]
    name: str = "vso-twitter"
    label_set_name: str = "sentiment2"

    def describe(self) -> dict:
        return {"source": self.name, "path": self.path, "label_set": self.label_set_name}

    def work_items(self, ctx=None) -> Iterable[WorkItem]:
        root = _require_dir(self.path, "vso-twitter")
        labels = {}
        gt = root / "groundTruthLabel.txt"
        if gt.exists():
            for line in gt.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
                parts = line.split()
                if len(parts) >= 2:
                    labels[parts[0].rsplit(".", 1)[0]] = parts[1]
        for part in sorted(p for p in root.iterdir() if p.is_dir()):
            entries: dict[str, dict] = {}
            for f in sorted(part.iterdir()):
                stem = f.name.rsplit(".", 1)[0]
                if f.suffix.lower() == ".txt" and "_" in stem:
                    n, tag = stem.split("_", 1)
                    entries.setdefault(n, {})["text_path"] = str(f)
                    entries[n]["hashtag"] = tag
                elif f.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif"):
                    entries.setdefault(stem, {})["image_path"] = str(f)
            for n in sorted(entries, key=lambda s: (len(s), s)):
                e = entries[n]
                ref = f"{part.name}/{Path(e.get('image_path') or e['text_path']).name}"
                yield WorkItem(ref, n, {**e, "split": part.name, "label": labels.get(n)})

    def process(self, item: WorkItem, ctx: ExecContext):
        p = item.payload
        image, image_err = _read_bytes(p.get("image_path"))
        text_bytes, text_err = _read_bytes(p.get("text_path"))
        flags = []
        text, tflags = content.decode_text(text_bytes, "text") if text_bytes is not None else (None, ())
        flags.extend(tflags)
        parsed = parse_vso_text(text) if text else {}
        if text_err:
            flags.append("text:missing")
        if p.get("label") is None:
            flags.append("label:missing")
        row = records.post_row(
            source=self.name, source_id=item.source_id, source_split=p["split"],
            owner=parsed.get("owner"), title=parsed.get("caption"), description=parsed.get("comments"),
            tags=[p["hashtag"]] if p.get("hashtag") else [],
            image=image, image_source=p.get("image_path") and item.input_ref, image_error=image_err,
            **ctx.image_limits, uploaded_at=parsed.get("uploaded_at"),
            label_set_name=self.label_set_name, label_set=self.label_set, label=p.get("label"),
            flags=flags,
            raw={"format": "vso-twitter", "file": item.input_ref, "hashtag": p.get("hashtag"),
                 "label": p.get("label"), "text": text},
        )
        return [("post", row)]


# --------------------------------------------------------------------------- Emotion6

EMOTION6_DIST = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")


@dataclass
class Emotion6(Source):
    path: str
    label_set: tuple[str, ...]
    name: str = "emotion6"
    label_set_name: str = "ekman6"

    def describe(self) -> dict:
        return {"source": self.name, "path": self.path, "label_set": self.label_set_name}

    def work_items(self, ctx=None) -> Iterable[WorkItem]:
        root = _require_dir(self.path, "emotion6")
        truth: dict[str, dict] = {}
        gt = root / "ground_truth.txt"
        for i, line in enumerate(gt.read_text(encoding="utf-8", errors="replace").splitlines()[1:], start=2):
            parts = line.split("\t")
            if len(parts) != 10:
                yield WorkItem(f"ground_truth.txt:{i}", None, {"raw": line},
                               error=("parse", "malformed_line", f"expected 10 tab-separated fields, got {len(parts)}"))
                continue
            try:
                values = [float(x) for x in parts[1:]]
            except ValueError as e:
                yield WorkItem(f"ground_truth.txt:{i}", None, {"raw": line}, error=("parse", "malformed_line", str(e)))
                continue
            truth[parts[0].rsplit(".", 1)[0]] = {
                "valence": values[0], "arousal": values[1], "dist": dict(zip(EMOTION6_DIST, values[2:])), "line": i,
            }
        images = root / "images"
        seen = set()
        for f in sorted(images.glob("*/*")):
            if not f.is_file():
                continue
            sid = f"{f.parent.name}/{f.name.rsplit('.', 1)[0]}"
            seen.add(sid)
            yield WorkItem(f"images/{f.parent.name}/{f.name}", sid,
                           {"image_path": str(f), "folder": f.parent.name, "truth": truth.get(sid)})
        for sid, t in sorted(truth.items()):
            if sid not in seen:
                yield WorkItem(f"ground_truth.txt:{t['line']}", sid, {"raw": sid},
                               error=("read", "file_missing", f"ground truth lists images/{sid}.jpg, which is not there"))

    def process(self, item: WorkItem, ctx: ExecContext):
        p = item.payload
        image, err = _read_bytes(p["image_path"])
        t = p.get("truth")
        flags = [] if t else ["label:no_ground_truth"]
        row = records.post_row(
            source=self.name, source_id=item.source_id, image=image, image_source=item.input_ref, image_error=err,
            **ctx.image_limits,
            label_set_name=self.label_set_name, label_set=self.label_set, label=p["folder"],
            label_dist=t["dist"] if t else None,
            label_scores={"valence": t["valence"], "arousal": t["arousal"]} if t else None,
            flags=flags, raw={"format": "emotion6", "file": item.input_ref, "ground_truth": t},
        )
        return [("post", row)]


# --------------------------------------------------------------------------- GoEmotions


@dataclass
class GoEmotions(Source):
    path: str
    label_set: tuple[str, ...]
    taxonomy: str = "ekman"
    splits: tuple[str, ...] = ("train", "dev", "test")
    name: str = "goemotions"
    label_set_name: str = "ekman7"

    def describe(self) -> dict:
        return {"source": self.name, "path": self.path, "taxonomy": self.taxonomy, "splits": list(self.splits),
                "label_set": self.label_set_name}

    def work_items(self, ctx=None) -> Iterable[WorkItem]:
        root = _require_dir(Path(self.path) / self.taxonomy, f"goemotions taxonomy {self.taxonomy!r}")
        names = (root / "labels.txt").read_text(encoding="utf-8").split()
        for split in self.splits:
            f = root / f"{split}.tsv"
            if not f.exists():
                continue
            with f.open("rb") as fh:
                for i, raw in enumerate(fh, start=1):
                    ref = f"{self.taxonomy}/{split}.tsv:{i}"
                    line = raw.rstrip(b"\r\n")
                    parts = line.split(b"\t")
                    if len(parts) != 3 or not parts[2].strip():
                        yield WorkItem(ref, None, {"raw": line.decode("utf-8", "backslashreplace")},
                                       error=("parse", "malformed_line", f"expected text, labels, id; got {len(parts)} fields"))
                        continue
                    text, label_ids, cid = parts
                    try:
                        labels = [names[int(x)] for x in label_ids.decode().split(",") if x.strip()]
                    except (ValueError, IndexError):
                        yield WorkItem(ref, cid.decode("utf-8", "replace").strip(), {"raw": line.decode("utf-8", "backslashreplace")},
                                       error=("parse", "unknown_label", f"label indices {label_ids!r} not in labels.txt"))
                        continue
                    yield WorkItem(ref, cid.decode("utf-8", "replace").strip(),
                                   {"text": text.decode("utf-8", "surrogateescape"), "labels": labels, "split": split})

    def process(self, item: WorkItem, ctx: ExecContext):
        p = item.payload
        text = p["text"].encode("utf-8", "surrogateescape")
        labels = p["labels"]
        row = records.post_row(
            source=self.name, source_id=item.source_id, source_split=p["split"], description=text,
            label_set_name=self.label_set_name, label_set=self.label_set,
            label=labels[0] if len(labels) == 1 else None, labels=labels,
            raw={"format": f"goemotions/{self.taxonomy}", "line": item.input_ref, "text": p["text"], "labels": labels},
        )
        return [("post", row)]


# --------------------------------------------------------------------------- generic export

EXPORT_FIELDS = {"id", "title", "description", "tags", "image", "owner", "taken_at", "uploaded_at", "split",
                 "label", "labels", "label_dist", "label_agree", "label_disagree", "label_scores"}


@dataclass
class Export(Source):
    path: str
    label_set: tuple[str, ...] | None
    name: str = "export"
    label_set_name: str | None = None

    def describe(self) -> dict:
        return {"source": self.name, "path": self.path, "label_set": self.label_set_name}

    def work_items(self, ctx=None) -> Iterable[WorkItem]:
        root = _require_dir(self.path, "export").resolve()
        files = sorted(root.rglob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"export: no *.jsonl file under {root}")
        for f in files:
            rel = f.relative_to(root)
            if not _inside(root, f) or not f.is_file():
                yield WorkItem(str(rel), None, {"raw": str(rel)}, error=(
                    "read", "unsafe_path", f"{rel} is a link to something outside the export folder, or not a file; "
                    "not read"))
                continue
            with f.open("rb") as fh:
                for i, raw in enumerate(fh, start=1):
                    ref = f"{rel}:{i}"
                    line = raw.rstrip(b"\r\n")
                    if i == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                        line = line[3:]
                    if not line.strip():
                        yield WorkItem(ref, None, {"raw": ""}, error=("parse", "empty_line", "empty line"))
                        continue
                    flags = []
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError:
                        text = line.decode("cp1252", errors="replace")
                        flags.append("record:non_utf8")
                    try:
                        rec = json.loads(text)
                    except json.JSONDecodeError as e:
                        yield WorkItem(ref, None, {"raw": text}, error=("parse", "invalid_json", f"not valid JSON: {e}"))
                        continue
                    except RecursionError:
                        yield WorkItem(ref, None, {"raw": text}, error=("parse", "invalid_json", "JSON nested too deeply"))
                        continue
                    if not isinstance(rec, dict):
                        yield WorkItem(ref, None, {"raw": text}, error=("parse", "invalid_record", "a line must hold a JSON object"))
                        continue
                    sid = rec.get("id")
                    if sid is None or str(sid).strip() == "":
                        yield WorkItem(ref, None, {"raw": text}, error=("parse", "missing_id", "the record has no id"))
                        continue
                    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
                        yield WorkItem(ref, None, {"raw": text}, error=(
                            "parse", "invalid_id", f"the id must be a string or an integer, not {type(sid).__name__}"))
                        continue
                    if set(rec) - EXPORT_FIELDS:
                        flags.append("record:unknown_fields")
                    image, image_path = rec.get("image"), None
                    if isinstance(image, str) and image:
                        image_path, refused = _safe_image_path(root, image)
                        if refused:
                            yield WorkItem(ref, str(sid).strip(), {"raw": text},
                                           error=("read", "unsafe_path", refused + "; not read"))
                            continue
                    elif image not in (None, ""):
                        flags.append("image:invalid")
                    yield WorkItem(ref, str(sid).strip(), {
                        "record": rec, "flags": flags, "root": str(root), "image_path": image_path,
                    })

    def process(self, item: WorkItem, ctx: ExecContext):
        p = item.payload
        rec = p["record"]
        flags = list(p["flags"])
        image, err = (None, None)
        if p["image_path"]:
            # checked again where it is read: a link swapped in since the driver listed it
            if not _inside(Path(p["root"]), Path(p["image_path"])):
                return [self.failure_for(item, "read", "unsafe_path",
                                         f"image {rec.get('image')!r} now resolves outside the export folder; not read")]
            image, err = _read_bytes(p["image_path"])
        tags = rec.get("tags")
        if isinstance(tags, str):
            tags = [t for t in re.split(r"[,\s]+", tags)]
        elif tags is not None and not isinstance(tags, list):
            flags.append("tags:invalid")
            tags = None
        try:
            taken_at, uploaded_at = records.to_utc(rec.get("taken_at")), records.to_utc(rec.get("uploaded_at"))
        except (ValueError, TypeError, OverflowError):
            flags.append("dates:invalid")
            taken_at = uploaded_at = None
        ints = {}
        for k in ("label_agree", "label_disagree"):
            v = rec.get(k)
            ints[k] = v if isinstance(v, int) and not isinstance(v, bool) else None
            if v is not None and ints[k] is None:
                flags.append(f"{k}:invalid")
        maps = {}
        for k in ("label_dist", "label_scores"):
            v = rec.get(k)
            ok = isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
            maps[k] = v if ok else None
            if v is not None and not ok:
                flags.append(f"{k}:invalid")
        labels = rec.get("labels")
        if labels is not None and not isinstance(labels, list):
            flags.append("labels:invalid")
        row = records.post_row(
            source=self.name, source_id=item.source_id, source_split=_str(rec.get("split")),
            owner=_str(rec.get("owner")), title=_str(rec.get("title")), description=_str(rec.get("description")),
            tags=tags, image=image, image_source=rec.get("image") if isinstance(rec.get("image"), str) else None,
            image_error=err if p["image_path"] else None, **ctx.image_limits,
            taken_at=taken_at, uploaded_at=uploaded_at,
            label_set_name=self.label_set_name, label_set=self.label_set, label=_str(rec.get("label")),
            labels=[str(x) for x in labels] if isinstance(labels, list) else None,
            label_dist=maps["label_dist"], label_scores=maps["label_scores"], **ints,
            flags=flags, raw=rec,
        )
        return [("post", row)]


def _str(v) -> str | None:
    return None if v is None else v if isinstance(v, str) else json.dumps(v)


DATASETS = {"vso-twitter": VsoTwitter, "emotion6": Emotion6, "goemotions": GoEmotions, "export": Export}
DEFAULT_LABEL_SETS = {"vso-twitter": "sentiment2", "emotion6": "ekman6", "goemotions": "ekman7", "export": None}
DEFAULT_PATHS = {"vso-twitter": "vso_twitter", "emotion6": "emotion6", "goemotions": "goemotions"}


def dataset_source(dataset: str, path, cfg, label_set: str | None = None, **options) -> Source:
    """The Source for research set ``dataset`` at ``path`` (label set from config).

    ``options`` go to the source class, e.g. ``taxonomy``, ``splits`` or ``name`` (the posts' source,
    by default ``dataset``: a second folder of the same layout lands under a name of its own).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    ls_name = label_set or DEFAULT_LABEL_SETS[dataset]
    if dataset == "goemotions" and label_set is None and options.get("taxonomy") == "original":
        ls_name = "goemotions28"
    kwargs = dict(path=str(Path(path).resolve()), label_set=cfg.label_set(ls_name) if ls_name else None,
                  label_set_name=ls_name, **options)
    return DATASETS[dataset](**kwargs)
