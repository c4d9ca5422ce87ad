"""The one inference path: a registered model, the rows it reads, and the probabilities it gives.

Evaluation (:mod:`moodlake.evaluation.job`, over a dataset's Petastorm split) and nightly scoring
(:mod:`moodlake.scoring`, over rows of ``moodlake.post_features`` inside Spark) both go through
:class:`Predictor`:

- rows become model inputs through the functions training uses: :func:`moodlake.data.build.to_record`
  (the registered vocabulary: word, tag and character ids, the modality mask) and
  :func:`moodlake.data.loader.collate` (the centre image as stored, normalised with the model's
  preprocessing; no augmentation). A feature row's JPEG is decoded by the same codec the
  Petastorm reader uses, so both paths see the same pixels;
- :meth:`Predictor.predict` runs one forward pass and returns the routed probabilities (each post
  scored by the head of exactly its usable modalities for the multitask model), which rows the
  model can score, the head each row used and, for the multitask model, every head's probabilities.

A feature row that cannot become an input (no usable modality; an image that the features mark usable
but that no longer decodes) is returned by :meth:`Predictor.records` as a :class:`Rejected` with a reason instead of stopping the batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from moodlake.data.schema import IMAGE_SIZE, MODALITIES


@dataclass(frozen=True)
class Rejected:
    post_id: str
    reason_code: str
    reason: str


@dataclass
class BatchPrediction:
    post_ids: list[str]
    probs: np.ndarray                 # [B, K] float32, routed
    usable: np.ndarray                # [B] bool: rows the model scored (others are meaningless)
    head: list[str | None]            # the head / modality each usable row was scored by
    heads: dict[str, np.ndarray] = field(default_factory=dict)  # multitask: every head's probabilities


_SINGLE_INPUT = {"image": "image", "chars": "text"}


class _Registered:
    """What a loaded registered model's ``config`` (config.json) says of it."""

    config: dict

    @property
    def version(self) -> str:
        return self.config["version"]

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])


