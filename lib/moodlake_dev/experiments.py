"""The real-data experiments of BENCHMARKS.md: train the multitask model on ../shared/data, evaluate, tabulate.

    .venv/bin/python -m moodlake_dev.experiments conf/experiments/NAME.yaml [--env ENV] [--set KEY=VALUE ...]

An experiment file (``conf/experiments/``, one per published setting; ``make experiments`` runs them
all) holds everything that produced a figure, in two sections:

    run:                          # the runner's selection
      experiments: [emotion6]     # of vso, emotion6, goemotions, joint, joint-balanced
      seeds: 6                    # seeds first_seed .. first_seed + seeds - 1 (defaults 3 and 0)
      out: bench-results/realdata-e6-frozen-lr1e-4.json   # the results, merged experiment by experiment
    config:                       # a configuration overlay: the keys of conf/*.yaml and `moodlake --set`
      training:
        launcher: inline
        processes: 1
        recipes:
          multitask: {max_epochs: 30, augment: false, frozen_cache_mb: 4096, lr: 1e-4,
                      model: {image_trainable_stages: 0}}

``run`` may also name ``vso_dataset`` (the dataset of ``vso``: ``vso-twitter`` by default, or one with
the same folds and extra unimodal training posts: ``vso-twitter-plus-images``,
``vso-twitter-plus-texts``) and ``vso_seeds`` (seeds per VSO fold from ``first_seed``, default 1; more
than 1 also scores their ensemble). ``config`` is merged after conf/'s layers (``load_config``'s
``layers``) and validated by the configuration's schema, so a misspelt key fails naming the file and
the key; ``training.seed`` is the runner's (one run per seed). ``--set KEY=VALUE`` overrides a
configuration key as ``moodlake --set`` does, and ``--set run.KEY=VALUE`` the selection (``--set
run.first_seed=1``: a further seed, none repeated).

The datasets must be built first in the same lakehouse (``moodlake ingest dataset ...``, ``moodlake
features``, ``moodlake datasets build ...``; ``make experiments`` does all of it). Each experiment
trains with ``moodlake.train.launch.train`` (so every run is recorded in ``moodlake.training_runs``
and registered in ``moodlake.models``, and an interrupted run resumes), then scores the test split
with the registered weights:

- ``vso``: VSO Twitter, its five partitions as five folds (each the test set once; validation
  from the other four), image + tweet text + hashtag. Reported: the trimodal head on the test posts
  that have all three modalities (ROC AUC, macro-F1), and the routed predictions on all of them.
- ``emotion6``: Emotion6, six classes by folder, the held-out hash split; the image head's accuracy.
- ``goemotions``: GoEmotions, Ekman labels, multi-label; the text head's macro-F1 on dev (which is
  the dataset's test split here), with per-class thresholds tuned on the validation split.
- ``joint``: one model trained on Emotion6 images and GoEmotions texts together (Ekman 7 labels:
  the six of Emotion6 plus neutral), its image-only head scored as in ``emotion6`` and its text-only
  head as in ``goemotions``; ``joint-balanced``: the same on ``ekman-joint-balanced``, where every
  Emotion6 training image is written 20 times (``train_repeat``) so that images are in every batch.

CPU training (2 cores): the published files change the production recipe by their ``config``: no
augmentation, so that the frozen backbone stages can be memoised (``frozen_cache_mb``), one inline
process, at most ``max_epochs`` epochs (early stopping as in the recipe), and each its own settings.
The results record the file, the command and the recipe keys the experiment sets
(``recipe_changes``). Results: mean and standard deviation over folds or seeds, per run in the JSON.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from moodlake.config import Config, ConfigError, load_config
from moodlake.config.loader import build_section, parse_text
from moodlake.data.build import build_dataset
from moodlake.evaluation import classification_metrics, multilabel_metrics, tune_binary_threshold, tune_thresholds
from moodlake.evaluation.job import Predictions, predict_split
from moodlake.train.launch import train
from moodlake.inference import Predictor

log = logging.getLogger(__name__)

FOLDS = tuple(f"partition{i}" for i in range(1, 6))
TRIMODAL = "image+text+tags"
EXPERIMENTS = ("vso", "emotion6", "goemotions", "joint", "joint-balanced")


# the multitask recipe's keys that every result's `recipe_changes` carries (None: the recipe's own
# value), in the order of the runner's flags before the experiment files; the first three always valued
RECORDED_CHANGES = ("max_epochs", "frozen_cache_mb", "image_trainable_stages", "class_weighting", "text_encoder",
                    "text_trainable_layers", "augment", "lr", "image_backbone_lr_scale", "image_dropout",
                    "head_dropout", "text_encoder_lr_scale")
_ALWAYS_RECORDED = ("max_epochs", "frozen_cache_mb", "augment")


@dataclass(frozen=True)
class RunSelection:
    """An experiment file's ``run``: which experiments, with which seeds, and where the results go."""

    experiments: tuple[str, ...] = ()
    out: str = ""
    seeds: int = 3
    first_seed: int = 0
    vso_dataset: str = "vso-twitter"
    vso_seeds: int = 1

    def __post_init__(self):
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if not self.experiments or unknown:
            raise ConfigError(f"experiments: {'unknown ' + ', '.join(unknown) if unknown else 'none named'}; "
                              f"of {', '.join(EXPERIMENTS)}")
        if not self.out:
            raise ConfigError("out: the results file must be named")
        if self.seeds < 1 or self.vso_seeds < 1:
            raise ConfigError(f"{'seeds' if self.seeds < 1 else 'vso_seeds'}: must be at least 1")
        if self.first_seed < 0:
            raise ConfigError("first_seed: must be >= 0")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


