"""The model benchmark runs end to end on tiny inputs and writes its JSON."""
from __future__ import annotations

import json

import torch

from moodlake_dev.bench.models import main


def test_benchmark_writes_a_row_per_model(tmp_path, capsys):
    out = tmp_path / "models.json"
    threads = torch.get_num_threads()
    try:
        main(["--batch", "2", "--size", "64", "--warmup", "1", "--repeats", "2", "--threads", "1",
              "--models", "alexnet", "multitask", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    cpu_rows = [r for r in report["results"] if r["device"] == "cpu"]
    assert [r["model"] for r in cpu_rows] == ["alexnet", "multitask"]
    for r in cpu_rows:
        assert r["mode"] == "eager-fp32" and r["batch"] == 2
        assert 0 < r["images_per_s_min"] <= r["images_per_s_median"] <= r["images_per_s_max"]
    assert report["machine"]["torch_threads"] == 1 and report["machine"]["nproc"] >= 1
    assert "| multitask | cpu | eager-fp32 |" in capsys.readouterr().out
