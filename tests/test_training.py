"""Training on synthetic posts: it learns, DDP agrees with one process, a killed run resumes."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moodlake.config import DatasetDefinition, SplitSpec
from moodlake.data.build import build_dataset
from moodlake.evaluation.job import predict_split
from moodlake.inference import Predictor
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.train.launch import make_spec, read_history, train
from moodlake.train.registry import load_registered
from tests.helpers import fast_recipe, training_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def tcfg(spark, cfg, tmp_path_factory):
    """A configuration with a synthetic binary dataset and small, fast recipes."""
    root = tmp_path_factory.mktemp("training")
    # each modality shows the true label with probability 0.5 (else a random one: 75 % right for
    # two labels), independently: together they say more than any one of them
    spec = SyntheticSpec(labels=LABELS, seed=41, image_signal=0.5, text_signal=0.5, tags_signal=0.5,
                         p_text_missing=0.15, p_tags_missing=0.15)
    Ingestor(spark, cfg).run(SyntheticSource(n=1000, spec=spec, label_set_name="sentiment2", name="train-synthetic"))
    run_features(spark, cfg)
    d = DatasetDefinition(sources=("train-synthetic",), label_set="sentiment2",
                          split=SplitSpec(train=0.5, val=0.1, test=0.4, seed=3))
    c = training_config(cfg, root, {"train-synth": d}, fast_recipe(max_epochs=6, cache_mb=1024), reader_workers=2)
    build_dataset(spark, c, "train-synth")
    return c


def test_the_multitask_model_learns_and_fusion_beats_every_single_modality(spark, tcfg):
    outcome = train(spark, tcfg, "train-synth", "multitask")
    assert outcome.epochs == 6
    predictor = Predictor.load(outcome.path)
    pred = predict_split(predictor, predictor.config["dataset"]["path"] + "/test")
    acc = float(np.mean(pred.probs.argmax(1) == pred.label))
    assert acc > 0.7, acc  # chance is 0.5
    full = pred.masks.all(1)
    assert full.sum() >= 150
    head_acc = {h: float(np.mean(pred.heads[h][full].argmax(1) == pred.label[full])) for h in pred.heads}
    for single in ("image", "text", "tags"):
        assert head_acc["image+text+tags"] > head_acc[single] + 0.02, head_acc
    history = spark.table(tcfg.table("training_runs")).where(f"run_id = '{outcome.run_id}'").count()
    assert history == 6


def test_two_processes_through_torchdistributor_learn_and_stay_in_sync(spark, tcfg):
    """TorchDistributor's 2 gloo processes, one Petastorm shard each, through the whole job. That they
    take the same steps as one process is tests/test_ddp_equivalence.py's (parameters within 1e-6)."""
    c = dataclasses.replace(tcfg, training=dataclasses.replace(tcfg.training, launcher="distributor"))
    two = train(spark, c, "train-synth", "multitask", epochs=2, processes=2, new_run=True)
    a, b = two.param_checksums
    assert a == pytest.approx(b, rel=1e-9, abs=1e-9)  # every rank holds the same parameters
    assert [r["processes"] for r in read_history(Path(tcfg.training_root) / two.run_id)] == [2, 2]
    assert two.best["val_accuracy"] > 0.65