@dataclass(frozen=True)
class Experiment:
    """An experiment file read and validated: its selection, and the configuration it trains with."""

    path: Path
    run: RunSelection
    cfg: Config                 # conf/'s layers, the file's config, the --set overrides
    given: Mapping[str, Any]    # the file's config with the --set configuration keys nested in (as text)

    def seeded(self, seed: int) -> Config:
        """The configuration of one run: ``cfg`` at ``training.seed`` ``seed``."""
        return dataclasses.replace(self.cfg, training=dataclasses.replace(self.cfg.training, seed=seed))

    def recipe_changes(self) -> dict:
        """The multitask recipe's keys that the experiment sets (the model's keywords beside the
        recipe's own), valued as resolved; :data:`RECORDED_CHANGES` always present."""
        recipe = self.cfg.recipe("multitask")
        overlay = _dig(self.given, "training", "recipes", "multitask")
        given = [k for k in overlay if k != "model"] + list(_dig(overlay, "model"))
        value = lambda k: recipe.model.get(k) if k in recipe.model else getattr(recipe, k, None)  # noqa: E731
        changes = {k: value(k) if k in given or k in _ALWAYS_RECORDED else None for k in RECORDED_CHANGES}
        return {**changes, **{k: value(k) for k in given if k not in changes}}


def _dig(mapping: Mapping, *keys: str) -> Mapping:
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, Mapping) else None
    return mapping if isinstance(mapping, Mapping) else {}


