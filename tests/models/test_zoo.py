"""Every registered model: smoke (shapes, finite), golden outputs for a fixed seed, and overfitting one batch."""
from __future__ import annotations

import json

import pytest
import torch

from moodlake.models import get_model, list_models
from tests.models.cases import CASES
from tests.models.make_golden import GOLDEN_DIR, golden_output

EXPECTED_MODELS = {"multitask", "stpierre_image", "stpierre_char", "stpierre_fused", "campos_alexnet",
                   "zhu_multibranch", "williams_blstm"}


def test_registry_lists_every_family_and_each_has_a_test_case():
    assert set(list_models()) == EXPECTED_MODELS
    assert set(CASES) == set(list_models())


def test_unknown_model_error_lists_registered_names():
    with pytest.raises(ValueError, match="unknown model 'nope'") as err:
        get_model("nope")
    for name in EXPECTED_MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_smoke_shapes_and_finite(name):
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build()
    inputs = case.inputs(1)
    for mode in (True, False):
        model.train(mode)
        out = case.output(model, inputs)
        assert tuple(out.shape) == case.output_shape
        assert torch.isfinite(out).all()
    loss = case.loss(model.train(), inputs)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_golden_outputs(name):
    golden = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
    out = golden_output(name)
    assert list(out.shape) == golden["shape"]
    expected = torch.tensor(golden["values"]).view(golden["shape"])
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_overfits_one_small_batch(name):
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build(**case.overfit_cfg).train()
    inputs = case.inputs(2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=case.lr)
    first = case.loss(model, inputs).item()
    for _ in range(case.steps):
        optimizer.zero_grad()
        loss = case.loss(model, inputs)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = case.loss(model, inputs).item()
        fitted = case.correct(model, inputs)
    assert final < 0.1 * first, f"loss {first:.4f} -> {final:.4f} after {case.steps} steps"
    assert fitted
