"""Multi-branch CNN with a bidirectional GRU over feature levels, after Zhu et al.

X. Zhu, L. Li, W. Zhang, T. Rao, M. Xu, Q. Huang, D. Xu, "Dependency Exploitation: A Unified
CNN-RNN Approach for Visual Emotion Recognition", IJCAI 2017.

- Branches (paper: multi-task CNN branches): every pooling stage of the CNN gets a branch, a
  1x1 convolution with 128 filters (ReLU) and a fully connected layer, giving one feature vector
  per level; during the branch stages each branch is trained with a classification loss plus a
  contrastive loss on pairs of images (margin 1): same-label pairs are pulled together,
  different-label pairs pushed at least the margin apart (:func:`contrastive_loss`).
- Bi-GRU (paper: bidirectional RNN over levels): the level features, ordered from low to high,
  are a sequence for a bidirectional GRU with 512 units; the final states of both directions are
  concatenated and read by the softmax layer.
- Schedule (paper: training procedure; :meth:`ZhuMultiBranch.freeze_for_stage`,
  :meth:`ZhuMultiBranch.param_groups`): branch after branch (stage ``"branch<k>"`` trains branch
  k together with the CNN layers below it), then stage ``"rnn"`` trains the Bi-GRU and softmax
  while the CNN and branches are fine-tuned at a small learning rate.

The backbone is configurable (EfficientNet-Lite0 by default, offline; levels are the backbone's
down-sampling stages, see ``backbones.ImageBackbone.forward_levels``). Before the fully connected
layer the branch map is average-pooled to ``branch_pool`` x ``branch_pool`` so that any input
size works (the paper used fixed 224-px inputs, where the map size is fixed anyway).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import image_backbone
from .registry import register_model
from .weights import Pretrained


def contrastive_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean over all pairs i < j of the batch of the contrastive loss (Hadsell et al., CVPR 2006).

    A same-label pair costs d^2 / 2, a different-label pair max(0, margin - d)^2 / 2, where d is
    the Euclidean distance of the two feature vectors. A batch of one example has no pair: 0.
    """
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=features.device)
    if len(i) == 0:
        return features.sum() * 0.0
    d = (features[i] - features[j]).pow(2).sum(1).clamp_min(1e-12).sqrt()
    same = (labels[i] == labels[j]).to(features.dtype)
    return (same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)).mean() / 2


class Branch(nn.Module):
    """1x1 convolution with 128 filters and ReLU, pooling to a fixed grid, fully connected layer (ReLU)."""

    def __init__(self, in_channels: int, out_dim: int, filters: int = 128, pool: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, 1)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(filters * pool * pool, out_dim)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(torch.flatten(self.pool(F.relu(self.conv(level))), 1)))


class ZhuMultiBranch(nn.Module):
    """CNN branches at every pooling stage, per-branch classifiers, a Bi-GRU over levels, softmax.

    ``forward(images)`` returns a dict: ``logits`` [B, C] (the Bi-GRU classifier),
    ``branch_logits`` and ``branch_features`` (lists over levels, low to high, of [B, C] and
    [B, branch_dim]).
    """

    def __init__(self, num_classes: int = 8, backbone: str = "efficientnet_lite0", pretrained: Pretrained = True,
                 branch_dim: int = 512, branch_filters: int = 128, branch_pool: int = 2, gru_units: int = 512,
                 margin: float = 1.0, contrastive_weight: float = 1.0):
        super().__init__()
        self.backbone = image_backbone(backbone, pretrained)
        self.branches = nn.ModuleList(Branch(c, branch_dim, branch_filters, branch_pool)
                                      for c in self.backbone.level_channels)
        self.branch_classifiers = nn.ModuleList(nn.Linear(branch_dim, num_classes) for _ in self.branches)
        self.gru = nn.GRU(branch_dim, gru_units, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * gru_units, num_classes)
        self.margin, self.contrastive_weight = margin, contrastive_weight

    @property
    def stages(self) -> list[str]:
        """The training stages in order: ``branch0`` .. ``branch<L-1>``, then ``rnn``."""
        return [f"branch{k}" for k in range(len(self.branches))] + ["rnn"]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        levels = self.backbone.forward_levels(images)
        features = [branch(level) for branch, level in zip(self.branches, levels)]
        _, h_n = self.gru(torch.stack(features, 1))  # h_n: [2, B, units], forward then backward final states
        return {
            "logits": self.classifier(torch.cat([h_n[0], h_n[1]], 1)),
            "branch_logits": [clf(f) for clf, f in zip(self.branch_classifiers, features)],
            "branch_features": features,
        }

    def loss(self, outputs: dict, labels: torch.Tensor, stage: str) -> torch.Tensor:
        """Branch stage k: cross-entropy of branch k plus the weighted contrastive loss on its features;
        stage ``rnn``: cross-entropy of the Bi-GRU classifier."""
        if stage == "rnn":
            return F.cross_entropy(outputs["logits"], labels)
        k = self._branch_index(stage)
        return F.cross_entropy(outputs["branch_logits"][k], labels) + \
            self.contrastive_weight * contrastive_loss(outputs["branch_features"][k], labels, self.margin)

    def _branch_index(self, stage: str) -> int:
        if stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(self.stages)}")
        return int(stage[len("branch"):])

    def _stage_modules(self, stage: str) -> tuple[list[nn.Module], list[nn.Module]]:
        """(modules trained at the full rate, modules fine-tuned at a small rate) in ``stage``."""
        if stage == "rnn":
            return [self.gru, self.classifier], [self.backbone, self.branches, self.branch_classifiers]
        k = self._branch_index(stage)
        cnn = self.backbone.stage_modules[: self.backbone.level_stages[k] + 1]
        return [*cnn, self.branches[k], self.branch_classifiers[k]], []

    def freeze_for_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage``: only what that stage trains (or fine-tunes) learns."""
        full, small = self._stage_modules(stage)
        self.requires_grad_(False)
        for module in full + small:
            module.requires_grad_(True)

    def param_groups(self, stage: str, base_lr: float, finetune_lr_scale: float = 0.1) -> list[dict]:
        """Optimizer groups for ``stage`` (call :meth:`freeze_for_stage` first); in ``rnn`` the CNN and
        branches get ``base_lr * finetune_lr_scale``."""
        full, small = self._stage_modules(stage)
        groups = [{"params": [p for m in full for p in m.parameters()], "lr": base_lr}]
        if small:
            groups.append({"params": [p for m in small for p in m.parameters()], "lr": base_lr * finetune_lr_scale})
        return groups


@register_model
def zhu_multibranch(*, num_classes: int = 8, backbone: str = "efficientnet_lite0", pretrained: Pretrained = True,
                    branch_dim: int = 512, branch_pool: int = 2, gru_units: int = 512, margin: float = 1.0,
                    contrastive_weight: float = 1.0) -> ZhuMultiBranch:
    """Zhu et al.'s multi-branch CNN with Bi-GRU on an ``image_backbone`` (efficientnet_lite0 by default)."""
    return ZhuMultiBranch(num_classes, backbone, pretrained, branch_dim, 128, branch_pool, gru_units,
                          margin, contrastive_weight)