class Predictor(_Registered):
    """A registered model ready for inference, with its vocabulary and preprocessing."""

    def __init__(self, model: torch.nn.Module, config: Mapping[str, Any], vocab, device: str = "cpu",
                 autocast_bf16: bool = False):
        from moodlake.data.loader import _preprocessing
        from moodlake.train.adapters import adapter_for

        self.model, self.config, self.vocab, self.device = model.eval(), dict(config), vocab, torch.device(device)
        self.adapter = adapter_for(self.config["model"])
        self.adapter.preprocessing = self.config.get("preprocessing", self.adapter.preprocessing)
        self.mean, self.std = _preprocessing(self.adapter.preprocessing)
        self.ten_crop = self.config["model"] == "campos_alexnet"
        self.autocast = autocast_bf16 and self.device.type == "cuda"
        self._codec = None

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", autocast_bf16: bool = False) -> "Predictor":
        """The model registered in ``folder`` (``model.safetensors``, ``config.json``, ``vocab.json``)."""
        from moodlake.data.vocab import Vocab
        from moodlake.train.registry import load_registered

        from moodlake import storage

        model, config = load_registered(folder, device=device)  # folder: a path or a filesystem URI
        return cls(model, config, Vocab.from_json(storage.read_text(storage.join(folder, "vocab.json"))), device,
                   autocast_bf16)

    @property
    def multi_label(self) -> bool:
        return bool(self.config.get("multi_label"))

    # ------------------------------------------------------------------ feature rows -> records
    def _decode(self, jpeg: bytes) -> np.ndarray | None:
        """The stored JPEG as the Petastorm reader decodes it (RGB uint8), or None."""
        from moodlake.data.schema import JpegCodec, post_schema

        if self._codec is None:
            self._codec = (JpegCodec(), post_schema(len(self.labels)).fields["image"])
        codec, image_field = self._codec
        try:
            image = codec.decode(image_field, bytes(jpeg))
        except Exception:  # noqa: BLE001 - OpenCV raises several kinds on broken data
            return None
        return image if image is not None and image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) else None

    def records(self, rows: Iterable[Mapping[str, Any]]) -> tuple[list[SimpleNamespace], list[Rejected]]:
        """Model-ready records (the dataset's fields as attributes, the image decoded) of feature rows
        (columns of ``moodlake.post_features``: post_id, text, text_words, tags, image, has_image,
        has_text, has_tags), and the rows rejected with their reason."""
        from moodlake.data.build import to_record

        k = len(self.labels)
        target = {"label_index": -1, "multi_hot": [0.0] * k, "dist": [0.0] * k}
        out, rejected = [], []
        for row in rows:
            row = {**row, **target}
            for key in ("has_image", "has_text", "has_tags"):
                row[key] = bool(row.get(key))
            for key in ("text_words", "tags"):  # numpy arrays when the rows come through pandas
                row[key] = [] if row.get(key) is None else list(row[key])
            if isinstance(row.get("text"), float):  # pandas' NaN for a missing text
                row["text"] = None
            image = None
            if row["has_image"]:
                image = self._decode(row["image"]) if row.get("image") is not None else None
                if image is None:
                    # the features say the post has an image and it cannot be read: scoring it as a post
                    # without one would silently use another head; it fails until its features are redone
                    rejected.append(Rejected(row["post_id"], "image_undecodable",
                                             "has_image is set but the stored image is missing" if row.get("image") is None
                                             else "the stored image does not decode as a 224x224 RGB JPEG"))
                    continue
            rec = to_record(row, self.vocab)
            rec["image"] = image
            if not rec["mask"].any():
                rejected.append(Rejected(row["post_id"], "no_usable_modality",
                                         "no usable image, no text words and no tags"))
                continue
            out.append(SimpleNamespace(**rec))
        return out, rejected

    def collate(self, records: Sequence) -> dict:
        from moodlake.data.loader import collate

        return collate(records, self.mean, self.std, ten_crop_views=self.ten_crop)

    # ------------------------------------------------------------------ batches -> probabilities
    def head_names(self, mask: torch.Tensor, usable: torch.Tensor) -> list[str | None]:
        """The classifier each usable row went to: its modalities (multitask) or the model's input."""
        if self.adapter.input_key is None:
            return ["+".join(m for m, present in zip(MODALITIES, row) if present) if ok else None
                    for row, ok in zip(mask.tolist(), usable.tolist())]
        name = "image+text" if self.config["model"] == "stpierre_fused" else _SINGLE_INPUT[self.adapter.input_key]
        return [name if ok else None for ok in usable.tolist()]

    def predict(self, batch: Mapping[str, Any]) -> BatchPrediction:
        """One forward pass over a batch of :meth:`collate` or of a dataset loader."""
        from moodlake.train.adapters import MultitaskAdapter

        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        heads: dict[str, np.ndarray] = {}
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            if "views" in batch:  # Campos: test-time oversampling over 10 crops and flips
                probs, rows = self.model.predict_oversampled(batch["views"]), self.adapter.rows(batch)
            else:
                if isinstance(self.adapter, MultitaskAdapter) and not batch["mask"].any(1).all():
                    raise ValueError("a row without any usable modality reached the multitask model")
                outputs = self.adapter.forward(self.model, batch)
                probs, rows = self.adapter.probabilities(self.model, outputs, batch)
                if isinstance(self.adapter, MultitaskAdapter):
                    heads = {h: p.float().cpu().numpy() for h, p in
                             self.adapter.head_probabilities(self.model, outputs).items()}
        mask = batch["mask"].cpu()
        usable = rows.cpu()
        return BatchPrediction(list(batch["post_id"]), probs.float().cpu().numpy(), usable.numpy().astype(bool),
                               self.head_names(mask, usable), heads)

    def predict_rows(self, rows: Iterable[Mapping[str, Any]], batch_size: int = 64,
                     text_batch_size: int | None = None) -> tuple[list[BatchPrediction], list[Rejected]]:
        """Feature rows -> predictions in batches of ``batch_size``, and the rejected rows.

        With ``text_batch_size``, the posts that have a usable image go in batches of ``batch_size``
        and the others (text and tags only: the image extractor does not run for them, so a forward
        pass costs a fraction of an image post's) in batches of ``text_batch_size``. Each post's
        probabilities do not depend on the batch it is in."""
        records, rejected = self.records(rows)
        if text_batch_size is None:
            groups = [(records, batch_size)]
        else:
            image = MODALITIES.index("image")
            groups = [([r for r in records if r.mask[image]], batch_size),
                      ([r for r in records if not r.mask[image]], text_batch_size)]
        preds = [self.predict(self.collate(group[i:i + size]))
                 for group, size in groups for i in range(0, len(group), size)]
        return preds, rejected


