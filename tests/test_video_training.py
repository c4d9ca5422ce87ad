"""Williams et al.'s early-fusion BLSTM on video segments through the jobs (issue #20 item 3): ``train``
of each variant (the modalities by configuration) registers a model of intensities; ``evaluate`` gives
MAE, binary and 4-class accuracy and Pearson r per emotion next to the random baselines; and on the
synthetic signal, split across the modalities, the trimodal model beats each unimodal one. The data
is the session's ``video_lake`` (tests/video_lake.py)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from moodlake import storage
from moodlake.evaluation import intensity_metrics
from moodlake.evaluation.job import evaluate
from moodlake.inference import SegmentPredictor
from moodlake.train.launch import read_history, train

pytestmark = [pytest.mark.spark, pytest.mark.slow]

EPOCHS = 10
BATCH = 16  # 13 steps an epoch on the 208 training segments (the recipe's 32: 6)
TRIMODAL = ("audio", "visual", "text")
VARIANTS = (TRIMODAL, ("audio",), ("visual",), ("text",))


@pytest.fixture(scope="module")
def trained(spark, video_lake, tmp_path_factory):
    """Each variant trained ``EPOCHS`` epochs (inline) and evaluated on the test split."""
    root = tmp_path_factory.mktemp("video-training")
    # MLflow off: tests/test_tracking_jobs.py covers the record; these runs need only the tables
    c = dataclasses.replace(video_lake.cfg, training=dataclasses.replace(
        video_lake.cfg.training, root=str(root / "runs"), models_root=str(root / "models"), launcher="inline"),
        mlflow=dataclasses.replace(video_lake.cfg.mlflow, enabled=False))
    out = {}
    for modalities in VARIANTS:
        outcome = train(spark, c, "video", "williams_blstm", epochs=EPOCHS, batch_size=BATCH,
                        model_kwargs={"modalities": list(modalities)})
        out[modalities] = (outcome, evaluate(spark, c, outcome.version))
    return c, out


def test_training_registers_a_model_of_intensities_sized_by_the_dataset(spark, video_lake, trained):
    c, out = trained
    outcome, _ = out[TRIMODAL]
    manifest = json.loads(storage.read_text(storage.join(video_lake.build.path, "manifest.json")))
    config = json.loads(storage.read_text(storage.join(outcome.path, "config.json")))
    assert config["task"] == "intensity" and config["labels"] == manifest["labels"]
    assert {k: config["build_kwargs"][k] for k in ("audio_dim", "visual_dim", "text_dim", "maxlen", "num_outputs")} \
        == {"audio_dim": 74, "visual_dim": 35, "text_dim": 300, "maxlen": manifest["maxlen"], "num_outputs": 6}
    assert not storage.exists(storage.join(outcome.path, "vocab.json"))  # the text is word vectors
    history = read_history(storage.join(c.training_root, outcome.run_id))
    assert len(history) == EPOCHS and history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    rows = spark.table(c.table("training_runs")).where(f"run_id = '{outcome.run_id}'").count()
    assert rows == EPOCHS
    # the variants are different runs of different architectures
    assert len({o.run_id for o, _ in out.values()}) == len({o.version for o, _ in out.values()}) == len(VARIANTS)
    # the same command again resumes the finished run: the same version, no new epoch
    again = train(spark, c, "video", "williams_blstm", epochs=EPOCHS, batch_size=BATCH,
                  model_kwargs={"modalities": list(TRIMODAL)})
    assert (again.run_id, again.version, again.epochs) == (outcome.run_id, outcome.version, EPOCHS)


def test_evaluation_gives_intensity_metrics_next_to_the_random_baselines(spark, video_lake, trained):
    from petastorm import make_reader

    c, out = trained
    outcome, result = out[TRIMODAL]
    # the same figures from the test split read directly, through the inference path scoring uses
    with make_reader(video_lake.build.url("test"), num_epochs=1, workers_count=1, shuffle_row_groups=False) as r:
        rows = list(r)
    predictor = SegmentPredictor.load(outcome.path)
    expected = intensity_metrics(np.stack([x.labels for x in rows]), predictor.predict_rows(rows), predictor.labels)
    m = result.metrics["overall"]
    assert m["n"] == len(rows) == video_lake.build.counts["test"]
    assert m["mean"] == pytest.approx(expected["mean"])
    assert m["per_emotion"]["fear"] == pytest.approx(expected["per_emotion"]["fear"])
    baseline = result.metrics["random_baselines"]["random (training distribution)"]["mean"]
    assert m["mean"]["mae"] < 0.6 * baseline["mae"] and m["mean"]["binary_accuracy"] > baseline["binary_accuracy"] + 0.2
    row = spark.table(c.table("evaluations")).where(f"evaluation_id = '{result.evaluation_id}'").first()
    assert row.accuracy == pytest.approx(m["mean"]["binary_accuracy"]) and row.macro_f1 is None
    report = (result.report / "report.md").read_text()
    assert "| random (training distribution) |" in report and "![model vs random](intensity_vs_random.png)" in report
    assert (result.report / "intensity_vs_random.png").stat().st_size > 10_000


def test_the_trimodal_model_beats_each_unimodal_one(trained):
    _, out = trained
    mae = {"+".join(mods): ev.metrics["overall"]["mean"]["mae"] for mods, (_, ev) in out.items()}
    print("\ntest MAE by modalities after", EPOCHS, "epochs:", {k: round(v, 4) for k, v in mae.items()})
    trimodal = mae.pop("+".join(TRIMODAL))
    for modality, unimodal in mae.items():
        assert trimodal < 0.85 * unimodal, (modality, unimodal, trimodal)
