"""Regenerate tests/models/golden/*.json: seeded eval-mode outputs of every registered model.

Run on purpose only, when an architecture or its initialisation changes on purpose:

    .venv/bin/python -m tests.models.make_golden

and say in the commit why the goldens moved.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from moodlake.models import list_models
from tests.models.cases import CASES

GOLDEN_DIR = Path(__file__).parent / "golden"
SEED = 0


def golden_output(name: str) -> torch.Tensor:
    """The eval-mode output of ``name``'s case with weights and inputs drawn from ``SEED``."""
    case = CASES[name]
    torch.manual_seed(SEED)
    model = case.build().eval()
    with torch.no_grad():
        return case.output(model, case.inputs(SEED))


def main() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for name in list_models():
        out = golden_output(name)
        path = GOLDEN_DIR / f"{name}.json"
        path.write_text(json.dumps({"model": name, "seed": SEED, "torch": torch.__version__,
                                    "shape": list(out.shape), "values": out.flatten().tolist()}) + "\n")
        print(f"wrote {path} {tuple(out.shape)}")


if __name__ == "__main__":
    main()
