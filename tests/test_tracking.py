"""Experiment tracking and the model registry on MLflow (moodlake.train.tracking), without Spark: a
lakehouse of the module's own with the embedded SQLite store. A training run is logged the way
train() logs it, a registry folder written by registry.save_model is registered and promoted, and
everything is read back with a plain MlflowClient of the test's own (not the module's helpers).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from moodlake.config import load_config
from moodlake.train import registry, tracking

LABELS = ["negative", "positive"]
# three epochs of a run as the training loop writes them to metrics.jsonl (the second improves most)
HISTORY = [
    {"epoch": 1, "phase": "train", "train_loss": 0.69, "val_loss": 0.66, "val_objective": 0.67, "val_accuracy": 0.55,
     "lr": 0.001, "samples_per_s": 120.5, "seconds": 3.25, "processes": 1, "improved": True},
    {"epoch": 2, "phase": "train", "train_loss": 0.52, "val_loss": 0.48, "val_objective": 0.49, "val_accuracy": 0.75,
     "lr": 0.001, "samples_per_s": 130.0, "seconds": 3.0, "processes": 1, "improved": True},
    {"epoch": 3, "phase": "train", "train_loss": 0.41, "val_loss": 0.50, "val_objective": 0.51, "val_accuracy": 0.70,
     "lr": 0.0005, "samples_per_s": 128.0, "seconds": 3.1, "processes": 1, "improved": False},
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("tracking-lakehouse")


@pytest.fixture(scope="module")
def cfg(home):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "MLFLOW_"))}
    return load_config("demo", overrides={"lakehouse.home": str(home)}, environ=environ)


@pytest.fixture(scope="module")
def mlflow_client(cfg, home):
    """The test's own client on the store the configuration names (its path written out here)."""
    from mlflow import MlflowClient

    tracking.client(cfg)  # makes the store's folder
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def make_spec(home: Path, run_id: str, model: str = "stpierre_char", history=HISTORY) -> dict:
    """A run spec as launch.make_spec builds it, with its run folder holding spec.json and metrics.jsonl."""
    run_dir = home / "training" / run_id
    run_dir.mkdir(parents=True)
    spec = {"run_id": run_id, "run_dir": str(run_dir), "model": model,
            "model_kwargs": {"embedding_dim": 4, "channels": 3}, "labels": LABELS, "label_set": "sentiment2",
            "multi_label": False, "recipe": {"optimizer": "adam", "lr": 0.001, "batch_size": 8, "max_epochs": 3},
            "dataset": {"name": "synth", "version": "ds0123", "path": str(home / "datasets" / "synth" / "ds0123")},
            "seed": 7, "use_gpu": False, "torch_threads": 1, "reader_workers": 1, "processes": 2}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return spec


def saved_model(home: Path, spec: dict, seed: int = 0):
    """A tiny character CNN saved into the registry as train() saves it: (version, folder, config, state)."""
    from moodlake.models import get_model

    torch.manual_seed(seed)
    kwargs = {"num_classes": 2, "alphabet_size": 12, "embedding_dim": 4, "channels": 3}
    state = get_model("stpierre_char", **kwargs).state_dict()
    vocab = home / "vocab.json"
    vocab.write_text(json.dumps({"words": [], "tags": [], "chars": list("abcdefghij")}))
    config = {"model": spec["model"], "build_kwargs": kwargs, "labels": LABELS, "label_set": "sentiment2",
              "multi_label": False, "dataset": spec["dataset"], "recipe": spec["recipe"],
              "model_kwargs": spec["model_kwargs"], "run_id": spec["run_id"], "metrics": HISTORY[1],
              "code_revision": "abc123", "preprocessing": "none"}
    version, folder = registry.save_model(state, config, vocab, home / "models")
    return version, folder, {**config, "version": version}, state


def runs_tagged(client, cfg, run_id: str) -> list:
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("moodlake.run_id") == run_id]


