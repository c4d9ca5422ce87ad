"""The experiment files of conf/experiments (moodlake_dev.experiments, ``make experiments``): each
loads and validates with the real configuration schema, reproduces exactly what the runner's flags
of the line it replaced in the Makefile produced, fails on a misspelt key naming it, and the
Makefile runs every one. No Spark: only the configuration is read."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from moodlake.config import ConfigError, load_config, to_plain
from moodlake_dev.experiments import EXPERIMENTS, build_parser, load_experiment

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "conf" / "experiments").glob("*.yaml"))
ENV = {}  # no MOODLAKE_* variables of the machine running the tests

# The Makefile's `experiments` lines before the experiment files (commit 921ba28), each with the file
# that replaces it.
OLD_LINES = {
    "--only vso --epochs 15 --out bench-results/realdata.json": "vso-recipe",
    "--only emotion6 --seeds 3 --epochs 15 --out bench-results/realdata.json": "emotion6-recipe",
    "--only goemotions joint joint-balanced --seeds 1 --epochs 4 --out bench-results/realdata.json":
        "goemotions-joint-recipe",
    "--only vso --epochs 15 --image-trainable-stages 0 --out bench-results/realdata-frozen.json": "vso-frozen",
    "--only emotion6 --seeds 3 --epochs 15 --image-trainable-stages 0 --out bench-results/realdata-frozen.json":
        "emotion6-frozen",
    "--only joint --seeds 1 --epochs 4 --image-trainable-stages 0 --out bench-results/realdata-frozen.json":
        "joint-frozen",
    "--only goemotions --seeds 3 --epochs 2 --text-encoder minilm --text-trainable-layers 6 "
    "--out bench-results/realdata-minilm.json": "goemotions-minilm6",
    "--only vso --epochs 15 --text-encoder minilm --text-trainable-layers 2 --out bench-results/realdata-minilm.json":
        "vso-minilm2",
    "--only emotion6 --seeds 3 --epochs 15 --augment --image-trainable-stages 3 --lr 1e-4 "
    "--out bench-results/realdata-augment.json": "emotion6-augment-last3-lr1e-4",
    "--only emotion6 --seeds 6 --epochs 30 --image-trainable-stages 0 --lr 1e-4 "
    "--out bench-results/realdata-e6-frozen-lr1e-4.json": "emotion6-frozen-lr1e-4",
    "--only vso --epochs 30 --lr 1e-4 --out bench-results/realdata-vso-lr1e-4.json": "vso-lr1e-4",
    "--only vso --epochs 30 --image-dropout 0.5 --head-dropout 0.25 --out bench-results/realdata-vso-dropout.json":
        "vso-dropout",
    "--only vso --epochs 30 --image-trainable-stages 0 --lr 1e-4 --out bench-results/realdata-vso-frozen-lr1e-4.json":
        "vso-frozen-lr1e-4",
    "--only vso --epochs 15 --vso-dataset vso-twitter-plus-images --out bench-results/realdata-vso-plus-images.json":
        "vso-plus-images",
    "--only vso --epochs 15 --vso-dataset vso-twitter-plus-texts --out bench-results/realdata-vso-plus-texts.json":
        "vso-plus-texts",
    "--only vso --epochs 15 --text-encoder minilm --text-trainable-layers 0 "
    "--out bench-results/realdata-vso-minilm0.json": "vso-minilm0",
    "--only vso --epochs 15 --vso-dataset vso-twitter-plus-texts --text-encoder minilm --text-trainable-layers 0 "
    "--out bench-results/realdata-vso-plus-texts-minilm0.json": "vso-plus-texts-minilm0",
    "--only vso --epochs 15 --vso-seeds 3 --out bench-results/realdata-vso-seeds.json": "vso-recipe-3-seeds",
    "--only joint-balanced --seeds 2 --epochs 2 --image-trainable-stages 0 --lr 1e-4 --text-encoder minilm "
    "--text-trainable-layers 6 --text-encoder-lr-scale 0.5 --out bench-results/realdata-joint-strong.json":
        "joint-balanced-frozen-lr1e-4-minilm6",
}


def _old_flags(line: str) -> argparse.Namespace:
    """The runner's flags as they were (those of the configuration, and the selection's)."""
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--cache-mb", type=int, default=4096)
    p.add_argument("--image-trainable-stages", type=int, default=None)
    p.add_argument("--class-weighting", choices=["none", "inverse_frequency"], default=None)
    p.add_argument("--text-encoder", choices=["kim_cnn", "minilm"], default=None)
    p.add_argument("--text-trainable-layers", type=int, default=None)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--lr", type=float, default=None)
    for flag in ("--text-encoder-lr-scale", "--image-backbone-lr-scale", "--image-dropout", "--head-dropout"):
        p.add_argument(flag, type=float, default=None)
    p.add_argument("--vso-dataset", default="vso-twitter")
    p.add_argument("--vso-seeds", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench-results/realdata.json"))
    return p.parse_args(shlex.split(line))


def _old_experiment_config(cfg, *, seed, epochs, cache_mb, trainable_stages=None, class_weighting=None,
                           text_encoder=None, text_trainable_layers=None, augment=False, lr=None,
                           image_backbone_lr_scale=None, image_dropout=None, head_dropout=None,
                           text_encoder_lr_scale=None):
    """The runner's experiment_config before the experiment files, as it was."""
    recipe = cfg.recipe("multitask")
    if class_weighting is not None:
        recipe = dataclasses.replace(recipe, class_weighting=class_weighting)
    if lr is not None:
        recipe = dataclasses.replace(recipe, lr=lr)
    model = dict(recipe.model)
    if trainable_stages is not None:
        model["image_trainable_stages"] = trainable_stages
    if text_encoder is not None:
        model["text_encoder"] = text_encoder
    if text_trainable_layers is not None:
        model["text_trainable_layers"] = text_trainable_layers
    for key, value in (("image_backbone_lr_scale", image_backbone_lr_scale), ("image_dropout", image_dropout),
                       ("head_dropout", head_dropout), ("text_encoder_lr_scale", text_encoder_lr_scale)):
        if value is not None:
            model[key] = value
    recipe = dataclasses.replace(recipe, augment=augment, frozen_cache_mb=cache_mb, max_epochs=epochs, model=model)
    training = dataclasses.replace(cfg.training, seed=seed, launcher="inline", processes=1,
                                   recipes={**cfg.training.recipes, "multitask": recipe})
    return dataclasses.replace(cfg, training=training)