def load_experiment(path: str | Path, env: str | None = None, sets: Sequence[str] = (),
                    environ: Mapping[str, str] | None = None) -> Experiment:
    """Read an experiment file (see the module's docstring) and validate both sections; ``sets``:
    ``KEY=VALUE`` overrides, ``run.KEY`` of the selection, any other key of the configuration."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file is a mapping with run and config")
    for key in data:
        if key not in ("run", "config"):
            raise ConfigError(f"{path}: {key}: unknown key; an experiment file has run and config")
    run, config = data.get("run"), data.get("config") or {}
    for key, section in (("run", run), ("config", config)):
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {key}: expected a mapping, got {type(section).__name__} {section!r}")
    run_sets, config_sets = {}, {}
    for pair in sets:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key = key.strip()
        if key.startswith("run."):
            run_sets[key[len("run."):]] = value
        else:
            config_sets[key] = value
    if "seed" in _dig(config, "training") or "training.seed" in config_sets:
        origin = str(path) if "seed" in _dig(config, "training") else "override training.seed"
        raise ConfigError(f"{origin}: training.seed: the runner's, one run per seed (run.seeds, run.first_seed)")
    selection = build_section(RunSelection, {**run, **{k: parse_text(v) for k, v in run_sets.items()}}, ("run",),
                              {("run",): str(path), **{("run", k): f"override run.{k}" for k in run_sets}})
    cfg = load_config(env, overrides=config_sets, environ=environ, layers=[(str(path), config)])
    given = copy.deepcopy(config)
    for dotted, raw in config_sets.items():
        *parents, last = dotted.split(".")
        cur = given
        for part in parents:
            if not isinstance(cur.get(part), dict):
                cur[part] = {}
            cur = cur[part]
        value = parse_text(raw)  # a mapping (--set training.recipes.multitask.model={...}) merges into the file's
        cur[last] = {**_dig(cur, last), **value} if isinstance(value, dict) else raw
    return Experiment(path, selection, cfg, given)


def _single_label(pred, rows: np.ndarray, labels: list[str], probs: np.ndarray | None = None) -> dict:
    m = classification_metrics(pred.label[rows], (pred.probs if probs is None else probs)[rows], labels)
    return {"n": int(m["n"]), "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "roc_auc": m.get("roc_auc")}


def score_vso(pred, val, labels: list[str]) -> dict:
    """The trimodal head on the test posts with all three modalities, and the routed predictions on all.

    Macro-F1 twice: with the argmax decision, and (``macro_f1_tuned``) with the threshold on the
    positive probability that maximises macro-F1 on the validation posts of the same kind
    (:func:`tune_binary_threshold`); accuracy and AUC are those of the argmax.
    """
    positive = labels.index("positive")
    out = {}
    for part, probs_of in (("trimodal_head", lambda p: p.heads[TRIMODAL]), ("routed", lambda p: p.probs)):
        rows = {s: (p.label >= 0) & (p.masks.all(1) if part == "trimodal_head" else p.usable)
                for s, p in (("test", pred), ("val", val))}
        threshold = tune_binary_threshold(val.label[rows["val"]] == positive, probs_of(val)[rows["val"], positive])
        decided = np.zeros((int(rows["test"].sum()), len(labels)))  # one-hot of the thresholded decision
        says_positive = probs_of(pred)[rows["test"], positive] >= threshold
        decided[says_positive, positive] = decided[~says_positive, 1 - positive] = 1.0
        tuned = classification_metrics(pred.label[rows["test"]], decided, labels)
        out[part] = {**_single_label(pred, rows["test"], labels, probs_of(pred)), "threshold": threshold,
                     "macro_f1_tuned": tuned["macro"]["f1"]}
    return out


def score_image_head(pred, labels: list[str]) -> dict:
    """The image-only head on the labelled posts with an image; single-label accuracy (argmax)."""
    return _single_label(pred, (pred.label >= 0) & pred.masks[:, 0], labels, pred.heads["image"])


def score_text_head(pred, val, labels: list[str]) -> dict:
    """The text-only head's multi-label macro-F1 on the posts with text, thresholds tuned on the
    validation predictions."""
    rows, vrows = pred.masks[:, 1], val.masks[:, 1]
    thresholds = tune_thresholds(val.labels[vrows], val.heads["text"][vrows])
    m = multilabel_metrics(pred.labels[rows], pred.heads["text"][rows], labels, thresholds)
    return {"n": int(m["n"]), "macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"],
            "thresholds": [float(t) for t in thresholds]}


def _train_and_predict(spark, cfg: Config, dataset: str, fold: str | None = None, splits=("test",)):
    started = time.perf_counter()
    build_dataset(spark, cfg, dataset, fold)  # already built: found, not rebuilt
    outcome = train(spark, cfg, dataset, "multitask", fold=fold)
    predictor = Predictor.load(outcome.path)
    config = predictor.config
    preds = {s: predict_split(predictor, f"{config['dataset']['path']}/{s}") for s in splits}
    run = {"dataset": dataset, "fold": fold, "seed": cfg.training.seed, "run_id": outcome.run_id,
           "version": outcome.version, "epochs": outcome.epochs, "best_epoch": outcome.best.get("epoch"),
           "best_val_accuracy": outcome.best.get("val_accuracy"), "best_val_loss": outcome.best.get("val_loss"),
           "part_epochs": outcome.best.get("part_epochs"),
           "seconds": round(time.perf_counter() - started, 1)}
    return preds, config, run


def average_predictions(preds: list[Predictions]) -> Predictions:
    """The mean of several models' probabilities (routed and per head) on the same posts, matched by
    post id (a split's rows may come back in another order). Labels and masks are the first's."""
    first = preds[0]
    order = {pid: i for i, pid in enumerate(first.post_ids)}
    aligned = []
    for p in preds:
        if sorted(p.post_ids) != sorted(first.post_ids):
            raise ValueError("the predictions to average are not on the same posts")
        aligned.append(np.array([order[pid] for pid in p.post_ids]).argsort())  # first's order, from p's rows
    mean = lambda arrays: np.mean([a[idx] for a, idx in zip(arrays, aligned)], axis=0)  # noqa: E731
    return dataclasses.replace(first, probs=mean([p.probs for p in preds]),
                               heads={h: mean([p.heads[h] for p in preds]) for h in first.heads})


def run_vso(spark, exp: Experiment, seeds: list[int], dataset: str = "vso-twitter", vso_seeds: int = 1) -> list[dict]:
    """Five folds of ``dataset``: ``vso-twitter``, or a definition with the same folds and more
    training posts (``vso-twitter-plus-images``: Emotion6's images as image-only posts;
    ``vso-twitter-plus-texts``: a tenth of GoEmotions as text-only posts). With ``vso_seeds`` > 1,
    that many seeds per fold (from ``seeds[0]``), each scored alone, and per fold the ensemble
    that averages their probabilities (an entry with ``"ensemble": true``)."""
    runs = []
    fold_seeds = list(range(seeds[0], seeds[0] + vso_seeds))
    for fold in FOLDS:
        tests, vals = [], []
        for seed in fold_seeds:
            preds, config, run = _train_and_predict(spark, exp.seeded(seed), dataset, fold, splits=("val", "test"))
            labels = list(config["labels"])
            runs.append({**run, **score_vso(preds["test"], preds["val"], labels)})
            log.info("vso %s seed %d: %s", fold, seed, runs[-1])
            tests.append(preds["test"])
            vals.append(preds["val"])
        if len(fold_seeds) > 1:
            runs.append({"dataset": dataset, "fold": fold, "ensemble": True, "seeds": fold_seeds,
                         **score_vso(average_predictions(tests), average_predictions(vals), labels)})
            log.info("vso %s ensemble: %s", fold, runs[-1])
    return runs


def _seeded(spark, exp: Experiment, seeds, dataset: str, splits, score) -> list[dict]:
    runs = []
    for seed in seeds:
        preds, config, run = _train_and_predict(spark, exp.seeded(seed), dataset, splits=splits)
        runs.append({**run, **score(preds, list(config["labels"]))})
        log.info("%s seed %d: %s", dataset, seed, runs[-1])
    return runs


def run_emotion6(spark, exp, seeds) -> list[dict]:
    return _seeded(spark, exp, seeds, "emotion6", ("test",),
                   lambda p, labels: {"image_head": score_image_head(p["test"], labels)})


def run_goemotions(spark, exp, seeds) -> list[dict]:
    return _seeded(spark, exp, seeds, "goemotions", ("val", "test"),
                   lambda p, labels: {"text_head": score_text_head(p["test"], p["val"], labels)})


def run_joint(spark, exp, seeds, dataset: str = "ekman-joint") -> list[dict]:
    """Emotion6 images and GoEmotions texts in one model (dataset ``ekman-joint``, whose per-source
    splits are those of the single-source datasets); each head scored on its own source's test posts."""
    def score(p, labels):
        return {"image_head": score_image_head(p["test"], labels),
                "text_head": score_text_head(p["test"], p["val"], labels)}

    return _seeded(spark, exp, seeds, dataset, ("val", "test"), score)


def run_joint_balanced(spark, exp, seeds) -> list[dict]:
    """As ``joint`` on ``ekman-joint-balanced``: every Emotion6 training image written 20 times."""
    return run_joint(spark, exp, seeds, "ekman-joint-balanced")


def _mean_std(values) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v))}