def test_the_embedded_store_lives_under_the_lakehouse(cfg, home):
    assert tracking.tracking_uri(cfg) == f"sqlite:///{home}/mlflow/mlflow.db"
    assert tracking.registry_uri(cfg) == tracking.tracking_uri(cfg)
    assert tracking.artifact_root(cfg) == f"file://{home}/mlflow/artifacts"
    assert tracking.registered_model_name(cfg, "multitask") == "moodlake-multitask"
    server = load_config("demo", environ={},
                         overrides={"lakehouse.home": str(home), "mlflow.tracking_uri": "http://mlflow.internal:5000"})
    assert tracking.tracking_uri(server) == "http://mlflow.internal:5000" and tracking.artifact_root(server) is None
    assert tracking.is_server("http://mlflow.internal:5000") and not tracking.is_server(tracking.tracking_uri(cfg))


def test_a_training_run_logs_its_parameters_epochs_and_files(cfg, home, mlflow_client):
    spec = make_spec(home, "stpierre_char-synth-ds0123-run1")
    tracked = tracking.log_training_run(cfg, spec, HISTORY, code_revision="abc123+dirty")

    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    assert run.info.run_id == tracked.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == spec["run_id"]
    exp = mlflow_client.get_experiment(run.info.experiment_id)
    assert exp.name == "moodlake" and exp.artifact_location == f"file://{home}/mlflow/artifacts"
    params = run.data.params
    assert {k: params[k] for k in ("model", "dataset", "dataset_version", "seed", "processes", "label_set")} == {
        "model": "stpierre_char", "dataset": "synth", "dataset_version": "ds0123", "seed": "7", "processes": "2",
        "label_set": "sentiment2"}
    assert float(params["recipe.lr"]) == 0.001 and params["recipe.optimizer"] == "adam"
    assert params["model_kwargs.channels"] == "3"
    assert run.data.tags["moodlake.code_revision"] == "abc123+dirty"
    assert run.data.tags["mlflow.source.git.commit"] == "abc123"
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        history = sorted((m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, key))
        assert history == [(row["epoch"], row[key]) for row in HISTORY], key
    improved = sorted((m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, "improved"))
    assert improved == [(1, 1.0), (2, 1.0), (3, 0.0)]
    assert sorted(f.path for f in mlflow_client.list_artifacts(run.info.run_id, "run")) == ["run/metrics.jsonl",
                                                                                        "run/spec.json"]
    local = mlflow_client.download_artifacts(run.info.run_id, "run/metrics.jsonl", str(home / "dl-run1"))
    assert Path(local).read_bytes() == (Path(spec["run_dir"]) / "metrics.jsonl").read_bytes()