def _old_opts(a: argparse.Namespace) -> dict:
    return {"epochs": a.epochs, "cache_mb": a.cache_mb, "trainable_stages": a.image_trainable_stages,
            "class_weighting": a.class_weighting, "text_encoder": a.text_encoder,
            "text_trainable_layers": a.text_trainable_layers, "augment": a.augment, "lr": a.lr,
            "image_backbone_lr_scale": a.image_backbone_lr_scale, "image_dropout": a.image_dropout,
            "head_dropout": a.head_dropout, "text_encoder_lr_scale": a.text_encoder_lr_scale}


def _file(name: str) -> Path:
    return REPO / "conf" / "experiments" / f"{name}.yaml"


def test_there_are_experiment_files_and_every_old_line_has_one():
    assert len(FILES) >= 19 and set(OLD_LINES.values()) <= {f.stem for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_experiment_file_loads_and_validates(path):
    exp = load_experiment(path, "demo", environ=ENV)
    assert set(exp.run.experiments) <= set(EXPERIMENTS) and exp.run.out.startswith("bench-results/")
    assert exp.cfg.training.launcher == "inline"  # none of them trains through a launcher on the CPU
    for env in ("demo", "prod"):  # the overlay is valid over every committed environment's layers
        load_experiment(path, env, environ=ENV)


@pytest.mark.parametrize("line", OLD_LINES, ids=list(OLD_LINES.values()))
def test_each_file_reproduces_the_makefile_line_it_replaced(line):
    old = _old_flags(line)
    exp = load_experiment(_file(OLD_LINES[line]), "demo", environ=ENV)
    assert list(exp.run.experiments) == old.only and Path(exp.run.out) == old.out
    seeds = list(range(old.first_seed, old.first_seed + old.seeds))
    assert exp.run.seed_list == seeds
    assert (exp.run.vso_dataset, exp.run.vso_seeds) == (old.vso_dataset, old.vso_seeds)
    base = load_config("demo", environ=ENV)
    for seed in seeds:
        assert to_plain(exp.seeded(seed)) == to_plain(_old_experiment_config(base, seed=seed, **_old_opts(old)))
    # the results record the same recipe changes, under the same names, as the flags did
    renamed = {"epochs": "max_epochs", "cache_mb": "frozen_cache_mb", "trainable_stages": "image_trainable_stages"}
    assert exp.recipe_changes() == {renamed.get(k, k): v for k, v in _old_opts(old).items()}


def test_the_published_emotion6_setting_is_explicit_in_its_file():
    """README's Emotion6 tip: Adam 1e-4 and a frozen backbone, but the measured 0.59 also needed no
    augmentation, the frozen-feature cache and the inline launcher; the file says all of it."""
    path = _file("emotion6-frozen-lr1e-4")
    written = yaml.safe_load(path.read_text())
    recipe = written["config"]["training"]["recipes"]["multitask"]
    assert (float(recipe["lr"]), recipe["model"]["image_trainable_stages"]) == (0.0001, 0)
    assert (recipe["augment"], recipe["frozen_cache_mb"], recipe["max_epochs"]) == (False, 4096, 30)
    assert (written["config"]["training"]["launcher"], written["config"]["training"]["processes"]) == ("inline", 1)
    assert written["run"] == {"experiments": ["emotion6"], "seeds": 6, "first_seed": 0,
                              "out": "bench-results/realdata-e6-frozen-lr1e-4.json"}
    exp = load_experiment(path, "demo", environ=ENV)
    r, base = exp.cfg.recipe("multitask"), load_config("demo", environ=ENV)
    assert (r.lr, r.model["image_trainable_stages"], r.augment, r.frozen_cache_mb, r.max_epochs) == \
        (1e-4, 0, False, 4096, 30)
    assert (exp.cfg.training.launcher, exp.cfg.training.processes) == ("inline", 1)
    # none of it is the configuration's default: without the file, each would differ
    b = base.recipe("multitask")
    assert b.augment and b.frozen_cache_mb == 0 and b.lr == 1e-3 and base.training.launcher != "inline"
    assert exp.run.seed_list == [0, 1, 2, 3, 4, 5]


def test_the_experiment_changes_the_recipe_and_the_launcher_and_nothing_else(tmp_path):
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"run": {"experiments": ["emotion6"], "seeds": 1, "out": "x.json"}, "config": {
        "training": {"launcher": "inline", "processes": 1, "recipes": {"multitask": {
            "max_epochs": 2, "frozen_cache_mb": 64, "lr": 1e-4, "augment": True, "model": {
                "image_trainable_stages": 3, "text_encoder": "minilm", "text_trainable_layers": 6,
                "image_backbone_lr_scale": 0.1, "image_dropout": 0.5, "head_dropout": 0.25,
                "text_encoder_lr_scale": 0.5}}}}}}))
    exp = load_experiment(path, "demo", environ=ENV)
    c, base = exp.seeded(4), load_config("demo", environ=ENV)
    r = c.recipe("multitask")
    assert (r.lr, r.augment, r.max_epochs, r.frozen_cache_mb, r.class_weighting) == \
        (1e-4, True, 2, 64, base.recipe("multitask").class_weighting)
    assert r.model == {**base.recipe("multitask").model, "image_trainable_stages": 3, "text_encoder": "minilm",
                       "text_trainable_layers": 6, "image_backbone_lr_scale": 0.1, "image_dropout": 0.5,
                       "head_dropout": 0.25, "text_encoder_lr_scale": 0.5}
    assert (c.training.seed, c.training.launcher, c.training.processes) == (4, "inline", 1)
    plain, expected = to_plain(c), to_plain(base)
    for d in (plain, expected):
        for key in ("seed", "launcher", "processes"):
            d["training"].pop(key)
        d["training"]["recipes"].pop("multitask")  # compared above
    assert plain == expected


