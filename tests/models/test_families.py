"""Family-specific behaviour: Campos variants, oversampling and layer analysis; Zhu's stages and
contrastive loss; Williams' bounds, padding and metrics; St. Pierre's frozen parts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moodlake.models import get_model
from moodlake.models.analysis import layer_analysis
from moodlake.models.campos import VARIANTS, ten_crop_views
from moodlake.models.williams import emotion_metrics
from moodlake.models.zhu import contrastive_loss


# ---------------------------------------------------------------- Campos et al.

def test_campos_aliases_build_the_same_architecture():
    for alias, canonical in [("fc6-4096", "fc7-2"), ("fc7-4096", "fc8-2"), ("fc8-1000", "fc9-2")]:
        torch.manual_seed(0)
        a = get_model("campos_alexnet", variant=alias, pretrained=False)
        torch.manual_seed(0)
        b = get_model("campos_alexnet", variant=canonical, pretrained=False)
        assert a.variant == canonical and a.state_dict().keys() == b.state_dict().keys()
    assert set(VARIANTS) == {"fc7-4096", "fc6-4096", "fc7-2", "fc6-2", "fc8-1000", "fc9-2", "fc8-2"}
    with pytest.raises(ValueError, match="unknown Campos variant"):
        get_model("campos_alexnet", variant="fc10-2", pretrained=False)


@pytest.mark.parametrize("variant,new_in", [("fc6-2", 9216), ("fc7-2", 4096), ("fc8-2", 4096), ("fc9-2", 1000)])
def test_campos_new_layer_learns_ten_times_faster(variant, new_in):
    model = get_model("campos_alexnet", variant=variant, pretrained=False)
    base, new = model.param_groups(0.001)
    assert base["lr"] == 0.001 and new["lr"] == pytest.approx(0.01)
    assert [tuple(p.shape) for p in new["params"]] == [(2, new_in), (2,)]
    assert len(base["params"]) + len(new["params"]) == len(list(model.parameters()))


def test_ten_crop_views_and_oversampled_prediction():
    images = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    views = ten_crop_views(images, 6)
    assert views.shape == (2, 10, 3, 6, 6)
    torch.testing.assert_close(views[:, 0], images[..., :6, :6])  # top left
    torch.testing.assert_close(views[:, 3], images[..., 2:, 4:])  # bottom right
    torch.testing.assert_close(views[:, 4], images[..., 1:7, 2:8])  # centre
    torch.testing.assert_close(views[:, 5], images.flip(-1)[..., :6, :6])  # top left of the mirror image
    model = get_model("campos_alexnet", variant="fc6-2", pretrained=False).eval()
    views = ten_crop_views(torch.randn(2, 3, 80, 80), 64)
    expected = torch.stack([model(views[:, v]).softmax(1) for v in range(10)], 1).mean(1)
    torch.testing.assert_close(model.predict_oversampled(views), expected)


def test_layer_analysis_table():
    torch.manual_seed(0)
    model = get_model("campos_alexnet", variant="fc8-2", pretrained=False)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 12)
    # class 1 is brighter: linearly visible from conv1 on, even with random weights
    images = torch.randn(24, 3, 64, 64, generator=g) * 0.5 + labels[:, None, None, None] * 1.5
    table = layer_analysis(model, images, labels, Cs=(0.01, 1.0), folds=3, spatial_pool=2)
    assert list(table.columns) == ["layer", "classifier", "C", "accuracy", "accuracy_std", "n_features"]
    assert list(table.layer.unique()) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert set(table.classifier) == {"linear_svm", "softmax"} and len(table) == 16
    assert set(table.C) <= {0.01, 1.0}
    assert table.set_index(["layer", "classifier"]).loc[("conv1", "softmax"), "n_features"] == 64 * 2 * 2
    assert (table[table.layer == "conv1"].accuracy >= 0.9).all()
    conv1 = {"conv1": model.analysis_layers()["conv1"]}
    shuffled = layer_analysis(model, images, labels[torch.randperm(24, generator=g)], layers=conv1,
                              Cs=(0.01, 1.0), folds=3, spatial_pool=2)
    assert list(shuffled.layer) == ["conv1", "conv1"]
    assert shuffled.accuracy.max() < 0.9  # no signal, no accuracy


# ---------------------------------------------------------------- Zhu et al.

def test_contrastive_loss_by_hand():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 1])
    # pairs: (0,1) same, d=5 -> 25; (0,2) different, d=0.5 -> (1-0.5)^2; (1,2) different, d>1 -> 0
    expected = (25 + 0.25 + 0) / 3 / 2
    assert contrastive_loss(features, labels).item() == pytest.approx(expected)
    assert contrastive_loss(features[:1], labels[:1]).item() == 0.0


def test_zhu_stage_schedule():
    model = get_model("zhu_multibranch", num_classes=3, pretrained=False, branch_dim=32, gru_units=16)
    assert model.stages == ["branch0", "branch1", "branch2", "branch3", "branch4", "rnn"]
    backbone = model.backbone
    model.freeze_for_stage("branch1")  # EfficientNet level 1 = stage 2 (stride 4)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.stem", "backbone.stages", "branches.1", "branch_classifiers.1"}
    assert all(p.requires_grad for s in backbone.stage_modules[:3] for p in s.parameters())
    assert not any(p.requires_grad for s in backbone.stage_modules[3:] for p in s.parameters())
    model.freeze_for_stage("rnn")
    assert all(p.requires_grad for p in model.parameters())
    full, small = model.param_groups("rnn", 1e-3)
    assert full["lr"] == 1e-3 and small["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in full["params"]} == {id(p) for m in (model.gru, model.classifier) for p in m.parameters()}
    assert len(full["params"]) + len(small["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown stage"):
        model.freeze_for_stage("branch9")


def test_zhu_branch_loss_uses_its_own_branch():
    torch.manual_seed(0)
    model = get_model("zhu_multibranch", num_classes=3, pretrained=False, branch_dim=32, gru_units=16)
    out = model(torch.randn(4, 3, 64, 64))
    labels = torch.tensor([0, 1, 2, 0])
    expected = F.cross_entropy(out["branch_logits"][2], labels) + contrastive_loss(out["branch_features"][2], labels)
    torch.testing.assert_close(model.loss(out, labels, "branch2"), expected)
    torch.testing.assert_close(model.loss(out, labels, "rnn"), F.cross_entropy(out["logits"], labels))


# ---------------------------------------------------------------- Williams et al.

def test_williams_outputs_are_bounded_and_padding_is_ignored():
    torch.manual_seed(0)
    model = get_model("williams_blstm", maxlen=20).eval()
    g = torch.Generator().manual_seed(0)
    a, v, t = (torch.randn(2, 20, d, generator=g) * 100 for d in (74, 35, 300))
    out = model(a, v, t)
    assert ((out >= 0) & (out <= 3)).all() and out.shape == (2, 6)
    lengths = torch.tensor([6, 20])
    padded = model(a, v, t, lengths=lengths)
    short = model(a[:1, :6], v[:1, :6], t[:1, :6])
    torch.testing.assert_close(padded[:1], short)
    torch.testing.assert_close(model(features=torch.cat([a, v, t], 2), lengths=lengths), padded)
    with pytest.raises(ValueError, match="maxlen=20"):
        model(features=torch.zeros(1, 21, 409))


def test_williams_variants_read_only_their_modalities():
    torch.manual_seed(0)
    text_only = get_model("williams_blstm", maxlen=5, modalities=["text"]).eval()
    bimodal = get_model("williams_blstm", maxlen=5, modalities=["text", "audio"]).eval()
    assert text_only.dims == (300,) and bimodal.modalities == ("audio", "text") and bimodal.dims == (74, 300)
    g = torch.Generator().manual_seed(1)
    a, v, t = (torch.randn(3, 5, d, generator=g) for d in (74, 35, 300))
    out = text_only(a, v, t)
    torch.testing.assert_close(text_only(a * 5, None, t), out)  # audio and visual are not read
    torch.testing.assert_close(text_only(features=t), out)
    assert not torch.allclose(bimodal(a * 5, None, t), bimodal(a, None, t))  # audio is
    with pytest.raises(ValueError, match="missing audio"):
        bimodal(None, v, t)
    with pytest.raises(ValueError, match="expected 374"):
        bimodal(features=torch.cat([a, v, t], 2))
    with pytest.raises(ValueError, match="among"):
        get_model("williams_blstm", modalities=["txt"])


def test_williams_adapter_learns_from_labelled_rows_only_and_batches_come_from_collate():
    from types import SimpleNamespace

    from moodlake.data.loader import collate_segments
    from moodlake.train.adapters import adapter_for

    rng = np.random.default_rng(0)
    rows = [SimpleNamespace(segment_id=f"s{i}", video_id="v", audio=rng.normal(size=(4, 74)).astype(np.float32),
                            visual=rng.normal(size=(4, 35)).astype(np.float32),
                            text=rng.normal(size=(4, 300)).astype(np.float32), length=n,
                            labels=np.array([0, 1, 2, 3, 0, 1], np.float32)) for i, n in enumerate((4, 2, 1))]
    batch = collate_segments(rows)
    assert batch["text"].shape == (3, 4, 300) and batch["length"].tolist() == [4, 2, 1]
    adapter = adapter_for("williams_blstm")
    model, build = adapter.build("williams_blstm", {"maxlen": 4, "modalities": ["audio", "text"]},
                                 tuple("abcdef"), None, multi_label=False)
    assert build["num_outputs"] == 6 and build["modalities"] == ["audio", "text"]
    out = adapter.forward(model, batch)
    batch["labels"][1, 0] = float("nan")  # a segment without a usable label: no loss, still scored
    assert adapter.rows(batch).tolist() == [True, False, True] and adapter.scorable(batch).all()
    expected = (out[[0, 2]] - batch["labels"][[0, 2]]).abs().mean()
    torch.testing.assert_close(adapter.loss(model, out, batch), expected)
    with pytest.raises(ValueError, match="lengths outside 1..4"):
        collate_segments([SimpleNamespace(**{**vars(rows[0]), "length": 0})])
    del rows[0].labels  # rows being scored have no labels
    assert "labels" not in collate_segments(rows[:1])


def test_emotion_metrics_by_hand():
    targets = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 0.0], [3.0, 1.0]])
    predictions = np.array([[0.4, 2.6], [1.6, 2.0], [1.9, 0.6], [2.2, 1.0]])
    m = emotion_metrics(predictions, targets, emotions=("joy", "fear"))
    assert m["mae"] == pytest.approx(np.abs(predictions - targets).mean())
    # rounded predictions: joy [0, 2, 2, 2] vs [0, 1, 2, 3]; fear [3, 2, 1, 1] vs [3, 2, 0, 1]
    assert m["four_class_accuracy/joy"] == 0.5 and m["four_class_accuracy/fear"] == 0.75
    assert m["binary_accuracy/joy"] == 1.0 and m["binary_accuracy/fear"] == 0.75
    assert m["pearson_r/joy"] == pytest.approx(np.corrcoef(predictions[:, 0], targets[:, 0])[0, 1])
    assert math.isnan(emotion_metrics(np.ones((3, 1)), np.arange(3.0)[:, None], emotions=("x",))["pearson_r/x"])


# ---------------------------------------------------------------- St. Pierre

def test_stpierre_image_trains_only_the_last_dense_block():
    model = get_model("stpierre_image", pretrained=False)
    trainable = {n.split(".")[1] if n.startswith("backbone") else n.split(".")[0]
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"blocks", "classifier"}
    assert all(p.requires_grad for p in model.backbone.blocks[-1].parameters())
    assert not any(p.requires_grad for p in model.backbone.blocks[-2].parameters())


def test_char_cnn_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    model = get_model("stpierre_char", alphabet_size=30).eval()
    chars = torch.randint(1, 30, (2, 37))
    chars[1, 11:] = 0
    torch.testing.assert_close(model(chars), model(F.pad(chars, (0, 50))))
    torch.testing.assert_close(model(chars[1:, :11]), model(chars)[1:])


def test_fused_model_keeps_both_bases_frozen():
    torch.manual_seed(0)
    model = get_model("stpierre_fused", pretrained=False, alphabet_size=30, units=32).train()
    assert not model.image_model.training and not model.char_model.training
    loss = model(torch.randn(2, 3, 64, 64), torch.randint(1, 30, (2, 20))).sum()
    loss.backward()
    for base in (model.image_model, model.char_model):
        assert all(p.grad is None and not p.requires_grad for p in base.parameters())
    assert model.image_proj[0].weight.grad is not None and model.char_proj[0].weight.grad is not None