def test_logging_a_run_again_adds_nothing_and_a_resumed_failed_run_finishes(cfg, home, mlflow_client):
    spec = make_spec(home, "stpierre_char-synth-ds0123-run2", history=HISTORY[:2])
    first = tracking.log_training_run(cfg, spec, HISTORY[:2], status="FAILED")
    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    assert run.info.status == "FAILED"
    # the same command again resumes the run: the third epoch comes, the run finishes; then once more
    (Path(spec["run_dir"]) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HISTORY))
    again = tracking.log_training_run(cfg, spec, HISTORY)
    once_more = tracking.log_training_run(cfg, spec, HISTORY)
    assert first.run_id == again.run_id == once_more.run_id
    # the third epoch's 7 metrics and its `improved` flag, nothing of the first two; then nothing
    assert again.metrics_logged == 8 and once_more.metrics_logged == 0
    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    assert run.info.status == "FINISHED"
    history = [(m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(history) == [(r["epoch"], r["val_loss"]) for r in HISTORY]  # each epoch once


def test_a_registered_version_is_the_safetensors_folder_and_registering_again_adds_none(cfg, home, mlflow_client):
    from moodlake.train.registry import load_registered

    spec = make_spec(home, "stpierre_char-synth-ds0123-run3")
    tracking.log_training_run(cfg, spec, HISTORY)
    version, folder, config, state = saved_model(home, spec)
    mv = tracking.register_version(cfg, version, folder, config)
    assert tracking.register_version(cfg, version, folder, config).version == mv.version  # idempotent

    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    versions = mlflow_client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert [(v.name, v.tags["moodlake.version"]) for v in versions] == [("moodlake-stpierre_char", version)]
    every = mlflow_client.search_model_versions("name = 'moodlake-stpierre_char'")
    assert [v.version for v in every if v.tags.get("moodlake.version") == version] == [mv.version]
    got = mlflow_client.get_model_version("moodlake-stpierre_char", mv.version)
    assert got.run_id == run.info.run_id
    assert got.tags["moodlake.path"] == str(folder) and got.tags["moodlake.run_id"] == spec["run_id"]
    assert got.tags["moodlake.dataset_version"] == "ds0123"
    artifacts = f"{home}/mlflow/artifacts/{run.info.run_id}/artifacts/models/{version}"
    assert got.source == f"file://{artifacts}"
    # the version's files are the registry folder's, byte for byte: safetensors and JSON, nothing pickled
    logged = sorted(p.name for p in Path(artifacts).iterdir())
    assert logged == ["config.json", "model.safetensors", "vocab.json"]
    for name in logged:
        assert (Path(artifacts) / name).read_bytes() == (Path(folder) / name).read_bytes(), name
    # what the store holds for the run: JSON and safetensors only (no MLmodel, no .pkl/.pt), and the weights
    # read with safetensors' own reader (which never unpickles)
    from safetensors.torch import load_file

    run_files = [p for p in (home / "mlflow" / "artifacts" / run.info.run_id).rglob("*") if p.is_file()]
    assert sorted({p.suffix for p in run_files}) == [".json", ".jsonl", ".safetensors"], run_files
    assert load_file(str(Path(artifacts) / "model.safetensors")).keys() == state.keys()
    # downloaded through MLflow, it loads with the registry's safetensors loader
    model, loaded = load_registered(tracking.download_model(cfg, version, home / "dl-model"))
    assert loaded["version"] == version
    for key, tensor in state.items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_promote_sets_the_alias_on_one_registered_model_only(cfg, home, mlflow_client):
    spec = make_spec(home, "stpierre_char-synth-ds0123-run4")
    tracking.log_training_run(cfg, spec, HISTORY)
    version, folder, config, _ = saved_model(home, spec, seed=4)
    tracking.register_version(cfg, version, folder, config)
    first = tracking.promote(cfg, version)
    assert tracking.promote(cfg, version).version == first.version  # again: the same
    by_alias = mlflow_client.get_model_version_by_alias("moodlake-stpierre_char", "production")
    assert by_alias.version == first.version and by_alias.tags["moodlake.version"] == version
    assert tracking.production_version(cfg) == version

    # another family's version that MLflow has not seen (registered before tracking): promote registers it
    # from its folder, and the alias leaves the first family's registered model
    other = make_spec(home, "campos_alexnet-synth-ds0123-run5", model="campos_alexnet")
    v2, folder2, config2, _ = saved_model(home, other, seed=5)
    assert json.loads((Path(folder2) / "config.json").read_text())["model"] == "campos_alexnet"
    assert tracking.find_version(cfg, v2) is None
    second = tracking.promote(cfg, v2, folder2)
    assert second.name == "moodlake-campos_alexnet"
    assert mlflow_client.get_model_version_by_alias("moodlake-campos_alexnet", "production").version == second.version
    assert "production" not in mlflow_client.get_registered_model("moodlake-stpierre_char").aliases
    assert tracking.production_version(cfg) == v2
    with pytest.raises(tracking.TrackingError):
        tracking.promote(cfg, "stpierre_char-000000000000")


def segment_model(home: Path, spec: dict, seed: int = 0):
    """A tiny Williams BLSTM of video segments saved into the registry as train() saves it (no vocabulary):
    (version, folder)."""
    from moodlake.models import get_model
    from moodlake.sources.synthetic_video import EMOTIONS

    torch.manual_seed(seed)
    kwargs = {"audio_dim": 4, "visual_dim": 3, "text_dim": 5, "hidden": 4, "dense": 5, "maxlen": 3}
    state = get_model("williams_blstm", **kwargs).state_dict()
    config = {"model": spec["model"], "build_kwargs": kwargs, "labels": list(EMOTIONS), "label_set": "Emotion Labels",
              "multi_label": False, "task": "intensity", "dataset": spec["dataset"], "recipe": spec["recipe"],
              "model_kwargs": {}, "run_id": spec["run_id"], "metrics": {}, "code_revision": "abc123",
              "preprocessing": None}
    return registry.save_model(state, config, None, home / "models")


def test_production_is_per_task_and_a_segment_model_leaves_the_post_model_alone(cfg, home, mlflow_client):
    posts = make_spec(home, "stpierre_char-synth-ds0123-run8")
    tracking.log_training_run(cfg, posts, HISTORY)
    post, post_folder, _, _ = saved_model(home, posts, seed=8)
    tracking.promote(cfg, post, post_folder)
    segments = make_spec(home, "williams_blstm-synthv-ds0123-run9", model="williams_blstm")
    seg, seg_folder = segment_model(home, segments)

    mv = tracking.promote(cfg, seg, seg_folder)  # registered from its folder (no vocab.json), then promoted
    assert mv.name == "moodlake-williams_blstm"
    assert "production" in mlflow_client.get_registered_model("moodlake-stpierre_char").aliases
    assert tracking.production_version(cfg) == tracking.production_version(cfg, registry.POSTS) == post
    assert tracking.production_version(cfg, registry.SEGMENTS) == seg
    # and the other way round: another model of posts promoted leaves the model of video segments
    post2, post2_folder, config2, _ = saved_model(home, posts, seed=9)
    tracking.register_version(cfg, post2, post2_folder, config2)
    tracking.promote(cfg, post2, post2_folder)
    assert tracking.production_version(cfg) == post2
    assert tracking.production_version(cfg, registry.SEGMENTS) == seg
    got = tracking.download_model(cfg, "production", home / "dl-segment", registry.SEGMENTS)
    assert json.loads((got / "config.json").read_text())["version"] == seg and not (got / "vocab.json").exists()


def test_an_evaluation_lands_in_the_training_run(cfg, home, mlflow_client):
    spec = make_spec(home, "stpierre_char-synth-ds0123-run6")
    tracking.log_training_run(cfg, spec, HISTORY)
    _, _, config, _ = saved_model(home, spec, seed=6)
    report = home / "reports" / "ev0001"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# report\n")
    (report / "report.json").write_text("{}")
    headline = {"n": 40, "accuracy": 0.725, "macro_f1": 0.7, "roc_auc": None}
    for _ in range(2):
        rid = tracking.log_evaluation(cfg, config, "ev0001", report, "synth", "test", headline)
    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    assert rid == run.info.run_id
    assert sorted(f.path for f in mlflow_client.list_artifacts(rid, "evaluations/ev0001")) == [
        "evaluations/ev0001/report.json", "evaluations/ev0001/report.md"]
    metrics = mlflow_client.get_run(rid).data.metrics
    assert metrics["eval.synth.test.accuracy"] == 0.725 and metrics["eval.synth.test.n"] == 40
    assert "eval.synth.test.roc_auc" not in metrics
    assert len(mlflow_client.get_metric_history(rid, "eval.synth.test.accuracy")) == 1
    assert run.data.tags["moodlake.evaluation.synth.test"] == "ev0001"


def test_train_records_the_run_from_its_folder_and_a_failed_recording_never_hides_the_training_error(
        cfg, home, mlflow_client, caplog):
    """What train() calls after its processes end (launch._track): the run folder's metrics.jsonl, where a
    resumed epoch's later line wins, as in moodlake.training_runs."""
    from moodlake.train import launch

    spec = make_spec(home, "stpierre_char-synth-ds0123-run7")
    with open(Path(spec["run_dir"]) / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**HISTORY[2], "val_loss": 0.45}) + "\n")  # epoch 3 again, after a restart
    launch._track(cfg, spec, "FINISHED")
    [run] = runs_tagged(mlflow_client, cfg, spec["run_id"])
    assert sorted((m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")) == [
        (1, 0.66), (2, 0.48), (3, 0.45)]
    assert run.data.tags["moodlake.code_revision"] == registry.code_revision()
    # a store that cannot be used: a failed run's recording is logged (the training error stays the one
    # raised); a finished run's fails the command, which the same command again repairs
    broken = load_config("demo", environ={},
                         overrides={"lakehouse.home": str(home), "mlflow.tracking_uri": "nosuch://x"})
    with caplog.at_level(logging.ERROR, logger="moodlake.train.launch"):
        launch._track(broken, spec, "FAILED")
    assert "recording the failed run in MLflow failed" in caplog.text
    with pytest.raises(Exception):
        launch._track(broken, spec, "FINISHED")
    off = load_config("demo", environ={}, overrides={"lakehouse.home": str(home), "mlflow.enabled": "false",
                                                      "mlflow.tracking_uri": "nosuch://x"})
    launch._track(off, spec, "FINISHED")  # tracking off: nothing to do, nothing raised


def test_tracking_off_refuses_plainly(home):
    off = load_config("demo", overrides={"lakehouse.home": str(home), "mlflow.enabled": "false"}, environ={})
    assert not tracking.enabled(off)
    with pytest.raises(tracking.TrackingError, match="mlflow.enabled"):
        tracking.client(off)


# --------------------------------------------------------------------------- moodlake ui


def test_ui_command_serves_the_configured_stores_on_loopback(cfg, home):
    cmd = tracking.ui_command(cfg, 5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    opts = dict(zip(cmd[4::2], cmd[5::2]))
    assert opts == {"--backend-store-uri": f"sqlite:///{home}/mlflow/mlflow.db",
                    "--default-artifact-root": f"file://{home}/mlflow/artifacts",
                    "--host": "127.0.0.1", "--port": "5123", "--workers": "1"}
    assert tracking.ui_command(cfg)[-3] == "5000"  # mlflow.ui_port
    env = tracking.ui_environment({"PATH": "/bin"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    split = load_config("demo", overrides={"lakehouse.home": str(home), "mlflow.registry_uri": "sqlite:////r/reg.db"},
                        environ={})
    assert tracking.ui_command(split, 1)[tracking.ui_command(split, 1).index("--registry-store-uri") + 1] == \
        "sqlite:////r/reg.db"


def test_moodlake_ui_dry_run_prints_the_command_without_spark(home, monkeypatch, capsys, fresh_logging):
    import shlex

    from moodlake import cli

    for k in [k for k in os.environ if k.startswith(("MOODLAKE", "FLICKR_", "MLFLOW_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MOODLAKE_HOME", str(home))
    monkeypatch.setattr("moodlake.spark.build_spark", lambda *a, **k: pytest.fail("moodlake ui started Spark"))
    assert cli.main(["ui", "--port", "5999", "--dry-run"]) == 0
    words = shlex.split(capsys.readouterr().out.strip())
    assert words[words.index("--host") + 1] == "127.0.0.1" and words[words.index("--port") + 1] == "5999"
    assert words[words.index("--backend-store-uri") + 1] == f"sqlite:///{home}/mlflow/mlflow.db"
    assert cli.main(["ui", "--set", "mlflow.tracking_uri=http://mlflow.internal:5000"]) == 0
    assert "http://mlflow.internal:5000" in capsys.readouterr().out


@pytest.mark.slow
def test_the_ui_starts_answers_on_loopback_and_shows_the_registry(cfg, home, mlflow_client):
    """The UI server of `moodlake ui` starts, answers HTTP on 127.0.0.1 with its pages and the REST API over
    the lakehouse's store (the registered models of the tests above), then stops."""
    assert tracking.ui_available(), "the MLflow UI's pages are not installed (the mlflow wheel)"
    spec = make_spec(home, "stpierre_char-synth-ds0123-ui")
    tracking.log_training_run(cfg, spec, HISTORY)
    version, folder, config, _ = saved_model(home, spec, seed=9)
    tracking.register_version(cfg, version, folder, config)
    names = sorted(rm.name for rm in mlflow_client.search_registered_models())
    assert "moodlake-stpierre_char" in names
    port = tracking.free_port()
    log = home / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(tracking.ui_command(cfg, port), env=tracking.ui_environment(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"the UI server exited ({proc.returncode}): {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer in 180 s: {log.read_text()[-3000:]}"
            time.sleep(1)
        with urllib.request.urlopen(base + "/", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        with urllib.request.urlopen(base + "/api/2.0/mlflow/registered-models/search", timeout=30) as r:
            served = sorted(m["name"] for m in json.load(r)["registered_models"])
        assert served == names
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group this test started (the server and the uvicorn worker it starts)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone already
            break
        try:
            proc.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=30)
