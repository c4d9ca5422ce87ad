"""The frozen-stage cache of the image backbones: the same numbers as computing them, paid once."""
from __future__ import annotations

import pytest
import torch

from moodlake.models.backbones import image_backbone


@pytest.mark.parametrize("name", ["efficientnet_lite0", "alexnet"])
def test_cached_frozen_stages_give_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = image_backbone(name, pretrained=False)
    plain.freeze(1)
    cached = image_backbone(name, pretrained=False)
    cached.load_state_dict(plain.state_dict())
    cached.freeze(1)
    cached.cache_frozen(max_bytes=2**30)
    for model in (plain, cached):  # AlexNet's trainable fc6-fc7 has dropout: compare without it
        model.train(name == "efficientnet_lite0")
    size = 64 if name == "efficientnet_lite0" else 96
    x = torch.randn(4, 3, size, size)
    for model in (plain, cached):
        model(x[:2]).sum().backward()  # warm the cache with two of the images
    batch = x[[3, 0, 2, 1]]  # two seen (0, 1) and two new images, shuffled
    out_plain, out_cached = plain(batch), cached(batch)
    assert torch.allclose(out_plain, out_cached, atol=1e-6)
    assert (cached.cache_hits, cached.cache_misses) == (2, 4)
    for model, out in ((plain, out_plain), (cached, out_cached)):
        model.zero_grad()
        out.square().sum().backward()
    last = plain.stage_modules[-1]
    grads = [p.grad for p in last.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # the trainable stage learns
    for a, b in zip(last.parameters(), cached.stage_modules[-1].parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in cached.stage_modules[0].parameters())  # frozen: no gradient


def test_the_cache_stops_growing_at_its_budget():
    backbone = image_backbone("efficientnet_lite0", pretrained=False)
    backbone.freeze(1)
    backbone.eval()
    backbone.cache_frozen(max_bytes=1)  # smaller than one image's activations
    x = torch.randn(3, 3, 64, 64)
    backbone(x)
    backbone(x)
    assert backbone.cache_hits == 0 and backbone.cache_misses == 6
