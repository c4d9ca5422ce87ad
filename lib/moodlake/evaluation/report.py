"""Evaluation report (issue #5): confusion-matrix and ROC PNGs, a Markdown report and its metrics as JSON.

    sections = [
        classification_section("FI test", classification_metrics(y, p, labels)),
        classification_section("VSO test", classification_metrics(ys, ps, ["negative", "positive"]),
                               y_true=ys, y_prob=ps),               # binary: adds the ROC curve
        subset_section("FI test by modality subset", subset_head_accuracy(y, probs_by_head, masks)),
        multilabel_section("GoEmotions test", multilabel_metrics(yt, pt, names, tune_thresholds(yv, pv))),
        intensity_section("CMU-MOSEI test", intensity_metrics(it, ip)),
    ]
    write_report(out_dir, "Evaluation of multitask v3", sections)

A :class:`Section` is plain data: a title, its Markdown body, its metrics, and the figures the
body embeds (file name -> function that draws it to a path). Only :func:`write_report` writes:
the PNGs, ``report.md`` and ``report.json``, all in one folder, so that the Markdown's relative
image links hold wherever the folder goes. Figures are drawn on ``matplotlib.figure.Figure``
objects (no pyplot, no global backend), which the Agg renderer saves as PNG.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from moodlake.models.multitask import HEADS

from .metrics import SubsetHeadTable

DPI = 100
"""Resolution of every PNG: a figure of w x h inches is 100 w x 100 h pixels."""


def confusion_matrix_png(confusion, labels: Sequence[str], path: str | Path, title: str | None = None,
                         normalise: bool = True) -> Path:
    """Save a K x K confusion matrix (rows true class, columns predicted class) as a heat-map PNG at ``path``.

    Every cell is annotated with its count and, when ``normalise``, its row-normalised rate (the
    share of the true class's examples predicted as the column's class; 0 in a row without
    examples), which then also sets the colour (the count otherwise); a colour bar explains it.
    Size: (s + 1.5) x s inches with s = max(4, 0.6 K + 2), at :data:`DPI` (550 x 400 px for K <= 3).
    """
    counts = np.asarray(confusion, dtype=np.int64)
    k = len(labels)
    if counts.shape != (k, k):
        raise ValueError(f"confusion must be [{k}, {k}] for {k} labels, got shape {counts.shape}")
    support = counts.sum(1, keepdims=True)
    rates = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    values, vmax = (rates, 1.0) if normalise else (counts, max(int(counts.max()), 1))
    side = max(4.0, 0.6 * k + 2)
    fig = Figure(figsize=(side + 1.5, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    heat = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(heat, ax=ax, label="share of the true class" if normalise else "examples")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i, j in np.ndindex(k, k):
        text = f"{counts[i, j]}\n{rates[i, j]:.0%}" if normalise else str(counts[i, j])
        ax.text(j, i, text, ha="center", va="center", fontsize=9 if k <= 10 else 6,
                color="white" if values[i, j] > vmax / 2 else "black")
    fig.savefig(path, format="png")
    return Path(path)


def roc_curve_png(y_true, y_score, path: str | Path, title: str | None = None) -> Path:
    """Save the ROC curve of binary ``y_true`` (bool [N], True = positive class) and scores ``y_score`` [N].

    5 x 5 inches at :data:`DPI`; the legend gives the area under the curve; the diagonal is chance.
    """
    fpr, tpr, _ = roc_curve(np.asarray(y_true, dtype=bool), np.asarray(y_score, dtype=np.float64))
    fig = Figure(figsize=(5, 5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"ROC (AUC = {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="false positive rate", ylabel="true positive rate")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right")
    fig.savefig(path, format="png")
    return Path(path)


@dataclass(frozen=True)
class Section:
    """One part of the report: ``## title``, a Markdown ``body``, the ``metrics`` written to report.json
    under the title, and the ``figures`` the body embeds by relative path (file name -> draw(path))."""

    title: str
    body: str
    metrics: Mapping
    figures: Mapping[str, Callable[[Path], object]] = field(default_factory=dict)


def _slug(title: str) -> str:
    """File-name stem of a title: lower case, runs of other characters than a-z and 0-9 as one "-"."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _fmt(value) -> str:
    """A table cell: strings as they are ("|" escaped), integers whole, other numbers to 3 decimals, NaN as "–"."""
    if isinstance(value, str):
        return value.replace("|", r"\|")
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "–" if math.isnan(value) else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _prf_table(metrics: Mapping, thresholds: bool = False) -> str:
    """Per-class precision, recall, F1 and support, then the micro, macro and weighted averages
    (St. Pierre's Table 4 layout); the averages' support is the total of the classes' supports."""
    columns = ["precision", "recall", "f1"]
    rows = [[name, *([row["threshold"]] if thresholds else []), *(row[c] for c in columns), row["support"]]
            for name, row in metrics["per_class"].items()]
    total = sum(row["support"] for row in metrics["per_class"].values())
    rows += [[f"{average} avg", *([""] if thresholds else []), *(metrics[average][c] for c in columns), total]
             for average in ("micro", "macro", "weighted")]
    return _table(["class", *(["threshold"] if thresholds else []), "precision", "recall", "F1", "support"], rows)


