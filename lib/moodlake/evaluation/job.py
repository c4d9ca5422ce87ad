"""``moodlake evaluate``: a registered model on a dataset split -> ``moodlake.evaluations`` and a report.

The model (a version, or ``production``) is loaded from the registry and run over the split
(by default the test split of the dataset it was trained on). Then:

- single-label: accuracy, balanced accuracy, per-class precision / recall / F1 with micro, macro
  and weighted averages, the confusion matrix (PNG); for binary sentiment also ROC AUC (and curve);
- multi-label (GoEmotions): per-class thresholds tuned on the validation split, then per-class
  and averaged F1 on the evaluated split (macro-F1 is the headline);
- the multitask model: every head on every modality subset, and the routed predictions
  (Pagé Fortin's Tables 1-3);
- a model of video segments (Williams et al.'s BLSTM, ``task: intensity``): MAE, binary and 4-class
  accuracy and Pearson r per emotion and their mean (:func:`moodlake.evaluation.intensity_metrics`),
  next to random baselines drawn from the training split's intensities and uniformly in [0, 3]
  (:func:`moodlake.evaluation.random_intensity_baselines`), with a bar chart of both.

Results go to ``moodlake.evaluations`` (MERGE on model version, dataset version and split) and
to ``<lakehouse.home>/reports/<evaluation_id>/`` (report.md, report.json, PNGs); with MLflow tracking
on, the report folder is logged into the model's training run too (``evaluations/<evaluation_id>/``,
headline figures as metrics ``eval.<dataset>.<split>.<name>``: :mod:`moodlake.train.tracking`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from moodlake.config import Config
from moodlake.logs import SUMMARY

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    post_ids: list[str]
    label: np.ndarray            # [N] class index (-1: none)
    labels: np.ndarray           # [N, K] multi-hot
    probs: np.ndarray            # [N, K] routed (the model's own prediction)
    usable: np.ndarray           # [N] bool: rows the model can score
    masks: np.ndarray            # [N, 3] image, text, tags
    heads: dict[str, np.ndarray] = field(default_factory=dict)  # multitask: every head's probabilities


def predict_split(predictor, url: str, batch_size: int = 64) -> Predictions:
    """Run a registered model (a :class:`moodlake.inference.Predictor`) over every row of a Petastorm
    split, in this process, through the same inference path as nightly scoring."""
    from moodlake.data.loader import PostLoader

    loader = PostLoader(url, batch_size=batch_size, num_labels=len(predictor.labels), rank=0, world_size=1,
                        shuffle=False, drop_last=False, preprocessing=predictor.adapter.preprocessing,
                        ten_crop=predictor.ten_crop)
    out = {k: [] for k in ("post_ids", "label", "labels", "probs", "usable", "masks")}
    heads: dict[str, list] = {}
    for batch in loader:
        p = predictor.predict(batch)
        for head, probs in p.heads.items():
            heads.setdefault(head, []).append(probs)
        out["post_ids"].extend(batch["post_id"])
        for key, value in (("label", batch["label"].numpy()), ("labels", batch["labels"].numpy()), ("probs", p.probs),
                           ("usable", p.usable), ("masks", batch["mask"].numpy())):
            out[key].append(value)
    cat = {k: (np.concatenate(v) if k != "post_ids" else v) for k, v in out.items()}
    return Predictions(cat["post_ids"], cat["label"], cat["labels"], cat["probs"], cat["usable"].astype(bool),
                       cat["masks"].astype(bool), {h: np.concatenate(v) for h, v in heads.items()})


@dataclass
class Evaluation:
    evaluation_id: str
    model_version: str
    dataset: str
    split: str
    metrics: dict
    report: Path

    @property
    def headline(self) -> dict:
        m = self.metrics["overall"]
        if "random_baselines" in self.metrics:  # a model of video segments: intensities
            random = self.metrics["random_baselines"]["random (training distribution)"]["mean"]
            return {"n": m["n"], **m["mean"], "random_mae": random["mae"],
                    "random_binary_accuracy": random["binary_accuracy"]}
        return {k: m.get(k) for k in ("n", "accuracy", "macro_f1", "roc_auc")}

    def summary(self) -> str:
        h = self.headline
        parts = [f"{k} {v:.4f}" for k, v in h.items() if isinstance(v, float)]
        return f"evaluation of {self.model_version} on {self.dataset} {self.split} (n={h['n']}): " + ", ".join(parts) + \
            f"; report {self.report / 'report.md'}"


def metrics_of(pred: Predictions, config: dict, thresholds=None) -> tuple[dict, list]:
    """(metrics, report sections) of predictions."""
    from moodlake import evaluation as ev

    labels = list(config["labels"])
    rows = pred.usable
    sections = []
    if config.get("multi_label"):
        overall = ev.multilabel_metrics(pred.labels[rows], pred.probs[rows], labels, thresholds)
        sections.append(ev.multilabel_section("Routed predictions (multi-label)", overall))
    else:
        rows = rows & (pred.label >= 0)
        overall = ev.classification_metrics(pred.label[rows], pred.probs[rows], labels)
        roc = {"y_true": pred.label[rows], "y_prob": pred.probs[rows]} if len(labels) == 2 else {}
        sections.append(ev.classification_section("Routed predictions", overall, **roc))
    metrics = {"overall": overall}
    if pred.heads:
        y = pred.labels[rows] if config.get("multi_label") else pred.label[rows]
        table = ev.subset_head_accuracy(y, {h: p[rows] for h, p in pred.heads.items()}, pred.masks[rows],
                                        thresholds=thresholds)
        metrics["heads_by_subset"] = table.to_dict()
        sections.append(ev.subset_section("Every head on every modality subset", table))
    return metrics, sections


def predict_segments(predictor, url: str, batch_size: int = 256) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(segment ids, true intensities [N, E], predicted [N, E]) of a registered segment model (a
    :class:`moodlake.inference.SegmentPredictor`) over every row of a segment dataset's split."""
    from moodlake.data.loader import SegmentLoader

    loader = SegmentLoader(url, batch_size=batch_size, num_labels=len(predictor.labels), rank=0, world_size=1,
                           shuffle=False, drop_last=False)
    ids, true, pred = [], [], []
    for batch in loader:
        ids.extend(batch["segment_id"])
        true.append(batch["labels"].numpy())
        pred.append(predictor.predict(batch))
    return ids, np.concatenate(true), np.concatenate(pred)


