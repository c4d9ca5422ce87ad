"""Image CNN, character CNN and late-fusion CNN of St. Pierre for social-media posts.

- :class:`ImageCNN`: DenseNet-121 (Huang et al., CVPR 2017), its pooled 1024-d output, dropout and
  a dense softmax layer; every stage but the last dense block (with its final norm) is frozen.
- :class:`CharCNN`: the character CNN of Tables 1-2: a 64-d character embedding feeds two
  parallel blocks that differ only in the dilation D (1 and 2) of their stride-1 convolutions,
  each ``(k7 s1 D)(k7 s2 1)(k5 s1 D)(k5 s2 1)(k3 s1 D)(k3 s2 1)`` (kernel, stride, dilation) with
  128 channels, every convolution followed by layer norm and PReLU; the two 128-channel outputs
  are concatenated to 256 channels, averaged over positions and read by a dense softmax layer.
- :class:`LateFusionCNN`: both trained bases with their softmax layers replaced by a dense layer
  of ``n`` units with layer norm and PReLU; the two are summed and read by a dense softmax layer.
  Both bases are frozen (and kept in eval mode) while the fusion layers train.

Choices the tables leave open, taken here: convolutions pad to keep the length ("same"; stride 2
halves it, rounding up); PReLU has one slope per channel; the embedding of character 0 (padding)
is zero and, after every convolution, positions past the end of the text are zeroed and left out
of the average, so a text's output does not depend on how far its batch was padded.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .backbones import ImageBackbone, image_backbone
from .registry import register_model
from .weights import Pretrained


class ImageCNN(nn.Module):
    """DenseNet-121 pooled features -> dropout -> dense softmax; all but the last dense block frozen."""

    def __init__(self, num_classes: int = 2, pretrained: Pretrained = True, dropout: float = 0.5,
                 backbone: ImageBackbone | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else image_backbone("densenet121", pretrained)
        self.backbone.freeze(trainable_stages=1)
        self.num_features = self.backbone.num_features
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


class ConvLNPReLU(nn.Module):
    """A 1-d convolution with "same" padding, layer norm over channels, PReLU; zeroes positions past the text."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride, padding=dilation * (kernel - 1) // 2,
                              dilation=dilation)
        self.norm = nn.LayerNorm(out_channels)
        self.act = nn.PReLU(out_channels)
        self.stride = stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, C, L], ``lengths`` [B] valid positions; returns the output and its valid lengths."""
        y = self.act(self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2))
        lengths = (lengths + self.stride - 1) // self.stride  # ceil: output t is centred on input t*stride
        valid = torch.arange(y.shape[2], device=y.device)[None, :] < lengths[:, None]
        return y * valid[:, None, :], lengths


# (kernel, stride, dilated?) of Table 1; stride-1 convolutions take the block's dilation D
CHAR_BLOCK_LAYERS = ((7, 1, True), (7, 2, False), (5, 1, True), (5, 2, False), (3, 1, True), (3, 2, False))


class DilatedCharBlock(nn.Module):
    """Six ConvLNPReLU layers of Table 1 with dilation ``dilation`` on the stride-1 convolutions."""

    def __init__(self, in_channels: int, channels: int, dilation: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for kernel, stride, dilated in CHAR_BLOCK_LAYERS:
            self.layers.append(ConvLNPReLU(in_channels, channels, kernel, stride, dilation if dilated else 1))
            in_channels = channels

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x, lengths = layer(x, lengths)
        return x, lengths


class CharCNN(nn.Module):
    """Character CNN (Tables 1-2): input long [B, Lc] character codes, 0 = padding, codes < alphabet_size."""

    def __init__(self, num_classes: int = 2, alphabet_size: int = 128, embedding_dim: int = 64,
                 channels: int = 128, dilations: Sequence[int] = (1, 2)):
        super().__init__()
        self.embedding = nn.Embedding(alphabet_size, embedding_dim, padding_idx=0)
        self.blocks = nn.ModuleList(DilatedCharBlock(embedding_dim, channels, d) for d in dilations)
        self.num_features = channels * len(self.blocks)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, chars: torch.Tensor) -> torch.Tensor:
        """The averaged 256-d concatenation of both blocks."""
        lengths = (chars != 0).sum(1)
        x = self.embedding(chars).transpose(1, 2)
        outs = [block(x, lengths) for block in self.blocks]
        pooled_lengths = outs[0][1].clamp(min=1)
        return torch.cat([y for y, _ in outs], 1).sum(2) / pooled_lengths[:, None]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(chars))


class DenseLNPReLU(nn.Sequential):
    """The fusion model's replacement of a base's softmax layer: dense n units, layer norm, PReLU."""

    def __init__(self, in_features: int, units: int):
        super().__init__(nn.Linear(in_features, units), nn.LayerNorm(units), nn.PReLU(units))


class LateFusionCNN(nn.Module):
    """Frozen image and character bases; their projections to ``units`` are summed and classified.

    ``forward(images, chars)``: images [B, 3, H, W] normalised for DenseNet, chars long [B, Lc].
    """

    def __init__(self, image_model: ImageCNN, char_model: CharCNN, num_classes: int = 2, units: int = 256):
        super().__init__()
        self.image_model, self.char_model = image_model, char_model
        for base in (image_model, char_model):
            base.requires_grad_(False)
        self.image_proj = DenseLNPReLU(image_model.num_features, units)
        self.char_proj = DenseLNPReLU(char_model.num_features, units)
        self.classifier = nn.Linear(units, num_classes)
        self.train(self.training)

    def train(self, mode: bool = True) -> "LateFusionCNN":
        super().train(mode)
        self.image_model.eval()
        self.char_model.eval()
        return self

    def forward(self, images: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        fused = self.image_proj(self.image_model.forward_features(images)) + \
            self.char_proj(self.char_model.forward_features(chars))
        return self.classifier(fused)


@register_model
def stpierre_image(*, num_classes: int = 2, pretrained: Pretrained = True, dropout: float = 0.5) -> ImageCNN:
    """St. Pierre's image CNN on DenseNet-121 (pretrained: True needs torchvision's checkpoint file)."""
    return ImageCNN(num_classes, pretrained, dropout)


@register_model
def stpierre_char(*, num_classes: int = 2, alphabet_size: int = 128, embedding_dim: int = 64,
                  channels: int = 128) -> CharCNN:
    """St. Pierre's dilated character CNN."""
    return CharCNN(num_classes, alphabet_size, embedding_dim, channels)


@register_model
def stpierre_fused(*, num_classes: int = 2, units: int = 256, image_model: ImageCNN | None = None,
                   char_model: CharCNN | None = None, pretrained: Pretrained = True,
                   alphabet_size: int = 128) -> LateFusionCNN:
    """The late-fusion model over trained bases (``image_model``, ``char_model``; built fresh when omitted)."""
    image_model = image_model if image_model is not None else ImageCNN(num_classes, pretrained)
    char_model = char_model if char_model is not None else CharCNN(num_classes, alphabet_size)
    return LateFusionCNN(image_model, char_model, num_classes, units)