def _entry(spec_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moodlake.train.entry", str(spec_path)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_the_minilm_text_extractor_trains_registers_and_reloads(spark, tcfg):
    recipe = tcfg.recipe("multitask")
    minilm = dataclasses.replace(recipe, max_epochs=2, model={**recipe.model, "text_encoder": "minilm",
                                                               "text_trainable_layers": 1})
    c = dataclasses.replace(tcfg, training=dataclasses.replace(
        tcfg.training, recipes={**tcfg.training.recipes, "multitask": minilm}))
    outcome = train(spark, c, "train-synth", "multitask", new_run=True)
    model, config = load_registered(outcome.path)  # rebuilt from the stored arguments, weights from safetensors
    text = model.extractors["text"]
    assert type(text).__name__ == "MiniLMText" and text.frozen_layers == 5
    assert config["build_kwargs"]["char_alphabet"][:2] == ["<PAD>", "<UNK>"]
    pred = predict_split(Predictor.load(outcome.path), config["dataset"]["path"] + "/test")
    rows = pred.masks[:, 1]
    text_acc = float(np.mean(pred.heads["text"][rows].argmax(1) == pred.label[rows]))
    assert text_acc > 0.6, text_acc  # chance 0.5; the text says the label 75 % of the time


def test_a_killed_run_resumes_and_ends_like_an_unbroken_one(tcfg, tmp_path):
    from moodlake.data.build import open_dataset

    build = open_dataset(tcfg, "train-synth")
    base = make_spec(tcfg, build, "multitask", epochs=3)
    spec_paths = {}
    for name in ("broken", "unbroken"):
        spec = {**base, "run_id": name, "run_dir": str(tmp_path / name)}
        Path(spec["run_dir"]).mkdir()
        spec_paths[name] = Path(spec["run_dir"]) / "spec.json"
        spec_paths[name].write_text(json.dumps(spec))

    proc = _entry(spec_paths["broken"])
    # the first checkpoint, not the first metrics line: the history is written before the checkpoint,
    # and a kill between the two left nothing to resume from (seen once)
    checkpoint = tmp_path / "broken" / "checkpoints" / "epoch-0001.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # killed during its second epoch
    proc.wait()
    assert len(read_history(tmp_path / "broken")) == 1
    resumed = _entry(spec_paths["broken"])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming after epoch 1" in out
    unbroken = _entry(spec_paths["unbroken"])
    out2, _ = unbroken.communicate(timeout=600)
    assert unbroken.returncode == 0, out2[-3000:]

    h1, h2 = read_history(tmp_path / "broken"), read_history(tmp_path / "unbroken")
    assert [r["epoch"] for r in h1] == [r["epoch"] for r in h2] == [1, 2, 3]
    for a, b in zip(h1, h2):  # the same training, step for step
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def _rank_pid(rank: int) -> int | None:
    """The pid of DDP rank ``rank`` among this process's descendants (its environment says RANK)."""
    import psutil

    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("RANK") == str(rank) and "LOCAL_RANK" in env:
            found.add(child)
    # the rank itself, not a process it started (which inherits its environment)
    top = [p for p in found if p.ppid() not in {q.pid for q in found}]
    return top[0].pid if top else None


def test_a_killed_ddp_rank_fails_the_run_and_the_next_one_resumes(spark, tcfg, capsys):
    """SIGKILL rank 1 of a 2-process TorchDistributor run after its first checkpoint: the launcher
    fails with one clear line, and the same `train` again resumes after epoch 1 and ends with the
    epochs of an unbroken run, each recorded once."""
    import shutil
    import threading

    import torch

    from moodlake.data.build import open_dataset
    from moodlake.train.launch import TrainingError
    from moodlake.train.loop import latest_checkpoint

    c = dataclasses.replace(tcfg, training=dataclasses.replace(tcfg.training, launcher="distributor"))
    options = dict(epochs=2, processes=2)
    spec = make_spec(c, open_dataset(c, "train-synth"), "multitask", **options)
    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # the run id is a hash of the run: start it afresh
    failure: list[BaseException] = []

    def first_run():
        try:
            train(spark, c, "train-synth", "multitask", **options)
        except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
            failure.append(e)

    thread = threading.Thread(target=first_run)
    thread.start()
    deadline = time.time() + 300
    while latest_checkpoint(run_dir) is None and time.time() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert latest_checkpoint(run_dir) is not None, "no checkpoint within 300 s"
    victim = _rank_pid(1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=300)
    detected_s = time.monotonic() - killed_at
    assert not thread.is_alive(), "the launcher did not notice the dead rank within 300 s"
    assert len(failure) == 1 and isinstance(failure[0], TrainingError), failure
    message = str(failure[0])
    assert "\n" not in message and "the same command run again resumes from its last checkpoint (epoch-0001.pt)" in message
    assert [r["epoch"] for r in read_history(run_dir)] == [1] and Path(str(latest_checkpoint(run_dir))).name == "epoch-0001.pt"
    assert _rank_pid(0) is None and _rank_pid(1) is None  # no rank left behind
    capsys.readouterr()

    t0 = time.monotonic()
    outcome = train(spark, c, "train-synth", "multitask", **options)
    recover_s = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "resuming after epoch 1 (epoch-0001.pt)" in out, out[-3000:]
    assert outcome.run_id == spec["run_id"] and outcome.epochs == 2  # the epochs of an unbroken run
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and [r["processes"] for r in lines] == [2, 2]  # epoch 1 not redone
    last = torch.load(latest_checkpoint(run_dir), map_location="cpu", weights_only=True)
    assert Path(str(latest_checkpoint(run_dir))).name == "epoch-0002.pt" and json.loads(last["state"])["epoch"] == 2
    recorded = [r.epoch for r in spark.table(c.table("training_runs")).where(f"run_id = '{outcome.run_id}'").collect()]
    lost, duplicated = len({1, 2} - set(recorded)), len(recorded) - len(set(recorded)) + len(set(recorded) - {1, 2})
    with capsys.disabled():
        print(f"\nreliability: DDP rank 1 of 2 killed after checkpoint 1: {lost} epochs lost, {duplicated} duplicated; "
              f"failure detected in {detected_s:.1f} s; the next run took {recover_s:.1f} s")
    assert (lost, duplicated) == (0, 0)


def test_unpaired_image_and_text_parts_keep_their_own_best_epoch(spark, tcfg, capsys):
    """Image-only and text-only posts (as the joint Emotion6 + GoEmotions model is trained): the two
    halves of the model share no post, so each keeps the weights of its own best validation epoch."""
    import torch

    only = dict(p_image_missing=1.0, p_text_missing=1.0, p_tags_missing=1.0)
    for name, keep in (("unpaired-images", "p_image_missing"), ("unpaired-texts", "p_text_missing")):
        spec = SyntheticSpec(labels=LABELS, seed=43 + len(name), image_signal=0.9, text_signal=0.9,
                             **{**only, keep: 0.0})
        Ingestor(spark, tcfg).run(SyntheticSource(n=300, spec=spec, label_set_name="sentiment2", name=name))
    run_features(spark, tcfg)
    d = DatasetDefinition(sources=("unpaired-images", "unpaired-texts"), label_set="sentiment2",
                          split=SplitSpec(train=0.6, val=0.2, test=0.2, seed=3))
    c = dataclasses.replace(tcfg, datasets=dataclasses.replace(
        tcfg.datasets, definitions={**tcfg.datasets.definitions, "unpaired": d}))
    build_dataset(spark, c, "unpaired")
    outcome = train(spark, c, "unpaired", "multitask", epochs=4)

    run_dir = Path(c.training_root) / outcome.run_id
    history = read_history(run_dir)
    chosen = outcome.best["part_epochs"]
    assert set(chosen) == {"image", "text"}
    for part in chosen:  # each part's epoch is the one of its lowest validation loss
        losses = [r["val_loss_parts"][part] for r in history]
        assert chosen[part] == 1 + int(np.argmin(losses)), (part, losses)
    assert outcome.best["epoch"] == 1 + int(np.argmin([r["val_loss"] for r in history]))

    def weights(epoch):
        return torch.load(run_dir / "checkpoints" / f"epoch-{epoch:04d}.pt", map_location="cpu",
                          weights_only=True)["model"]

    registered, config = load_registered(outcome.path)
    kept = registered.state_dict()
    owner = {"extractors.image.": "image", "heads.image.": "image", "extractors.text.": "text", "heads.text.": "text"}
    epochs = {p: weights(e) for p, e in {**chosen, "rest": outcome.best["epoch"]}.items()}
    for key, value in kept.items():
        part = next((p for prefix, p in owner.items() if key.startswith(prefix)), "rest")
        assert torch.equal(value, epochs[part][key]), (key, part)
    # the registered metrics are those of the registered (assembled) weights: the validation posts'
    # log loss and accuracy of each post's routed head, computed here through the scoring path
    val = predict_split(Predictor.load(outcome.path), config["dataset"]["path"] + "/val")
    rows = val.usable & (val.label >= 0)
    p_true = np.clip(val.probs[rows][np.arange(int(rows.sum())), val.label[rows]], 1e-7, 1 - 1e-7)
    measured = {"val_loss": float(-np.log(p_true).mean()),
                "val_accuracy": float(np.mean(val.probs[rows].argmax(1) == val.label[rows]))}
    metrics = config["metrics"]
    assert metrics["measured_on"] == "registered weights" and metrics["part_epochs"] == chosen
    assert metrics["val_loss"] == pytest.approx(measured["val_loss"], abs=1e-4), (metrics, measured)
    assert metrics["val_accuracy"] == pytest.approx(measured["val_accuracy"], abs=1e-9), (metrics, measured)
    row = next(r for r in history if r["epoch"] == outcome.best["epoch"])
    with capsys.disabled():
        print(f"\npart selection: parts from epochs {chosen}, whole best epoch {outcome.best['epoch']}: registered "
              f"val loss {metrics['val_loss']:.4f} (measured {measured['val_loss']:.4f}; the best epoch's row "
              f"{row['val_loss']:.4f})")
    # and the registered model scores each modality with its own half, better than chance (0.5)
    pred = predict_split(Predictor.load(outcome.path), config["dataset"]["path"] + "/test")
    for column, head in ((0, "image"), (1, "text")):
        rows = pred.masks[:, column]
        assert rows.sum() >= 20 and not pred.masks[rows][:, 1 - column].any()
        accuracy = float(np.mean(pred.heads[head][rows].argmax(1) == pred.label[rows]))
        assert accuracy > 0.6, (head, accuracy)
