"""The real-data experiments of BENCHMARKS.md: train the multitask model on ../shared/data, evaluate, tabulate.

    .venv/bin/python -m moodlake_dev.experiments [--only vso emotion6 goemotions joint joint-balanced]
        [--seeds 3] [--first-seed 0] [--epochs 15] [--vso-dataset vso-twitter] [--vso-seeds 1]
        [--out bench-results/realdata.json]

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

CPU training (2 cores) uses the production recipe with two changes, recorded in the output:
no augmentation (unless ``--augment``), so the frozen backbone stages can be memoised
(``frozen_cache_mb``), and at most ``--epochs`` epochs (early stopping as in the recipe). Other
overrides (``--image-trainable-stages``, ``--lr``, ``--class-weighting``, ``--text-encoder``,
``--text-trainable-layers``, ``--text-encoder-lr-scale``, ``--image-backbone-lr-scale``, ``--image-dropout``, ``--head-dropout``) are recorded with the results too. Results: mean and standard deviation over
folds or seeds, per run in the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from moodlake.config import Config, load_config
from moodlake.data.build import build_dataset
from moodlake.evaluation import classification_metrics, multilabel_metrics, tune_binary_threshold, tune_thresholds
from moodlake.evaluation.job import Predictions, predict_split
from moodlake.train.launch import train
from moodlake.inference import Predictor

log = logging.getLogger(__name__)

FOLDS = tuple(f"partition{i}" for i in range(1, 6))
TRIMODAL = "image+text+tags"
EXPERIMENTS = ("vso", "emotion6", "goemotions", "joint", "joint-balanced")


def experiment_config(cfg: Config, *, seed: int, epochs: int, cache_mb: int, trainable_stages: int | None = None,
                      class_weighting: str | None = None, text_encoder: str | None = None,
                      text_trainable_layers: int | None = None, augment: bool = False,
                      lr: float | None = None, image_backbone_lr_scale: float | None = None,
                      image_dropout: float | None = None, head_dropout: float | None = None,
                      text_encoder_lr_scale: float | None = None) -> Config:
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


def run_vso(spark, cfg: Config, seeds: list[int], opts: dict, dataset: str = "vso-twitter",
            vso_seeds: int = 1) -> list[dict]:
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
            c = experiment_config(cfg, seed=seed, **opts)
            preds, config, run = _train_and_predict(spark, c, dataset, fold, splits=("val", "test"))
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


def _seeded(spark, cfg, seeds, opts, dataset: str, splits, score) -> list[dict]:
    runs = []
    for seed in seeds:
        c = experiment_config(cfg, seed=seed, **opts)
        preds, config, run = _train_and_predict(spark, c, dataset, splits=splits)
        runs.append({**run, **score(preds, list(config["labels"]))})
        log.info("%s seed %d: %s", dataset, seed, runs[-1])
    return runs


def run_emotion6(spark, cfg, seeds, opts) -> list[dict]:
    return _seeded(spark, cfg, seeds, opts, "emotion6", ("test",),
                   lambda p, labels: {"image_head": score_image_head(p["test"], labels)})


def run_goemotions(spark, cfg, seeds, opts) -> list[dict]:
    return _seeded(spark, cfg, seeds, opts, "goemotions", ("val", "test"),
                   lambda p, labels: {"text_head": score_text_head(p["test"], p["val"], labels)})


def run_joint(spark, cfg, seeds, opts, dataset: str = "ekman-joint") -> list[dict]:
    """Emotion6 images and GoEmotions texts in one model (dataset ``ekman-joint``, whose per-source
    splits are those of the single-source datasets); each head scored on its own source's test posts."""
    def score(p, labels):
        return {"image_head": score_image_head(p["test"], labels),
                "text_head": score_text_head(p["test"], p["val"], labels)}

    return _seeded(spark, cfg, seeds, opts, dataset, ("val", "test"), score)


def run_joint_balanced(spark, cfg, seeds, opts) -> list[dict]:
    """As ``joint`` on ``ekman-joint-balanced``: every Emotion6 training image written 20 times."""
    return run_joint(spark, cfg, seeds, opts, "ekman-joint-balanced")


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