def _copy_with(tmp_path, name: str, edit) -> Path:
    data = yaml.safe_load(_file(name).read_text())
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit,key,hint", [
    (lambda d: d["config"]["training"]["recipes"]["multitask"].update(lrr=0.0001),
     "training.recipes.multitask.lrr", "unknown key (did you mean 'lr'?)"),
    (lambda d: d["config"]["training"]["recipes"]["multitask"]["model"].update(image_trainable_stage=0),
     "training.recipes.multitask.model.image_trainable_stage",
     "not a keyword of the multitask model (did you mean 'image_trainable_stages'?)"),
    (lambda d: d["config"]["training"].update(launcer="inline"), "training.launcer",
     "unknown key (did you mean 'launcher'?)"),
    (lambda d: d["config"]["training"]["recipes"]["multitask"].update(augment="no"),
     "training.recipes.multitask.augment", "expected true or false"),
    (lambda d: d["run"].update(sedes=6), "run.sedes", "unknown key (did you mean 'seeds'?)"),
    (lambda d: d["run"].update(experiments=["emotion7"]), "run.experiments", "unknown emotion7"),
    (lambda d: d["run"].pop("out"), "run.out", "the results file must be named"),
    (lambda d: d.update(confg={}), "confg", "unknown key; an experiment file has run and config"),
    (lambda d: d["config"]["training"].update(seed=3), "training.seed", "the runner's, one run per seed"),
], ids=["recipe", "model", "section", "type", "run", "experiment", "out", "top", "seed"])
def test_a_misspelt_or_wrong_key_fails_naming_the_file_and_the_key(tmp_path, edit, key, hint):
    path = _copy_with(tmp_path, "emotion6-frozen-lr1e-4", edit)
    with pytest.raises(ConfigError) as e:
        load_experiment(path, "demo", environ=ENV)
    assert str(e.value).startswith(f"{path}: {key}: "), str(e.value)
    assert hint in str(e.value)


