"""Parameter counts from the papers' architecture arithmetic (and published totals), not from the models."""
from __future__ import annotations

import pytest
import torchvision

from moodlake.models import get_model, image_backbone


def n_params(module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(c_in: int, c_out: int, k: int, bias: bool = True, groups: int = 1) -> int:
    return c_in // groups * c_out * k * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def efficientnet_lite0_backbone() -> int:
    """EfficientNet-Lite0 from its stage table (no SE; stem 32, head 1280; conv without bias + BN)."""
    stages = [(1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40), (3, 3, 6, 40, 80),
              (3, 5, 6, 80, 112), (4, 5, 6, 112, 192), (1, 3, 6, 192, 320)]
    total = conv(3, 32, 3, bias=False) + bn(32)
    for repeats, k, expand, c_in, c_out in stages:
        for j in range(repeats):
            i = c_in if j == 0 else c_out
            mid = i * expand
            if expand != 1:
                total += conv(i, mid, 1, bias=False) + bn(mid)
            total += conv(mid, mid, k, bias=False, groups=mid) + bn(mid)
            total += conv(mid, c_out, 1, bias=False) + bn(c_out)
    return total + conv(320, 1280, 1, bias=False) + bn(1280)


# published totals with the 1000-class ImageNet head
EFFICIENTNET_LITE0_TOTAL_M = 4.65  # TF model garden / timm: 4.65 M
DENSENET121_TOTAL = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.meta["num_params"]
ALEXNET_TOTAL = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["num_params"]
ALEXNET_CONVS = conv(3, 64, 11) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) + conv(256, 256, 3)


def test_backbones_match_published_sizes():
    assert round((efficientnet_lite0_backbone() + linear(1280, 1000)) / 1e6, 2) == EFFICIENTNET_LITE0_TOTAL_M
    assert n_params(image_backbone("efficientnet_lite0", pretrained=False)) == efficientnet_lite0_backbone()
    assert n_params(image_backbone("densenet121", pretrained=False)) == DENSENET121_TOTAL - linear(1024, 1000)
    # AlexNet's backbone ends at fc7 (fc8 is its classifier)
    assert ALEXNET_CONVS + linear(9216, 4096) + linear(4096, 4096) + linear(4096, 1000) == ALEXNET_TOTAL
    assert n_params(image_backbone("alexnet", pretrained=False)) == ALEXNET_TOTAL - linear(4096, 1000)


def test_multitask():
    vocab, tags, word_dim, classes = 1000, 200, 50, 8
    m = get_model("multitask", num_classes=8, vocab_size=vocab, tag_vocab_size=tags, word_dim=word_dim,
                  pretrained=False)
    # embedding, windows 3/4/5 x 100 filters (k * E * 100 + 100), 900 pooled features -> 300
    text = vocab * word_dim + sum(k * word_dim * 100 + 100 for k in (3, 4, 5)) + linear(3 * 3 * 100, 300)
    tag = tags * 250 + conv(250, 300, 1)
    image = efficientnet_lite0_backbone() + linear(1280, 300)
    head = {d: linear(d, 256) + linear(256, 128) + linear(128, classes) for d in (300, 600, 900)}
    heads = 3 * head[300] + 3 * head[600] + head[900]
    assert n_params(m.extractors["text"]) == text
    assert n_params(m.extractors["tags"]) == tag
    assert n_params(m.extractors["image"]) == image
    assert n_params(m.heads) == heads
    assert n_params(m) == text + tag + image + heads


def densenet_block4_and_norm5() -> int:
    """DenseNet-121's last dense block (16 layers, growth 32, bottleneck 4x32, input 512) and norm5."""
    total = 0
    for i in range(16):
        c = 512 + 32 * i
        total += bn(c) + conv(c, 128, 1, bias=False) + bn(128) + conv(128, 32, 3, bias=False)
    return total + bn(1024)


def char_cnn(alphabet: int, classes: int) -> int:
    layers = [(7, 64), (7, 128), (5, 128), (5, 128), (3, 128), (3, 128)]  # (kernel, input channels)
    block = sum(k * c_in * 128 + 128 + 2 * 128 + 128 for k, c_in in layers)  # 1-d conv, layer norm, PReLU
    return alphabet * 64 + 2 * block + linear(256, classes)


def test_stpierre():
    image = get_model("stpierre_image", num_classes=3, pretrained=False)
    assert n_params(image) == DENSENET121_TOTAL - linear(1024, 1000) + linear(1024, 3)
    assert n_params(image, trainable_only=True) == densenet_block4_and_norm5() + linear(1024, 3)
    assert n_params(get_model("stpierre_char", num_classes=3, alphabet_size=100)) == char_cnn(100, 3)
    fused = get_model("stpierre_fused", num_classes=3, units=64, pretrained=False, alphabet_size=100)
    proj = linear(1024, 64) + 2 * 64 + 64 + linear(256, 64) + 2 * 64 + 64
    assert n_params(fused, trainable_only=True) == proj + linear(64, 3)


@pytest.mark.parametrize("variant,top", [
    ("fc6-2", linear(9216, 2)),
    ("fc7-2", linear(9216, 4096) + linear(4096, 2)),
    ("fc6-4096", linear(9216, 4096) + linear(4096, 2)),
    ("fc8-2", linear(9216, 4096) + linear(4096, 4096) + linear(4096, 2)),
    ("fc7-4096", linear(9216, 4096) + linear(4096, 4096) + linear(4096, 2)),
    ("fc9-2", linear(9216, 4096) + linear(4096, 4096) + linear(4096, 1000) + linear(1000, 2)),
    ("fc8-1000", linear(9216, 4096) + linear(4096, 4096) + linear(4096, 1000) + linear(1000, 2)),
])
def test_campos_variants(variant, top):
    assert n_params(get_model("campos_alexnet", variant=variant, pretrained=False)) == ALEXNET_CONVS + top


def test_zhu_multibranch():
    classes, d, units, pool = 8, 512, 512, 2
    m = get_model("zhu_multibranch", num_classes=classes, pretrained=False)
    levels = (16, 24, 40, 112, 1280)  # EfficientNet-Lite0 at strides 2, 4, 8, 16, 32
    branches = sum(conv(c, 128, 1) + linear(128 * pool * pool, d) + linear(d, classes) for c in levels)
    gru = 2 * 3 * (d * units + units * units + 2 * units)  # torch keeps two bias vectors per gate
    assert n_params(m) == efficientnet_lite0_backbone() + branches + gru + linear(2 * units, classes)


def test_williams_blstm():
    d, h = 74 + 35 + 300, 64
    lstm = 2 * 4 * (d * h + h * h + 2 * h)  # torch keeps two bias vectors per gate (Keras: one)
    expected = lstm + linear(2 * h, 100) + linear(100, 6)
    assert n_params(get_model("williams_blstm")) == expected
