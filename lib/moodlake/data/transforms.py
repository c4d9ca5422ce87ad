"""Image transforms of the Torch data layer, vectorised over a batch of uint8 ``[B, H, W, 3]`` images.

- Training augmentation (St. Pierre: random crop and horizontal flip): :func:`random_crop_flip`.
  The stored image is already the 224-px centre crop of the image resized to 256 on its shorter
  side, so the classic "random 224 crop of the 256 image" cannot be redone; instead each image is
  shifted by up to ``pad`` = 16 px in each direction (the slack that crop had on each side) with
  reflected borders, i.e. a 224 crop of the image reflect-padded by 16 px, and then flipped left to
  right with probability 1/2. The pixel scale stays that of evaluation (no resizing).
- Test-time oversampling (Campos): :func:`ten_crop`, the four corner crops and the centre crop of
  side ``size`` (192 by default: 6/7 of 224, close to Campos' 227 of 256, and a multiple of 32 for
  the backbones' strides) followed by the horizontal flips of those five, in the same order.
- :func:`to_tensor`: channels first, ``(x / 255 - mean) / std`` with the backbone's preprocessing,
  zeros for the images a post does not have.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

AUGMENT_PAD = 16
TEN_CROP_SIZE = 192


def crop_flip(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Image ``i`` moved by (``dy[i]``, ``dx[i]``) pixels (output pixel (y, x) = input (y + dy, x + dx),
    borders reflected as ``np.pad(mode="reflect")`` does), then mirrored left to right where
    ``flip[i]``. Same shape as ``images``; shifts must be smaller than the images."""
    n, height, width = images.shape[:3]
    pad = int(max(np.abs(dy).max(), np.abs(dx).max()))
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, pad + dy[i]:pad + dy[i] + height, pad + dx[i]:pad + dx[i] + width]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = AUGMENT_PAD) -> np.ndarray:
    """Training augmentation: a uniform shift in ``-pad..pad`` on each axis and a flip with probability 1/2."""
    n = len(images)
    return crop_flip(images, rng.integers(-pad, pad + 1, n), rng.integers(-pad, pad + 1, n), rng.random(n) < 0.5)


def ten_crop(images: np.ndarray, size: int = TEN_CROP_SIZE) -> np.ndarray:
    """``[B, 10, size, size, 3]``: top-left, top-right, bottom-left, bottom-right and centre crops, then
    the horizontal flip of each of those five, in that order."""
    height, width = images.shape[1:3]
    if size > min(height, width):
        raise ValueError(f"crop size {size} is larger than the images ({height}x{width})")
    tops = (0, 0, height - size, height - size, (height - size) // 2)
    lefts = (0, width - size, 0, width - size, (width - size) // 2)
    crops = [images[:, top:top + size, left:left + size] for top, left in zip(tops, lefts)]
    return np.stack(crops + [crop[:, :, ::-1] for crop in crops], axis=1)


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float], present: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, ..., H, W, 3]`` -> float ``[B, ..., 3, H, W]`` normalised as ``(x / 255 - mean) / std``,
    zero for every ``b`` where ``present[b]`` is False."""
    x = torch.from_numpy(images).movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)
    scale = torch.tensor([1 / (255 * s) for s in std]).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(3, 1, 1)
    x.mul_(scale).sub_(shift)
    x[torch.from_numpy(~np.asarray(present, bool))] = 0
    return x