def test_set_overrides_the_file_and_the_selection_and_is_recorded():
    path = _file("emotion6-frozen-lr1e-4")
    exp = load_experiment(path, "demo", sets=["run.first_seed=6", "run.seeds=2",
                                              "training.recipes.multitask.lr=1e-3",
                                              "training.recipes.multitask.class_weighting=none"], environ=ENV)
    assert exp.run.seed_list == [6, 7] and exp.run.out == "bench-results/realdata-e6-frozen-lr1e-4.json"
    r = exp.cfg.recipe("multitask")
    assert (r.lr, r.class_weighting, r.model["image_trainable_stages"], r.augment) == (1e-3, "none", 0, False)
    assert exp.recipe_changes()["lr"] == 1e-3 and exp.recipe_changes()["class_weighting"] == "none"
    assert exp.given["training"]["recipes"]["multitask"]["lr"] == "1e-3"  # as given
    with pytest.raises(ConfigError, match=r"^override training\.recipes\.multitask\.lrr: .*did you mean 'lr'"):
        load_experiment(path, "demo", sets=["training.recipes.multitask.lrr=1e-3"], environ=ENV)
    with pytest.raises(ConfigError, match=r"^override run\.seeds: run\.seeds: expected an integer"):
        load_experiment(path, "demo", sets=["run.seeds=many"], environ=ENV)
    with pytest.raises(ConfigError, match="^override training.seed: training.seed: the runner's"):
        load_experiment(path, "demo", sets=["training.seed=1"], environ=ENV)


def test_the_runner_takes_a_file_and_no_flag_that_duplicates_the_configuration():
    parser = build_parser()
    args = parser.parse_args(["conf/experiments/vso-recipe.yaml", "--set", "run.first_seed=1", "--env", "demo"])
    assert args.experiment == Path("conf/experiments/vso-recipe.yaml") and args.set == ["run.first_seed=1"]
    flags = {s for a in parser._actions for s in a.option_strings}
    assert flags == {"-h", "--help", "--env", "--set"}