def summarise(results: dict) -> dict:
    s = {}
    if "vso" in results:  # over folds (and seeds); the seed ensembles' folds apart
        for key, r in (("vso", [x for x in results["vso"] if not x.get("ensemble")]),
                       ("vso_ensemble", [x for x in results["vso"] if x.get("ensemble")])):
            if r:
                s[key] = {f"{part}_{metric}": _mean_std([x[part][metric] for x in r])
                          for part in ("trimodal_head", "routed")
                          for metric in ("roc_auc", "macro_f1", "macro_f1_tuned", "accuracy") if metric in r[0][part]}
    if "emotion6" in results:
        s["emotion6"] = {f"image_head_{m}": _mean_std([x["image_head"][m] for x in results["emotion6"]])
                         for m in ("accuracy", "macro_f1")}
        s["emotion6"]["val_accuracy_best_epoch"] = _mean_std([x.get("best_val_accuracy") for x in results["emotion6"]])
    if "goemotions" in results:
        s["goemotions"] = {"text_head_macro_f1": _mean_std([x["text_head"]["macro_f1"] for x in results["goemotions"]])}
    for joint in ("joint", "joint-balanced"):
        if joint in results:
            r = results[joint]
            s[joint] = {"image_head_accuracy": _mean_std([x["image_head"]["accuracy"] for x in r]),
                        "text_head_macro_f1": _mean_std([x["text_head"]["macro_f1"] for x in r])}
    return s


