"""Evaluation library (issue #5): metrics from predictions (:mod:`.metrics`) and the report (:mod:`.report`).

Pure functions, no Spark: the evaluation job (``moodlake evaluate``) runs the models, calls these,
stores the metric dictionaries in ``moodlake.evaluations`` and writes the report with
:func:`write_report`.
"""
from .metrics import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLD_GRID,
    SubsetHeadTable,
    classification_metrics,
    intensity_metrics,
    random_intensity_baselines,
    multilabel_metrics,
    subset_head_accuracy,
    tune_binary_threshold,
    tune_thresholds,
)
from .report import (
    Section,
    classification_section,
    confusion_matrix_png,
    intensity_baseline_png,
    intensity_baseline_section,
    intensity_section,
    multilabel_section,
    roc_curve_png,
    subset_section,
    write_report,
)

__all__ = [
    "DEFAULT_THRESHOLD", "DEFAULT_THRESHOLD_GRID", "SubsetHeadTable", "classification_metrics",
    "intensity_metrics", "random_intensity_baselines", "intensity_baseline_png", "intensity_baseline_section",
    "multilabel_metrics", "subset_head_accuracy", "tune_binary_threshold", "tune_thresholds",
    "Section", "classification_section", "confusion_matrix_png", "intensity_section", "multilabel_section",
    "roc_curve_png", "subset_section", "write_report",
]
