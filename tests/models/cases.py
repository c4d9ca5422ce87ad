"""One small, seeded test case per registered model: its config, inputs, output and loss.

Shared by the smoke, golden and overfitting tests and by ``make_golden.py``. Every case uses
random-init weights (``pretrained=False``) and small inputs (64-px images, short sequences) so that
the whole suite runs on two CPU cores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from moodlake.models import get_model
from moodlake.models.multitask import HEADS, MODALITIES
from moodlake.models.williams import mae_loss

IMAGE_SIZE = 64
ALPHABET = 40


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def multitask_batch(seed: int = 0, n_classes: int = 6, vocab: int = 60, tag_vocab: int = 30) -> dict:
    """Seven posts, one per non-empty modality subset, in the order of ``HEADS``."""
    g = _gen(seed)
    mask = torch.tensor([[m in head.split("+") for m in MODALITIES] for head in HEADS])
    text = torch.randint(1, vocab, (7, 12), generator=g)
    text[::2, 8:] = 0  # some shorter texts
    tags = torch.randint(1, tag_vocab, (7, 4), generator=g)
    tags[1::2, 2:] = 0
    return {
        "image": torch.randn(7, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        "text": text, "tags": tags, "mask": mask,
        "label": torch.randint(0, n_classes, (7,), generator=g),
    }


def _images(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([0, 1] * (n // 2))


def _chars(seed: int, n: int = 4) -> torch.Tensor:
    chars = torch.randint(1, ALPHABET, (n, 40), generator=_gen(seed))
    chars[1, 25:] = 0
    return chars


def _williams_inputs(seed: int) -> dict:
    g = _gen(seed)
    return {"audio": torch.randn(4, 15, 74, generator=g), "visual": torch.randn(4, 15, 35, generator=g),
            "text": torch.randn(4, 15, 300, generator=g), "lengths": torch.tensor([15, 9, 4, 1]),
            "target": 3 * torch.rand(4, 6, generator=g)}


@dataclass
class Case:
    """How to build, feed and train one registered model in tests."""

    cfg: dict
    inputs: Callable[[int], dict]  # seed -> inputs
    output: Callable[[torch.nn.Module, dict], torch.Tensor]  # the tensor checked by smoke and golden tests
    output_shape: tuple
    loss: Callable[[torch.nn.Module, dict], torch.Tensor]
    correct: Callable[[torch.nn.Module, dict], bool]  # all training examples fitted
    overfit_cfg: dict = field(default_factory=dict)  # e.g. dropout off, so train-mode losses are deterministic
    steps: int = 60
    lr: float = 1e-3

    def build(self, **overrides) -> torch.nn.Module:
        return get_model(**{**self.cfg, **overrides})


def _classifier_case(name: str, inputs: Callable[[int], dict], forward, n_classes: int = 2, **kw) -> Case:
    def loss(model, x):
        return F.cross_entropy(forward(model, x), x["label"])

    def correct(model, x):
        return bool((forward(model, x).argmax(1) == x["label"]).all())

    return Case(cfg={"name": name, "num_classes": n_classes, **kw.pop("cfg", {})}, inputs=inputs, output=forward,
                output_shape=(4, n_classes), loss=loss, correct=correct, **kw)


def _multitask_output(model, x):
    outputs = model(x)
    return torch.stack([outputs[h] for h in HEADS], 1)


def _multitask_correct(model, x):
    outputs = model(x)
    return all(bool((outputs[h][model.head_mask(x["mask"], h)].argmax(1)
                     == x["label"][model.head_mask(x["mask"], h)]).all()) for h in HEADS)


def _zhu_forward(model, x):
    out = model(x["image"])
    return torch.cat([out["logits"], *out["branch_logits"]], 1)


def _zhu_loss(model, x):
    out = model(x["image"])
    return sum(model.loss(out, x["label"], stage) for stage in model.stages)


def _zhu_correct(model, x):
    out = model(x["image"])
    return all(bool((logits.argmax(1) == x["label"]).all()) for logits in [out["logits"], *out["branch_logits"]])


def _williams_forward(model, x):
    return model(x["audio"], x["visual"], x["text"], lengths=x["lengths"])


CASES: dict[str, Case] = {
    "multitask": Case(
        cfg={"name": "multitask", "labels": ("anger", "disgust", "fear", "joy", "sadness", "surprise"),
             "vocab_size": 60, "tag_vocab_size": 30, "pretrained": False},
        inputs=lambda seed: multitask_batch(seed),
        output=_multitask_output, output_shape=(7, len(HEADS), 6),
        loss=lambda model, x: model.loss(model(x), x),
        correct=_multitask_correct, overfit_cfg={"dropout": 0.0}, steps=40),
    "stpierre_image": _classifier_case(
        "stpierre_image", lambda seed: dict(zip(("image", "label"), _images(seed))),
        lambda model, x: model(x["image"]), cfg={"pretrained": False}, overfit_cfg={"dropout": 0.0}),
    "stpierre_char": _classifier_case(
        "stpierre_char", lambda seed: {"chars": _chars(seed), "label": torch.tensor([0, 1, 0, 1])},
        lambda model, x: model(x["chars"]), cfg={"alphabet_size": ALPHABET}),
    "stpierre_fused": _classifier_case(
        "stpierre_fused",
        lambda seed: {**dict(zip(("image", "label"), _images(seed))), "chars": _chars(seed + 1)},
        lambda model, x: model(x["image"], x["chars"]), cfg={"pretrained": False, "alphabet_size": ALPHABET}),
    "campos_alexnet": _classifier_case(
        "campos_alexnet", lambda seed: dict(zip(("image", "label"), _images(seed))),
        lambda model, x: model(x["image"]), cfg={"pretrained": False, "variant": "fc8-2"},
        # the overfitting run trains fc6-2 (2.5 M parameters): Adam over fc8-2's 57 M takes minutes here
        overfit_cfg={"dropout": 0.0, "variant": "fc6-2"}, lr=1e-4),
    "zhu_multibranch": Case(
        cfg={"name": "zhu_multibranch", "num_classes": 3, "pretrained": False, "branch_dim": 64, "gru_units": 32},
        inputs=lambda seed: dict(zip(("image", "label"), (_images(seed, 6)[0], torch.tensor([0, 1, 2, 0, 1, 2])))),
        output=_zhu_forward, output_shape=(6, 3 * 6), loss=_zhu_loss, correct=_zhu_correct),
    "williams_blstm": Case(
        cfg={"name": "williams_blstm", "maxlen": 15},
        inputs=_williams_inputs, output=_williams_forward, output_shape=(4, 6),
        loss=lambda model, x: mae_loss(_williams_forward(model, x), x["target"]),
        correct=lambda model, x: bool(mae_loss(_williams_forward(model, x), x["target"]) < 0.1),
        overfit_cfg={"dropout": 0.0}, steps=150, lr=1e-2),
}
