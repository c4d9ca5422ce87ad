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


def test_tokenizer_benchmark_compares_ids_and_times_three_tokenizers(tmp_path, capsys):
    from moodlake_dev.bench.tokenizer import main as tokenizer_main

    go = tmp_path / "goemotions" / "original"
    go.mkdir(parents=True)
    (go / "labels.txt").write_text("joy\nsadness\n")
    (go / "train.tsv").write_text("I LOVE this, naïve café!\t0\ta1\nso sad 😢\t1\ta2\n", encoding="utf-8")
    (go / "dev.tsv").write_text("東京 ok\t0,1\ta3\n", encoding="utf-8")
    vso = tmp_path / "vso_twitter" / "partition1"
    vso.mkdir(parents=True)
    (vso / "1_happy.txt").write_text("<meta content='Sunny day!'>\n\nwow", encoding="utf-8")
    out = tmp_path / "tokenizer.json"
    report = tokenizer_main(["--data", str(tmp_path), "--texts", "3", "--rounds", "1", "--random", "50",
                             "--encoder-texts", "0", "--out", str(out)])
    assert json.loads(out.read_text())["speed"] == report["speed"]
    assert {k: (g["texts"], g["differing"]) for k, g in report["ids"].items() if k in ("GoEmotions", "VSO Twitter")} \
        == {"GoEmotions": (3, 0), "VSO Twitter": (3, 0)}
    # the known differences: a capital sigma ending a word, CJK U+2B820-U+2B91F (models/minilm.py)
    assert report["ids"]["edge cases"]["differing"] == 2
    assert [r["tokenizer"] for r in report["speed"]] == ["pure Python (before)", "tokenizers, 1 thread",
                                                         "tokenizers, default threads"]
    assert all(r["texts_per_s_median"] > 0 for r in report["speed"])
    assert "| tokenizers, 1 thread |" in capsys.readouterr().out