def _bullets(items: Mapping[str, object]) -> str:
    return "\n".join(f"- {name}: {_fmt(value)}" for name, value in items.items())


def classification_section(title: str, metrics: Mapping, y_true=None, y_prob=None) -> Section:
    """Section of :func:`~moodlake.evaluation.metrics.classification_metrics`: accuracy, balanced accuracy
    (and ROC AUC when binary), the per-class table with averages, and the confusion matrix PNG.

    For a binary task, ``y_true`` and ``y_prob`` (the arrays the metrics were computed from) add
    an ROC curve PNG of the positive class, unless the ROC AUC is undefined (one class only);
    they are refused for other tasks.
    """
    slug = _slug(title)
    summary = {"examples": metrics["n"], "accuracy": metrics["accuracy"],
               "balanced accuracy": metrics["balanced_accuracy"], "macro F1": metrics["macro_f1"]}
    if "roc_auc" in metrics:
        summary[f"ROC AUC (positive class: {metrics['positive_label']})"] = metrics["roc_auc"]
    confusion_png = f"{slug}-confusion.png"
    body = [_bullets(summary), _prf_table(metrics), f"![Confusion matrix of {title}]({confusion_png})"]
    figures = {confusion_png: lambda path: confusion_matrix_png(metrics["confusion"], metrics["labels"], path,
                                                                title=f"{title}: confusion matrix")}
    if (y_true is None) != (y_prob is None):
        raise ValueError("give both y_true and y_prob for the ROC curve, or neither")
    if y_true is not None and "roc_auc" not in metrics:
        raise ValueError(f"an ROC curve needs a binary task; {title!r} has {len(metrics['labels'])} classes")
    if y_true is not None and not math.isnan(metrics["roc_auc"]):
        positive = metrics["labels"].index(metrics["positive_label"])
        roc_png = f"{slug}-roc.png"
        figures[roc_png] = lambda path: roc_curve_png(np.asarray(y_true) == positive, np.asarray(y_prob)[:, positive],
                                                      path, title=f"{title}: ROC of class {metrics['positive_label']}")
        body.append(f"![ROC curve of {title}]({roc_png})")
    return Section(title, "\n\n".join(body), metrics, figures)


def multilabel_section(title: str, metrics: Mapping) -> Section:
    """Section of :func:`~moodlake.evaluation.metrics.multilabel_metrics`: macro F1 (the headline), micro F1,
    exact match, and the per-class table with each class's decision threshold and the averages."""
    summary = {"examples": metrics["n"], "macro F1": metrics["macro_f1"], "micro F1": metrics["micro"]["f1"],
               "exact match (subset accuracy)": metrics["exact_match"]}
    note = "A class is predicted when its probability is at least its threshold; support counts label occurrences."
    return Section(title, "\n\n".join([_bullets(summary), note, _prf_table(metrics, thresholds=True)]), metrics)


def subset_section(title: str, table: SubsetHeadTable) -> Section:
    """Section of :func:`~moodlake.evaluation.metrics.subset_head_accuracy` (Pagé Fortin's Tables 1-3)."""
    note = (f"{table.metric} of each head (columns) on the examples whose available modalities are exactly "
            "the row's (n of them); – where the head needs a modality the row lacks. routed: each example "
            "scored by the head of exactly its modalities. all: every example, each head on those it can read.")
    rows = [[subset, int(row["n"]), *(row[head] for head in HEADS), row["routed"]]
            for subset, row in table.frame.iterrows()]
    return Section(title, note + "\n\n" + _table(["subset", "n", *HEADS, "routed"], rows), table.to_dict())


