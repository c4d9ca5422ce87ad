"""MLflow as the record, through the real jobs on Spark: ``train`` logs the run and registers the
version, ``promote`` sets the alias, ``evaluate`` logs its report into the run, ``models sync``
mirrors an alias moved in MLflow; ``moodlake.training_runs`` and ``moodlake.models`` say the same.
(tests/test_tracking.py covers the tracking module without Spark.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moodlake.config import DatasetDefinition, SplitSpec
from moodlake.data.build import build_dataset
from moodlake.evaluation.job import evaluate
from moodlake.features import run_features
from moodlake.ingest import Ingestor
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.train import registry, tracking
from moodlake.train.launch import train
from tests.helpers import fast_recipe, training_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def mcfg(spark, cfg, tmp_path_factory):
    """A small synthetic dataset and a 2-epoch recipe; MLflow's embedded store under the lakehouse."""
    root = tmp_path_factory.mktemp("tracking-jobs")
    spec = SyntheticSpec(labels=LABELS, seed=61, image_signal=0.6, text_signal=0.6, tags_signal=0.6)
    Ingestor(spark, cfg).run(SyntheticSource(n=160, spec=spec, label_set_name="sentiment2", name="tracked-synthetic"))
    run_features(spark, cfg)
    d = DatasetDefinition(sources=("tracked-synthetic",), label_set="sentiment2",
                          split=SplitSpec(train=0.6, val=0.2, test=0.2, seed=5))
    c = training_config(cfg, root, {"tracked": d}, fast_recipe(max_epochs=2, cache_mb=256))
    assert tracking.enabled(c) and tracking.tracking_uri(c).startswith("sqlite:///" + cfg.lakehouse.home)
    build_dataset(spark, c, "tracked")
    return c


def test_train_promote_evaluate_and_sync_write_mlflow_and_its_sql_mirror(spark, mcfg, tmp_path):
    client = tracking.client(mcfg)
    outcome = train(spark, mcfg, "tracked", "multitask")

    # the run: one MLflow run per MoodLake run, its epochs the rows of moodlake.training_runs
    run = tracking.find_run(mcfg, outcome.run_id, client)
    assert run is not None and run.info.status == "FINISHED"
    assert run.data.params["model"] == "multitask" and run.data.params["dataset"] == "tracked"
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    rows = {r.epoch: r.val_loss for r in spark.table(mcfg.table("training_runs"))
            .where(f"run_id = '{outcome.run_id}'").collect()}
    assert sorted(logged) == sorted(rows) == [1, 2]
    assert all(logged[e] == pytest.approx(rows[e], rel=1e-9) for e in rows)
    assert {"run/metrics.jsonl", "run/spec.json"} <= {f.path for f in client.list_artifacts(run.info.run_id, "run")}

    # the version: an MLflow model version whose files are the registry folder's, byte for byte
    mv = tracking.find_version(mcfg, outcome.version, client)
    assert mv is not None and mv.name == "moodlake-multitask" and mv.run_id == run.info.run_id
    assert mv.tags[tracking.PATH_TAG] == str(outcome.path)
    got = tracking.download_model(mcfg, outcome.version, tmp_path / "download")
    for name in tracking.MODEL_FILES:
        assert (got / name).read_bytes() == (Path(outcome.path) / name).read_bytes(), name

    # promote: the alias in MLflow, the stage in the table, on that version only
    registry.promote(spark, mcfg, outcome.version)
    assert tracking.production_version(mcfg) == outcome.version
    staged = [r.version for r in spark.table(mcfg.table("models")).where("stage = 'production'").collect()]
    assert staged == [outcome.version]

    # evaluate: the report and the headline figures land in the model's training run
    result = evaluate(spark, mcfg, version=outcome.version, dataset="tracked", split="test")
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, f"evaluations/{result.evaluation_id}")}
    assert f"evaluations/{result.evaluation_id}/report.md" in artifacts, artifacts
    eval_metrics = {k: v for k, v in client.get_run(run.info.run_id).data.metrics.items()
                    if k.startswith("eval.tracked.test.")}
    assert eval_metrics and all(v == pytest.approx(result.headline[k.rsplit(".", 1)[1]])
                                for k, v in eval_metrics.items()), (eval_metrics, result.headline)

    # a second version, its alias moved in MLflow (as in its UI): `models sync` mirrors it
    folder2 = Path(outcome.path)
    config2 = {**json.loads((folder2 / "config.json").read_text()), "run_id": outcome.run_id}
    config2["metrics"] = {**config2["metrics"], "note": "the same weights, registered again with another config"}
    from safetensors.torch import load_file

    version2, path2 = registry.save_model(load_file(str(folder2 / "model.safetensors")), config2,
                                          folder2 / "vocab.json", mcfg.models_root)
    assert version2 != outcome.version
    registry.register(spark, mcfg, version2, path2, {**config2, "version": version2})
    mv2 = tracking.find_version(mcfg, version2, client)
    client.set_registered_model_alias(mv2.name, tracking.PRODUCTION, mv2.version)
    assert registry.sync_stage(spark, mcfg) == version2
    staged = [r.version for r in spark.table(mcfg.table("models")).where("stage = 'production'").collect()]
    assert staged == [version2]

    # everything again: nothing is added twice
    runs_before = len(client.search_runs([run.info.experiment_id]))
    train(spark, mcfg, "tracked", "multitask")
    registry.promote(spark, mcfg, version2)
    assert len(client.search_runs([run.info.experiment_id])) == runs_before
    assert len(client.search_model_versions(f"name = '{mv.name}'")) == len(
        {v.tags.get(tracking.VERSION_TAG) for v in client.search_model_versions(f"name = '{mv.name}'")})
