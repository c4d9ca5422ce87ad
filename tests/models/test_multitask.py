"""The multitask multimodal model: missing-modality gradients, routing, loss terms, refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moodlake.models import get_model
from moodlake.models.multitask import HEADS, MODALITIES, TextCNN
from tests.models.cases import CASES, multitask_batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CASES["multitask"].build()


def _present(mask_row) -> set[str]:
    return {m for m, present in zip(MODALITIES, mask_row) if present}


@pytest.mark.parametrize("absent", MODALITIES)
def test_no_gradient_reaches_the_extractor_of_an_absent_modality(model, absent):
    batch = multitask_batch(3)
    batch["mask"] = torch.ones(7, 3, dtype=torch.bool)
    batch["mask"][:, MODALITIES.index(absent)] = False
    model.train().zero_grad(set_to_none=True)
    model.loss(model(batch), batch).backward()
    absent_params = list(model.extractors[absent].parameters())
    assert all(p.grad is None or not p.grad.any() for p in absent_params)
    for head in HEADS:
        grads = [p.grad for p in model.heads[head].parameters()]
        reached = any(g is not None and g.any() for g in grads)
        assert reached == (absent not in head.split("+")), head
    for other in set(MODALITIES) - {absent}:
        trainable = [p for p in model.extractors[other].parameters() if p.requires_grad]
        assert any(p.grad is not None and p.grad.any() for p in trainable), other


def test_absent_image_of_one_example_gets_no_gradient(model):
    batch = multitask_batch(4)
    batch["image"] = batch["image"].clone().requires_grad_(True)
    model.train().zero_grad(set_to_none=True)
    model.loss(model(batch), batch).backward()
    has_image = batch["mask"][:, 0]
    per_example = batch["image"].grad.abs().flatten(1).sum(1)
    assert (per_example[~has_image] == 0).all()
    assert (per_example[has_image] > 0).all()


def test_extractors_run_only_on_examples_with_the_modality(model):
    batch = multitask_batch(5)
    seen = {}
    hooks = [model.extractors[m].register_forward_hook(
        lambda mod, inputs, out, m=m: seen.__setitem__(m, inputs[0].shape[0])) for m in MODALITIES]
    try:
        model.eval()(batch)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {m: int(batch["mask"][:, i].sum()) for i, m in enumerate(MODALITIES)}


def test_loss_sums_cross_entropy_of_every_usable_head(model):
    batch = multitask_batch(6)
    model.eval()
    outputs = model(batch)
    expected = 0.0
    for i, row in enumerate(batch["mask"].tolist()):
        present = _present(row)
        for head in HEADS:
            if set(head.split("+")) <= present:
                expected += F.cross_entropy(outputs[head][i:i + 1], batch["label"][i:i + 1]).item()
    assert model.loss(outputs, batch).item() == pytest.approx(expected / 7, rel=1e-5)


def test_absent_head_terms_are_exactly_zero(model):
    batch = multitask_batch(7)
    model.eval()
    outputs = model(batch)
    poisoned = {}
    for head, logits in outputs.items():
        usable = torch.tensor([set(head.split("+")) <= _present(r) for r in batch["mask"].tolist()])
        poisoned[head] = torch.where(usable[:, None], logits, torch.full_like(logits, 1e30))
    assert model.loss(poisoned, batch).item() == model.loss(outputs, batch).item()


def test_routing_picks_the_head_of_exactly_the_available_modalities(model):
    batch = multitask_batch(8)  # the seven subsets, one per example
    expected = ["+".join(m for m in MODALITIES if m in _present(row)) for row in batch["mask"].tolist()]
    assert model.route(batch["mask"]) == expected
    assert sorted(expected) == sorted(HEADS)
    model.eval()
    probs = model.predict(batch)
    outputs = model(batch)
    for i, head in enumerate(expected):
        torch.testing.assert_close(probs[i], outputs[head][i].softmax(0))
        for other in HEADS:  # every other head that is usable here gives another answer
            if other != head and set(other.split("+")) <= _present(batch["mask"][i].tolist()):
                assert not torch.allclose(probs[i], outputs[other][i].softmax(0))
    torch.testing.assert_close(probs.sum(1), torch.ones(7))


def test_a_post_without_any_usable_modality_is_refused(model):
    batch = multitask_batch(9)
    batch["mask"][2] = False
    batch["mask"][5] = False
    with pytest.raises(ValueError, match=r"examples \[2, 5\] have no usable modality"):
        model.eval().predict(batch)
    with pytest.raises(ValueError, match=r"examples \[2, 5\]"):
        model(batch)


def test_modalities_absent_from_the_whole_batch_may_be_left_out(model):
    batch = multitask_batch(10)
    text_only = {"text": batch["text"], "mask": torch.tensor([[False, True, False]] * 7), "label": batch["label"]}
    probs = model.eval().predict(text_only)
    assert probs.shape == (7, 6) and torch.isfinite(probs).all()
    with pytest.raises(ValueError, match="no 'image'"):
        model({"text": batch["text"], "mask": torch.tensor([[True, True, False]] * 7)})


def test_text_cnn_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    cnn = TextCNN(vocab_size=50).eval()
    words = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 0], [3, 4, 0, 0, 0, 0, 0, 0]])
    padded = F.pad(words, (0, 100))
    torch.testing.assert_close(cnn(words), cnn(padded))
    with pytest.raises(ValueError, match="more than max_words=150"):
        cnn(F.pad(words, (0, 143)))


def test_label_set_is_configuration():
    from moodlake.config import load_config

    cfg = load_config(environ={})
    for name in ("mikels8", "ekman6", "ekman7", "sentiment2"):
        labels = cfg.label_set(name)
        m = get_model("multitask", labels=labels, vocab_size=20, tag_vocab_size=10, pretrained=False)
        assert m.labels == labels and m.heads["image+text+tags"].mlp[-1].out_features == len(labels)
    assert len(m.labels) == 2 and m.labels == ("negative", "positive")
    m = get_model("multitask", labels=["calm", "angry", "happy"], vocab_size=20, tag_vocab_size=10, pretrained=False)
    assert m.num_classes == 3
    with pytest.raises(TypeError, match="cfg.label_set"):
        get_model("multitask", labels="plutchik", vocab_size=20, tag_vocab_size=10, pretrained=False)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("multitask", vocab_size=20, tag_vocab_size=10, pretrained=False)


def test_word_vectors_initialise_the_text_embedding_and_image_backbone_can_be_frozen():
    vectors = torch.randn(20, 50)
    m = get_model("multitask", num_classes=8, vocab_size=20, tag_vocab_size=10, word_vectors=vectors, pretrained=False,
                  image_trainable_stages=1)
    torch.testing.assert_close(m.extractors["text"].embedding.weight, vectors)
    backbone = m.extractors["image"].backbone
    trainable = [i for i, s in enumerate(backbone.stage_modules) if all(p.requires_grad for p in s.parameters())]
    assert trainable == [len(backbone.stage_modules) - 1]
    m.train()
    assert not backbone.stem.bn.training and backbone.head.bn.training


def test_multi_label_uses_binary_cross_entropy_on_the_multi_hot_labels():
    torch.manual_seed(0)
    m = get_model("multitask", num_classes=3, vocab_size=20, tag_vocab_size=10, pretrained=False,
                  multi_label=True).eval()
    batch = {"text": torch.tensor([[2, 3, 4], [5, 6, 0]]), "tags": torch.tensor([[1], [2]]),
             "mask": torch.tensor([[False, True, True], [False, True, False]]),
             "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    out = m(batch)
    expected = torch.zeros(())
    for head, rows in (("text", [0, 1]), ("tags", [0]), ("text+tags", [0])):
        expected = expected + F.binary_cross_entropy_with_logits(
            out[head][rows], batch["labels"][rows], reduction="sum")
    torch.testing.assert_close(m.loss(out, batch), expected / 2)
    probs = m.predict(batch)
    torch.testing.assert_close(probs[0], out["text+tags"][0].sigmoid())  # routed, per-class sigmoids
    assert not torch.allclose(probs.sum(1), torch.ones(2))


def test_image_backbone_can_train_at_a_fraction_of_the_rate():
    kwargs = dict(num_classes=3, vocab_size=50, tag_vocab_size=20, pretrained=False, image_trainable_stages=2)
    one = get_model("multitask", **kwargs).param_groups(1e-3)
    assert len(one) == 1 and one[0]["lr"] == 1e-3  # scale 1: a single group, as before
    model = get_model("multitask", image_backbone_lr_scale=0.1, **kwargs)
    rest, backbone = model.param_groups(1e-3)
    assert rest["lr"] == 1e-3 and backbone["lr"] == pytest.approx(1e-4)
    trainable = [p for p in model.extractors["image"].backbone.parameters() if p.requires_grad]
    assert {id(p) for p in backbone["params"]} == {id(p) for p in trainable} and trainable
    assert {id(p) for p in model.extractors["image"].fc.parameters()} <= {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(backbone["params"]) == len([p for p in model.parameters() if p.requires_grad])


def test_dropout_options_regularise_in_training_only_and_default_to_the_paper():
    kwargs = dict(num_classes=6, vocab_size=60, tag_vocab_size=30, pretrained=False, image_trainable_stages=0)
    torch.manual_seed(0)
    plain = get_model("multitask", **kwargs)
    # the paper's model: no dropout layer in the image path or the classifiers, the same state dict keys
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.extractors["image"].modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.heads.modules())
    torch.manual_seed(0)
    dropped = get_model("multitask", image_dropout=0.5, head_dropout=0.25, **kwargs)
    assert set(dropped.extractors["image"].state_dict()) == set(plain.extractors["image"].state_dict())
    rates = [m.p for m in dropped.heads["image"].modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.25, 0.25]  # before the 128-unit layer and before the output layer
    assert dropped.extractors["image"].dropout.p == 0.5
    batch = multitask_batch(3)
    batch["mask"] = torch.ones(7, 3, dtype=torch.bool)
    dropped.eval()
    torch.testing.assert_close(dropped(batch)["image"], dropped(batch)["image"])  # eval: deterministic
    dropped.train()
    assert not torch.allclose(dropped(batch)["image"], dropped(batch)["image"])  # train: dropout draws
    extractor, images = dropped.extractors["image"], batch["image"][:2]  # the backbone is frozen: deterministic
    seen = []
    extractor.fc.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    extractor(images)
    pooled = extractor.backbone(images)
    dropped_out = (seen[0] == 0) & (pooled != 0)
    assert 0.3 < dropped_out.float().sum() / (pooled != 0).sum() < 0.7  # about half the features reach it as 0 ...
    kept = seen[0] != 0
    torch.testing.assert_close(seen[0][kept], 2 * pooled[kept])  # ... the rest scaled by 1/(1-p)
    with pytest.raises(ValueError, match="dropout must be in"):
        get_model("multitask", image_dropout=1.0, **kwargs)