def intensity_section(title: str, metrics: Mapping) -> Section:
    """Section of :func:`~moodlake.evaluation.metrics.intensity_metrics`: one row per emotion and their mean."""
    keys = ("mae", "binary_accuracy", "four_class_accuracy", "pearson_r")
    rows = [[name, *(values[key] for key in keys)] for name, values in metrics["per_emotion"].items()]
    rows.append(["mean", *(metrics["mean"][key] for key in keys)])
    table = _table(["emotion", "MAE", "binary accuracy", "4-class accuracy", "Pearson r"], rows)
    return Section(title, f"- examples: {metrics['n']}\n\n{table}", metrics)


def intensity_baseline_png(model: Mapping, baselines: Mapping[str, Mapping], path: str | Path,
                           title: str | None = None) -> Path:
    """Save per-emotion MAE (left) and binary accuracy (right) of the model and each baseline as grouped
    bars (metrics as :func:`~moodlake.evaluation.metrics.intensity_metrics` gives them). 11 x 4 inches."""
    rows = {"model": model, **baselines}
    names = list(model["per_emotion"])
    fig = Figure(figsize=(11, 4), dpi=DPI, layout="constrained")
    width = 0.8 / len(rows)
    for a, (key, label) in enumerate((("mae", "MAE (lower is better)"), ("binary_accuracy", "binary accuracy"))):
        ax = fig.add_subplot(1, 2, a + 1)
        for i, (who, m) in enumerate(rows.items()):
            ax.bar(np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width,
                   [m["per_emotion"][e][key] for e in names], width, label=who)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel(label)
        if key == "binary_accuracy":
            ax.set_ylim(0, 1)
    fig.axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, format="png")
    return Path(path)


def intensity_baseline_section(title: str, model: Mapping, baselines: Mapping[str, Mapping],
                               figure: str = "intensity_vs_random.png") -> Section:
    """The model's mean metrics next to the random baselines' (rows), and :func:`intensity_baseline_png`."""
    keys = ("mae", "binary_accuracy", "four_class_accuracy", "pearson_r")
    rows = [[who, *(m["mean"][k] for k in keys)] for who, m in {"model": model, **baselines}.items()]
    draws = {m.get("draws") for m in baselines.values()} - {None}
    note = (f"- examples: {model['n']}; each random baseline is the mean of {', '.join(map(str, sorted(draws)))} "
            "seeded draws" if draws else f"- examples: {model['n']}")
    table = _table(["predictor", "MAE", "binary accuracy", "4-class accuracy", "Pearson r"], rows)
    return Section(title, f"{note}\n\n{table}\n\n![model vs random]({figure})",
                   {"model": model["mean"], **{who: m["mean"] for who, m in baselines.items()}},
                   {figure: lambda path: intensity_baseline_png(model, baselines, path)})


def _json_safe(value):
    """``value`` with NaN and infinities as None and NumPy scalars and tuples as plain JSON types."""
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_report(path_dir: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Write ``report.md``, ``report.json`` and the sections' figures into ``path_dir`` (created if need be).

    report.md: ``# title``, then each section as ``## section title`` and its body, whose images
    are linked by file name. report.json: ``{"title": ..., "sections": {section title: metrics}}``
    with undefined values (NaN) as null. Section titles and figure names must be unique; files of
    the same names are overwritten. Returns the path of report.md.
    """
    out = Path(path_dir)
    titles = [section.title for section in sections]
    figures = [name for section in sections for name in section.figures]
    for kind, names in (("section titles", titles), ("figure names", figures)):
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{kind} must be unique, repeated: {repeated}")
    bad = [name for name in figures if Path(name).name != name or name in ("report.md", "report.json")]
    if bad:
        raise ValueError(f"figure names must be plain file names other than report.md and report.json: {bad}")
    out.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for name, draw in section.figures.items():
            draw(out / name)
    markdown = [f"# {title}"] + [f"## {section.title}\n\n{section.body.strip()}" for section in sections]
    (out / "report.md").write_text("\n\n".join(markdown) + "\n", encoding="utf-8")
    metrics = {"title": title, "sections": {section.title: _json_safe(section.metrics) for section in sections}}
    (out / "report.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out / "report.md"