def intensity_evaluation(predictor, path: str, split: str, seed: int = 0) -> tuple[dict, list]:
    """(metrics, report sections) of a segment model on ``path``'s ``split``: :func:`intensity_metrics`
    per emotion and overall, next to the random baselines drawn from the training split's intensities
    (:func:`moodlake.evaluation.metrics.random_intensity_baselines`)."""
    from moodlake import evaluation as ev

    from moodlake.data.loader import SegmentLoader

    _, y, p = predict_segments(predictor, f"{path}/{split}")
    # the training split's intensities only (the baselines draw from them): no forward pass over it
    train = SegmentLoader(f"{path}/train", batch_size=256, num_labels=len(predictor.labels), rank=0, world_size=1,
                          shuffle=False, drop_last=False)
    y_train = np.concatenate([b["labels"].numpy() for b in train])
    names = predictor.labels
    overall = ev.intensity_metrics(y, p, names)
    baselines = ev.random_intensity_baselines(y_train, len(y), names, seed=seed, y_true=y)
    sections = [ev.intensity_baseline_section("Model and random baselines (mean over emotions)", overall, baselines),
                ev.intensity_section("Model, per emotion", overall)]
    sections += [ev.intensity_section(f"Baseline {who}, per emotion", m) for who, m in baselines.items()]
    return {"overall": overall, "random_baselines": baselines}, sections


def evaluate(spark, cfg: Config, version: str = "production", dataset: str | None = None, fold: str | None = None,
             split: str = "test") -> Evaluation:
    """Evaluate a registered model (module docstring): a post classifier through
    :class:`moodlake.inference.Predictor`, a model of video segments (``task: intensity``) through
    :class:`moodlake.inference.SegmentPredictor`."""
    from delta.tables import DeltaTable

    from moodlake import evaluation as ev
    from moodlake.data.build import open_dataset
    from moodlake.inference import Predictor, SegmentPredictor, read_config
    from moodlake.tables import EVALUATIONS, ensure_tables
    from moodlake.train.registry import resolve
    from moodlake.train import tracking

    folder = resolve(spark, cfg, version)
    intensity = read_config(folder).get("task") == "intensity"
    predictor = SegmentPredictor.load(folder) if intensity else Predictor.load(folder)
    config = predictor.config
    if dataset:
        build = open_dataset(cfg, dataset, fold)
        from moodlake import storage

        manifest = json.loads(storage.read_text(storage.join(build.path, "manifest.json")))
        if manifest["labels"] != list(config["labels"]):
            raise ValueError(f"model {config['version']} predicts {config['labels']}; dataset {dataset} has {manifest['labels']}")
        if (manifest.get("kind") == "segments") != intensity:
            raise ValueError(f"model {config['version']} ({config['model']}) cannot be evaluated on dataset {dataset}: "
                             f"one is of video segments, the other of posts")
        path, ds_name, ds_version = build.path, storage.name(storage.parent(build.path)), build.version
    else:
        path, ds_name, ds_version = config["dataset"]["path"], config["dataset"]["name"], config["dataset"]["version"]
    if intensity:
        metrics, sections = intensity_evaluation(predictor, path, split)
        o = metrics["overall"]
        # the table's accuracy is the binary accuracy (mean over emotions); macro-F1 and ROC AUC do not apply
        columns = (int(o["n"]), o["mean"]["binary_accuracy"], None, None)
    else:
        pred = predict_split(predictor, f"{path}/{split}")
        thresholds = None
        if config.get("multi_label"):
            val = predict_split(predictor, f"{path}/val")
            thresholds = ev.tune_thresholds(val.labels[val.usable], val.probs[val.usable])
        metrics, sections = metrics_of(pred, config, thresholds)
        o = metrics["overall"]
        columns = (int(o["n"]), o.get("accuracy"), float(o["macro"]["f1"]), o.get("roc_auc"))
    eid = hashlib.sha256(f"{config['version']}|{ds_version}|{split}".encode()).hexdigest()[:16]
    report_dir = Path(cfg.lakehouse.home) / "reports" / eid
    title = f"{config['model']} {config['version']} on {ds_name} ({ds_version}) {split}"
    ev.write_report(report_dir, title, sections)
    ensure_tables(spark, cfg, (EVALUATIONS,))
    row = (eid, config["version"], ds_name, ds_version, split, *columns, json.dumps(metrics, default=_json_default),
           str(report_dir), dt.datetime.now(dt.timezone.utc))
    row = tuple(None if isinstance(v, float) and np.isnan(v) else v for v in row)
    (DeltaTable.forName(spark, cfg.table("evaluations")).alias("t")
        .merge(spark.createDataFrame([row], EVALUATIONS.schema).alias("s"), "t.evaluation_id = s.evaluation_id")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    result = Evaluation(eid, config["version"], ds_name, split, metrics, report_dir)
    if tracking.enabled(cfg):
        tracking.log_evaluation(cfg, config, eid, report_dir, ds_name, split, result.headline)
    log.info(result.summary(), extra=SUMMARY)
    return result


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
