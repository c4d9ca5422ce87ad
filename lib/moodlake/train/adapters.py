"""How each model family meets the training loop: what it is built from, which rows of a batch it
can use, its loss, its predictions, its optimizer groups and its training phases.

A batch is the dict of :mod:`moodlake.data.loader`. The multitask model takes it whole and routes
per example; the single-modality models learn from and predict only the rows that have their
modality (an image CNN skips posts without a usable image; :meth:`Adapter.rows`). The forward pass
always runs on the whole batch (an absent image is a zero tensor): under DDP every rank must run
forward and backward in every step, even on a batch with no usable row (its loss is then zero).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moodlake.data.vocab import Vocab


class Adapter:
    """The defaults fit a single-label classifier of one input tensor."""

    #: classification (posts: labels and probabilities) or intensity (video segments: a regression)
    task = "classification"
    #: which of the batch's preprocessing the model's images need (moodlake.models.PREPROCESSING)
    preprocessing = "efficientnet_lite0"
    #: the batch key the model reads ("image" or "chars"); None: the whole batch
    input_key: str | None = "image"

    def build(self, name: str, kwargs: Mapping[str, Any], labels: tuple[str, ...], vocab: Vocab,
              multi_label: bool, glove: bool = False) -> tuple[nn.Module, dict]:
        """(the model, the plain keyword arguments that rebuild its architecture with ``get_model``
        without any pretrained file: the registry stores them)."""
        from moodlake.models import get_model

        if multi_label:
            raise ValueError(f"{name} is a single-label classifier; this dataset is multi-label")
        build = {"num_classes": len(labels), **kwargs}
        return get_model(name, **build), _no_pretrained(name, build)

    def scorable(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """bool [B]: the examples this model can predict (whatever their label: posts being scored have none)."""
        column = {"image": 0, "chars": 1}[self.input_key]
        return batch["mask"][:, column]

    def rows(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """bool [B]: the examples this model can learn from: scorable, with a label."""
        return self.scorable(batch) & (batch["label"] >= 0)

    def forward(self, model: nn.Module, batch: Mapping[str, Any]):
        return model(batch[self.input_key])

    def logits(self, outputs) -> torch.Tensor:
        return outputs

    def loss(self, model: nn.Module, outputs, batch: Mapping[str, Any], class_weights=None, phase: str = "train"):
        """Mean loss over the usable rows (zero, still connected to the graph, when there are none)."""
        rows = self.rows(batch)
        logits = self.logits(outputs)
        if not rows.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[rows], batch["label"][rows], weight=class_weights)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [B, C], bool [B]: the rows the model can score; other rows are meaningless)."""
        return self.probabilities(model, self.forward(model, batch), batch)

    def probabilities(self, model: nn.Module, outputs, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict`` from the outputs of a forward pass already made."""
        return self.logits(outputs).float().softmax(1), self.scorable(batch)

    def phases(self, model: nn.Module) -> list[str]:
        return ["train"]

    def enter_phase(self, model: nn.Module, phase: str) -> None:
        pass

    def param_groups(self, model: nn.Module, lr: float, phase: str) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def parts(self, codes) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
        """Parts of the model that the training data (its modality patterns, ``pattern_code``) never
        connects, each selected on its own validation loss: ``{part: (patterns, state-dict prefixes)}``.
        None here: the model is one unit."""
        return {}


class MultitaskAdapter(Adapter):
    input_key = None

    def build(self, name, kwargs, labels, vocab, multi_label, glove=False):
        from moodlake.models import get_model, glove_embedding_matrix

        build = {"labels": list(labels), "vocab_size": len(vocab.words), "tag_vocab_size": len(vocab.tags),
                 "multi_label": multi_label, **kwargs}
        if build.get("text_encoder") == "minilm":  # reads the text from chars: the vocabulary's characters
            build["char_alphabet"] = list(vocab.chars)
            glove = False
        self.preprocessing = build.get("image_backbone", "efficientnet_lite0")
        extra = {"word_vectors": glove_embedding_matrix(list(vocab.words))[0]} if glove else {}
        return get_model(name, **build, **extra), _no_pretrained(name, build)

    def scorable(self, batch):
        return batch["mask"].any(1)

    def rows(self, batch):  # its loss takes the rows with labels itself
        return self.scorable(batch)

    def forward(self, model, batch):
        return model(batch)

    def loss(self, model, outputs, batch, class_weights=None, phase="train"):
        return _unwrap(model).loss(outputs, batch, class_weights)

    def probabilities(self, model, outputs, batch):
        return _unwrap(model).routed_probabilities(outputs, batch["mask"]), self.scorable(batch)

    def param_groups(self, model, lr, phase):
        return _unwrap(model).param_groups(lr)  # a pretrained text encoder at a fraction of the rate

    def parts(self, codes):
        from moodlake.models.multitask import independent_parts

        return independent_parts(codes)

    def head_probabilities(self, model, outputs) -> dict[str, torch.Tensor]:
        """Every head's probabilities (rows a head cannot score are meaningless there)."""
        m = _unwrap(model)
        return {head: m.probabilities(logits) for head, logits in outputs.items()}


class CharAdapter(Adapter):
    input_key = "chars"

    def build(self, name, kwargs, labels, vocab, multi_label, glove=False):
        return super().build(name, {"alphabet_size": len(vocab.chars), **kwargs}, labels, vocab, multi_label)


class DenseNetAdapter(Adapter):
    preprocessing = "densenet121"


class CamposAdapter(Adapter):
    preprocessing = "alexnet"

    def param_groups(self, model, lr, phase):
        return _unwrap(model).param_groups(lr)  # the new layer at 10x the base rate


class FusedAdapter(Adapter):
    """St. Pierre's late fusion: both bases are registered models (``image_model`` / ``char_model``:
    their versions), frozen; the rows need both an image and text."""

    preprocessing = "densenet121"

    def build(self, name, kwargs, labels, vocab, multi_label, glove=False):
        from moodlake.models import get_model
        from moodlake.train.registry import load_registered

        kwargs = dict(kwargs)
        bases, meta = {}, {}
        for key in ("image_model", "char_model"):
            if key not in kwargs:
                raise ValueError(f"stpierre_fused trains on frozen bases: give model.{key} = a registered model's folder")
            bases[key], meta[key] = load_registered(kwargs.pop(key))
            if list(meta[key]["labels"]) != list(labels):
                raise ValueError(f"{key} was trained on labels {meta[key]['labels']}, this dataset has {list(labels)}")
        build = {"num_classes": len(labels), "alphabet_size": meta["char_model"]["build_kwargs"]["alphabet_size"],
                 **kwargs}
        return get_model(name, **bases, **build), _no_pretrained(name, build)

    def scorable(self, batch):
        return batch["mask"][:, 0] & batch["mask"][:, 1]

    def forward(self, model, batch):
        return model(batch["image"], batch["chars"])


class ZhuAdapter(Adapter):
    """Branch after branch (classification + contrastive loss), then the Bi-GRU with the CNN
    fine-tuned at a tenth of the rate (Zhu et al.'s multi-stage schedule)."""

    def phases(self, model):
        return list(_unwrap(model).stages)

    def enter_phase(self, model, phase):
        _unwrap(model).freeze_for_stage(phase)

    def param_groups(self, model, lr, phase):
        return _unwrap(model).param_groups(phase, lr)

    def logits(self, outputs):
        return outputs["logits"]

    def loss(self, model, outputs, batch, class_weights=None, phase="rnn"):
        rows = self.rows(batch)
        if not rows.any():
            return outputs["logits"].sum() * 0.0
        picked = {"logits": outputs["logits"][rows],
                  "branch_logits": [x[rows] for x in outputs["branch_logits"]],
                  "branch_features": [x[rows] for x in outputs["branch_features"]]}
        return _unwrap(model).loss(picked, batch["label"][rows], phase)


class WilliamsAdapter(Adapter):
    """Williams et al.'s early-fusion BLSTM on a segment dataset (:class:`moodlake.data.loader.SegmentLoader`
    batches): a regression of the emotion intensities in [0, 3] with the mean absolute error, the
    paper's loss. The features the model reads are the concatenation of its ``modalities`` (the
    unimodal, bimodal and trimodal variants); the trainer sets their sizes and ``maxlen`` from the
    dataset (:func:`moodlake.train.launch.make_spec`)."""

    task = "intensity"
    preprocessing = None
    input_key = None

    def build(self, name, kwargs, labels, vocab, multi_label, glove=False):
        from moodlake.models import get_model

        if multi_label:
            raise ValueError(f"{name} regresses intensities; this dataset is a multi-label classification")
        build = {**kwargs, "num_outputs": len(labels)}
        if "modalities" in build:
            build["modalities"] = list(build["modalities"])
        return get_model(name, **build), _no_pretrained(name, build)

    def scorable(self, batch):
        return batch["length"] > 0

    def rows(self, batch):
        return self.scorable(batch) & torch.isfinite(batch["labels"]).all(1)

    def forward(self, model, batch):
        m = _unwrap(model)
        return model(features=torch.cat([batch[k] for k in m.modalities], 2), lengths=batch["length"])

    def loss(self, model, outputs, batch, class_weights=None, phase="train"):
        from moodlake.models.williams import mae_loss

        rows = self.rows(batch)
        if not rows.any():
            return outputs.sum() * 0.0
        return mae_loss(outputs[rows].float(), batch["labels"][rows])

    def probabilities(self, model, outputs, batch):
        """The intensities [B, E] (not probabilities: this model regresses), and the rows it scored."""
        return outputs.float(), self.scorable(batch)


def _no_pretrained(name: str, build: dict) -> dict:
    """The kwargs to rebuild ``name`` from saved weights: no pretrained file needed."""
    from moodlake.models.registry import accepts

    return {**build, "pretrained": False} if accepts(name, "pretrained") else dict(build)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


ADAPTERS: dict[str, type[Adapter]] = {
    "multitask": MultitaskAdapter,
    "stpierre_image": DenseNetAdapter,
    "stpierre_char": CharAdapter,
    "stpierre_fused": FusedAdapter,
    "campos_alexnet": CamposAdapter,
    "zhu_multibranch": ZhuAdapter,
    "williams_blstm": WilliamsAdapter,
}


def adapter_for(name: str) -> Adapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise ValueError(f"no training support for model {name!r}; trainable: {', '.join(sorted(ADAPTERS))}") from None