def main(argv: list[str] | None = None) -> dict:
    from moodlake_dev.bench.models import write_report
    from moodlake.logs import setup_logging
    from moodlake.spark import build_spark

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per experiment (VSO: one seed, five folds)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first-seed .. first-seed + seeds - 1 (more seeds later, none repeated)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cache-mb", type=int, default=4096)
    parser.add_argument("--image-trainable-stages", type=int, default=None,
                        help="override the recipe's image_trainable_stages (0: a frozen backbone)")
    parser.add_argument("--class-weighting", choices=["none", "inverse_frequency"], default=None,
                        help="override the recipe's class_weighting")
    parser.add_argument("--text-encoder", choices=["kim_cnn", "minilm"], default=None,
                        help="override the recipe's text extractor (minilm: pretrained all-MiniLM-L6-v2)")
    parser.add_argument("--text-trainable-layers", type=int, default=None,
                        help="with --text-encoder minilm: how many of its top layers to fine-tune")
    parser.add_argument("--augment", action="store_true",
                        help="train with the recipe's augmentation (then no image cache: much slower on CPUs)")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    parser.add_argument("--text-encoder-lr-scale", type=float, default=None,
                        help="with --text-encoder minilm: its layers train at lr times this (recipe: 0.05)")
    parser.add_argument("--image-backbone-lr-scale", type=float, default=None,
                        help="train the image backbone's stages at lr times this (the new layers at lr)")
    parser.add_argument("--image-dropout", type=float, default=None,
                        help="dropout on the pooled image features (the model's image_dropout)")
    parser.add_argument("--head-dropout", type=float, default=None,
                        help="dropout inside the seven classifiers (the model's head_dropout)")
    parser.add_argument("--vso-dataset", default="vso-twitter",
                        help="the dataset of the vso experiment: vso-twitter, or one with the same folds and "
                             "extra unimodal training posts (vso-twitter-plus-images, vso-twitter-plus-texts)")
    parser.add_argument("--vso-seeds", type=int, default=1,
                        help="seeds per VSO fold (from --first-seed); more than 1 also scores their ensemble")
    parser.add_argument("--env", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results/realdata.json"))
    args = parser.parse_args(argv)
    if args.vso_seeds < 1:
        parser.error("--vso-seeds must be at least 1")
    setup_logging()
    cfg = load_config(args.env)
    spark = build_spark(cfg)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results, settings = previous.get("runs", {}), previous.get("settings", {})
    runners = {"vso": functools.partial(run_vso, dataset=args.vso_dataset, vso_seeds=args.vso_seeds),
               "emotion6": run_emotion6, "goemotions": run_goemotions, "joint": run_joint,
               "joint-balanced": run_joint_balanced}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    command = "python -m moodlake_dev.experiments " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.only:
        opts = {"epochs": args.epochs, "cache_mb": args.cache_mb, "trainable_stages": args.image_trainable_stages,
                "class_weighting": args.class_weighting, "text_encoder": args.text_encoder,
                "text_trainable_layers": args.text_trainable_layers, "augment": args.augment, "lr": args.lr,
                "image_backbone_lr_scale": args.image_backbone_lr_scale, "image_dropout": args.image_dropout,
                "head_dropout": args.head_dropout, "text_encoder_lr_scale": args.text_encoder_lr_scale}
        results[name] = runners[name](spark, cfg, seeds, opts)
        # the same overrides under the recipe's own names
        renamed = {"epochs": "max_epochs", "cache_mb": "frozen_cache_mb", "trainable_stages": "image_trainable_stages"}
        changes = {renamed.get(k, k): v for k, v in opts.items()}
        if name == "vso":
            changes["dataset"] = args.vso_dataset
            changes["vso_seeds"] = args.vso_seeds
        settings[name] = {"date": dt.date.today().isoformat(), "command": command, "seeds": seeds,
                          "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                          "recipe_changes": changes}
        summary = summarise(results)
        write_report(args.out, {"summary": summary, "settings": settings, "runs": results})
        print(markdown(summary), flush=True)
    return results


if __name__ == "__main__":
    main()