def _fmt(m: dict) -> str:
    return "n/a" if m["mean"] is None else f"{m['mean']:.3f} ± {m['std']:.3f} (n={m['n']})"


def markdown(summary: dict) -> str:
    lines = ["| experiment | metric | MoodLake (mean ± std) | target |", "|---|---|---:|---:|"]
    targets = {("vso", "trimodal_head_roc_auc"): "≥ 0.80", ("vso", "trimodal_head_macro_f1"): "≥ 0.72",
               ("vso", "trimodal_head_macro_f1_tuned"): "≥ 0.72",
               ("emotion6", "image_head_accuracy"): "≥ 0.58", ("goemotions", "text_head_macro_f1"): "≥ 0.62"}
    for exp, metrics in summary.items():
        for name, m in metrics.items():
            lines.append(f"| {exp} | {name} | {_fmt(m)} | {targets.get((exp, name), '')} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moodlake_dev.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="an experiment file, conf/experiments/NAME.yaml")
    parser.add_argument("--env", default=None,
                        help="the configuration's environment (default: MOODLAKE_ENV, else demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key over the file's (as moodlake --set), or with run.KEY "
                             "the file's run selection, e.g. --set run.first_seed=1")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from moodlake_dev.bench.models import write_report
    from moodlake.logs import setup_logging
    from moodlake.spark import build_spark

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        exp = load_experiment(args.experiment, args.env, args.set)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: configuration error: {e}\n")
    setup_logging()
    spark = build_spark(exp.cfg)
    out = Path(exp.run.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    results, settings = previous.get("runs", {}), previous.get("settings", {})
    runners = {"vso": functools.partial(run_vso, dataset=exp.run.vso_dataset, vso_seeds=exp.run.vso_seeds),
               "emotion6": run_emotion6, "goemotions": run_goemotions, "joint": run_joint,
               "joint-balanced": run_joint_balanced}
    seeds = exp.run.seed_list
    command = "python -m moodlake_dev.experiments " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in exp.run.experiments:
        results[name] = runners[name](spark, exp, seeds)
        changes = exp.recipe_changes()
        if name == "vso":
            changes["dataset"] = exp.run.vso_dataset
            changes["vso_seeds"] = exp.run.vso_seeds
        settings[name] = {"date": dt.date.today().isoformat(), "command": command, "seeds": seeds,
                          "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                          "recipe_changes": changes, "experiment": str(exp.path), "config": exp.given}
        summary = summarise(results)
        write_report(out, {"summary": summary, "settings": settings, "runs": results})
        print(markdown(summary), flush=True)
    return results


if __name__ == "__main__":
    main()