class SegmentPredictor(_Registered):
    """A registered model of video segments (``task: intensity``, the Williams BLSTM) ready for
    inference: aligned segments (rows with the segment dataset's fields: segment_id, video_id, audio,
    visual, text [maxlen, d], length) become batches through
    :func:`moodlake.data.loader.collate_segments`, the function training reads them with, and
    :meth:`predict` gives one intensity in [0, 3] per emotion. Evaluation and segment scoring both
    use it."""

    def __init__(self, model: torch.nn.Module, config: Mapping[str, Any], device: str = "cpu"):
        from moodlake.train.adapters import adapter_for

        self.model, self.config, self.device = model.eval(), dict(config), torch.device(device)
        self.adapter = adapter_for(self.config["model"])
        if self.adapter.task != "intensity":
            raise ValueError(f"model {self.config.get('version')} ({self.config['model']}) does not score video "
                             "segments; use Predictor")

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> "SegmentPredictor":
        """The model registered in ``folder`` (``model.safetensors``, ``config.json``)."""
        from moodlake.train.registry import load_registered

        model, config = load_registered(folder, device=device)
        return cls(model, config, device)

    @property
    def maxlen(self) -> int:
        return int(self.config["build_kwargs"]["maxlen"])

    def predict(self, batch: Mapping[str, Any]) -> np.ndarray:
        """float32 [B, E]: the intensities of one batch of :func:`~moodlake.data.loader.collate_segments`."""
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with torch.inference_mode():
            out, _ = self.adapter.probabilities(self.model, self.adapter.forward(self.model, batch), batch)
        return out.float().cpu().numpy()

    def predict_rows(self, rows: Sequence, batch_size: int = 256) -> np.ndarray:
        """float32 [N, E] for aligned segment rows (attributes as above), in batches of ``batch_size``."""
        from moodlake.data.loader import collate_segments

        if not rows:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate([self.predict(collate_segments(rows[i:i + batch_size]))
                               for i in range(0, len(rows), batch_size)])


def sentiment_of(labels: Sequence[str], probs: np.ndarray, label_set: str, mapping: Mapping[str, str],
                 multi_label: bool) -> tuple[list[str | None], np.ndarray]:
    """(positive / negative or None, its probability) per row of ``probs`` [N, K].

    Sentiment label sets: the label itself. Otherwise each label's polarity from ``mapping``
    (features.sentiment_map); a polarity's probability is the sum of its labels' probabilities (the
    largest of them for multi-label models, whose probabilities are independent sigmoids).
    """
    from moodlake.features import SENTIMENT_LABEL_SETS

    polarity = {lab: lab for lab in labels if lab in ("positive", "negative")} if label_set in SENTIMENT_LABEL_SETS \
        else {lab: mapping[lab] for lab in labels if mapping.get(lab) in ("positive", "negative")}
    n = len(probs)
    if not polarity:
        return [None] * n, np.full(n, np.nan)
    reduce = np.max if multi_label else np.sum
    mass = {}
    for pole in ("positive", "negative"):
        idx = [i for i, lab in enumerate(labels) if polarity.get(lab) == pole]
        mass[pole] = reduce(probs[:, idx], axis=1) if idx else np.zeros(n)
    pos = mass["positive"] >= mass["negative"]
    return (["positive" if p else "negative" for p in pos],
            np.where(pos, mass["positive"], mass["negative"]).astype(np.float64))


def read_config(folder: str | Path) -> dict:
    """A registered model's config.json (no weights loaded)."""
    from moodlake import storage

    path = storage.join(folder, "config.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"no registered model in {folder} (config.json missing)")
    return json.loads(storage.read_text(path))