def test_experiments_is_not_an_environment():
    with pytest.raises(ConfigError, match="holds experiment files"):
        load_config("experiments", environ=ENV)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_experiments_runs_every_file_each_writing_its_own_output():
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    dry = subprocess.run(["make", "-n", "-C", str(REPO), "experiments"], capture_output=True, text=True,
                         env=environ, check=True, timeout=60).stdout.splitlines()
    runs = [ln for ln in dry if "-m moodlake_dev.experiments" in ln]
    named = [re.fullmatch(r"MOODLAKE_HOME=\S+ \S+ -m moodlake_dev\.experiments (\S+)", ln) for ln in runs]
    assert all(named), runs  # the file alone: everything else is in it
    assert [m.group(1) for m in named] == [str(f.relative_to(REPO)) for f in FILES]
    features = next(i for i, ln in enumerate(dry) if ln.endswith("moodlake features"))
    assert features < dry.index(runs[0])  # the ingest and features steps first


def _runner_commands(text: str) -> list[str]:
    return re.findall(r"moodlake_dev\.experiments ([^`\n]*)", text)


def test_benchmarks_current_results_name_experiment_files():
    """The table of current results cites each real-data figure by an experiment file; every file any
    command of BENCHMARKS.md or README.md names exists."""
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    current = text[:text.index("## How to run")]
    commands = _runner_commands(current)
    assert len(commands) >= 4, commands
    for command in commands:
        args = build_parser().parse_args(shlex.split(command))
        assert (REPO / args.experiment).is_file(), command
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"conf/experiments/([a-z0-9][a-z0-9.-]*\.yaml)", text + readme)  # NAME.yaml: a placeholder
    # the history's table: each round's flags of the time and the file that replaces them
    rows = [ln for ln in text.splitlines() if re.match(r"\| (first|second|third|fourth|fifth) \|", ln)]
    table = [name for row in rows for name in re.findall(r"`([a-z0-9][a-z0-9.-]*\.yaml)`", row.split("|")[3])]
    assert len(table) >= 19 and "emotion6-frozen-lr1e-4.yaml" in named
    for name in named + table:
        assert (REPO / "conf" / "experiments" / name).is_file(), name


def test_the_results_keep_their_format_and_record_the_file(tmp_path, monkeypatch):
    """The runner's JSON as before (summary, settings with date, command, seeds, machine and
    recipe_changes, runs), plus the experiment file and its configuration; no Spark: the session
    and the training are stand-ins here."""
    import moodlake.logs
    import moodlake.spark
    from moodlake_dev import experiments

    trained = []

    def fake_emotion6(spark, exp, seeds):
        trained.extend((seed, exp.seeded(seed).recipe("multitask").lr) for seed in seeds)
        return [{"seed": s, "image_head": {"accuracy": 0.5, "macro_f1": 0.4}, "best_val_accuracy": 0.5}
                for s in seeds]

    monkeypatch.setattr(moodlake.spark, "build_spark", lambda cfg: None)
    monkeypatch.setattr(moodlake.logs, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(experiments, "run_emotion6", fake_emotion6)
    monkeypatch.setenv("MOODLAKE_HOME", str(tmp_path / "lakehouse"))
    out = tmp_path / "e6.json"
    argv = [str(_file("emotion6-frozen-lr1e-4")), "--env", "demo", "--set", f"run.out={out}", "--set", "run.seeds=2"]
    experiments.main(argv)
    assert trained == [(0, 1e-4), (1, 1e-4)]
    report = json.loads(out.read_text())
    assert set(report) == {"summary", "settings", "runs"} and len(report["runs"]["emotion6"]) == 2
    s = report["settings"]["emotion6"]
    assert set(s) == {"date", "command", "seeds", "machine", "recipe_changes", "experiment", "config"}
    assert s["seeds"] == [0, 1] and s["command"] == "python -m moodlake_dev.experiments " + " ".join(argv)
    assert s["experiment"] == str(_file("emotion6-frozen-lr1e-4"))
    assert s["config"]["training"]["recipes"]["multitask"]["model"] == {"image_trainable_stages": 0}
    assert s["recipe_changes"] == {"max_epochs": 30, "frozen_cache_mb": 4096, "image_trainable_stages": 0,
                                   "class_weighting": None, "text_encoder": None, "text_trainable_layers": None,
                                   "augment": False, "lr": 0.0001, "image_backbone_lr_scale": None,
                                   "image_dropout": None, "head_dropout": None, "text_encoder_lr_scale": None}
