"""Fine-tuned AlexNet for visual sentiment, after Campos, Jou & Giró-i-Nieto.

V. Campos, B. Jou, X. Giró-i-Nieto, "From Pixels to Sentiment: Fine-tuning CNNs for Visual
Sentiment Prediction", Image and Vision Computing 65, 2017 (arXiv:1604.03489).

The paper fine-tunes CaffeNet; torchvision's AlexNet (the single-tower "one weird trick" AlexNet,
61.1 M parameters, no grouped convolutions or LRN) stands in for it here because its ImageNet
weights are the ones a user can provide (``weights.torchvision_model``). The architectures of the
layer ablation and layer addition experiments are named by the top pretrained layer kept with
its width, or by the new two-way classification layer that follows it, so each architecture
has two names:

    variant                top of the network after conv5 (pretrained unless "new")
    fc6-2                  fc6 new, 2 units                           (fc6, fc7, fc8 removed)
    fc7-2  = fc6-4096      fc6 4096 -> fc7 new, 2 units               (fc7, fc8 removed)
    fc8-2  = fc7-4096      fc6 4096 -> fc7 4096 -> fc8 new, 2 units   (the classic fine-tuning)
    fc9-2  = fc8-1000      fc6 -> fc7 -> fc8 1000 -> fc9 new, 2 units (a layer added)

Kept layers are followed by ReLU and dropout 0.5 as in CaffeNet (fc8 gets them too when fc9 is
stacked on it, else fc9 would collapse into fc8). The new layer learns 10x faster than the
pretrained ones (:meth:`CamposAlexNet.param_groups`). At test time each image is scored as the
mean softmax over ten views, the four corner crops and the centre crop and their mirror images
(:func:`ten_crop_views`, :meth:`CamposAlexNet.predict_oversampled`).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision.transforms.functional as TF
from torch import nn

from .registry import register_model
from .weights import Pretrained, torchvision_model

VARIANT_ALIASES = {"fc6-4096": "fc7-2", "fc7-4096": "fc8-2", "fc8-1000": "fc9-2"}
KEPT_FC_LAYERS = {"fc6-2": 0, "fc7-2": 1, "fc8-2": 2, "fc9-2": 3}
"""How many of the pretrained fc6, fc7, fc8 each canonical variant keeps under its new layer."""
VARIANTS = tuple(KEPT_FC_LAYERS) + tuple(VARIANT_ALIASES)
NEW_LAYER_LR_MULTIPLIER = 10.0


class CamposAlexNet(nn.Module):
    """AlexNet convolutions, the kept pretrained fc layers and one new classification layer."""

    def __init__(self, variant: str = "fc8-2", num_classes: int = 2, pretrained: Pretrained = True,
                 dropout: float = 0.5):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown Campos variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant = VARIANT_ALIASES.get(variant, variant)
        net = torchvision_model("alexnet", pretrained)
        self.features, self.avgpool = net.features, net.avgpool
        pretrained_fc = [net.classifier[1], net.classifier[4], net.classifier[6]]  # fc6, fc7, fc8
        kept = KEPT_FC_LAYERS[self.variant]
        top = OrderedDict()
        for i, layer in enumerate(pretrained_fc[:kept]):
            top[f"fc{6 + i}"] = layer
            top[f"relu{6 + i}"] = nn.ReLU(inplace=True)
            top[f"drop{6 + i}"] = nn.Dropout(dropout)
        in_features = pretrained_fc[kept - 1].out_features if kept else pretrained_fc[0].in_features
        self.new_layer_name = f"fc{6 + kept}"
        top[self.new_layer_name] = nn.Linear(in_features, num_classes)
        self.top = nn.Sequential(top)

    @property
    def new_layer(self) -> nn.Linear:
        return getattr(self.top, self.new_layer_name)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """pool5 flattened: [B, 9216] (the adaptive pooling makes it 6x6 for any input size)."""
        return torch.flatten(self.avgpool(self.features(images)), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.top(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def param_groups(self, base_lr: float) -> list[dict]:
        """Optimizer groups: pretrained layers at ``base_lr``, the new layer at 10x (the paper's fine-tuning setup)."""
        new = list(self.new_layer.parameters())
        new_ids = {id(p) for p in new}
        return [{"params": [p for p in self.parameters() if id(p) not in new_ids], "lr": base_lr},
                {"params": new, "lr": base_lr * NEW_LAYER_LR_MULTIPLIER}]

    @torch.no_grad()
    def predict_oversampled(self, views: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities over the views of each image: ``views`` [B, V, 3, H, W] -> [B, C]."""
        b, v = views.shape[:2]
        return self(views.flatten(0, 1)).softmax(1).view(b, v, -1).mean(1)

    def analysis_layers(self) -> "OrderedDict[str, nn.Module]":
        """The layers whose outputs :func:`moodlake.models.analysis.layer_analysis` studies, in order.

        conv1..conv5 after their ReLU, each kept fc layer after its ReLU, and the new layer's logits.
        """
        relus = [m for m in self.features if isinstance(m, nn.ReLU)]
        layers = OrderedDict((f"conv{i + 1}", relu) for i, relu in enumerate(relus))
        for name, module in self.top.named_children():
            if name.startswith("relu"):
                layers[f"fc{name[4:]}"] = module
        layers[self.new_layer_name] = self.new_layer
        return layers


def ten_crop_views(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Ten views per image: 4 corner and 1 centre ``crop_size`` crops and their horizontal mirrors.

    ``images`` [B, 3, H, W] (e.g. resized to 256) -> [B, 10, 3, crop_size, crop_size]; the order
    is torchvision's ``ten_crop``: tl, tr, bl, br, centre, then the same five of the mirrored image.
    """
    return torch.stack(TF.ten_crop(images, [crop_size, crop_size]), 1)


@register_model
def campos_alexnet(*, variant: str = "fc8-2", num_classes: int = 2, pretrained: Pretrained = True,
                   dropout: float = 0.5) -> CamposAlexNet:
    """Campos et al.'s fine-tuned AlexNet; ``variant`` one of ``VARIANTS``."""
    return CamposAlexNet(variant, num_classes, pretrained, dropout)
