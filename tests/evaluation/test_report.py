"""The report: real PNGs of the documented size, report.md linking them, report.json strict JSON."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from moodlake.evaluation import (
    Section,
    classification_metrics,
    classification_section,
    confusion_matrix_png,
    intensity_metrics,
    intensity_section,
    multilabel_metrics,
    multilabel_section,
    subset_head_accuracy,
    subset_section,
    write_report,
)
from tests.evaluation.cases import (
    ML_PROB,
    ML_TRUE,
    Y3_PRED,
    Y3_TRUE,
    intensities_case,
    modality_case,
    one_hot_probs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("k, size", [(3, (550, 400)), (8, (830, 680))])  # (s + 1.5) x s inches, s = max(4, 0.6 K + 2)
def test_confusion_matrix_png_is_a_png_of_the_documented_size(tmp_path, k, size):
    confusion = np.arange(k * k).reshape(k, k)
    confusion[0] = 0  # a class without examples
    path = confusion_matrix_png(confusion, [f"class {i}" for i in range(k)], tmp_path / "c.png", title="t")
    assert png_size(path) == size


def test_confusion_matrix_png_refuses_a_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        confusion_matrix_png([[1, 2, 3]], ["a", "b"], tmp_path / "c.png")


def test_write_report_links_its_figures_and_writes_strict_json(tmp_path):
    three = classification_metrics(Y3_TRUE, one_hot_probs(Y3_PRED, 3), ["a", "b", "c"])
    y_bin = np.array([1, 1, 0, 0, 0])
    p_bin = np.c_[[0.65, 0.2, 0.9, 0.6, 0.65], [0.35, 0.8, 0.1, 0.4, 0.35]]
    binary = classification_metrics(y_bin, p_bin, ["negative", "positive"])
    y, probs, masks, _, _ = modality_case()
    sections = [
        classification_section("Three classes", three),
        classification_section("Sentiment", binary, y_true=y_bin, y_prob=p_bin),
        subset_section("Heads by subset", subset_head_accuracy(y, probs, masks)),
        multilabel_section("Multi-label", multilabel_metrics(ML_TRUE, ML_PROB, ["x", "y"], [0.5, 0.6])),
        intensity_section("Intensities", intensity_metrics(*intensities_case(), ["joy", "fear"])),
    ]
    report = write_report(tmp_path / "out", "Evaluation", sections)

    assert report == tmp_path / "out" / "report.md"
    text = report.read_text()
    for png in ("three-classes-confusion.png", "sentiment-confusion.png", "sentiment-roc.png"):
        assert f"]({png})" in text
        assert png_size(tmp_path / "out" / png)
    assert "three-classes-roc.png" not in text
    assert text.startswith("# Evaluation\n") and "\n## Heads by subset\n" in text
    assert "| micro avg | 0.600 | 0.600 | 0.600 | 10 |" in text
    assert "| c | 0.667 | 0.667 | 0.667 | 3 |" in text
    assert "- ROC AUC (positive class: positive): 0.750" in text
    assert "| image | 6 | " in text and "| – |" in text
    assert "| y | 0.600 | 1.000 | 0.500 | 0.667 | 2 |" in text
    assert "| fear | 0.300 | 0.750 | 0.750 | – |" in text

    def refuse(constant):
        raise AssertionError(f"report.json holds {constant}")

    data = json.loads((tmp_path / "out" / "report.json").read_text(), parse_constant=refuse)
    assert list(data["sections"]) == [section.title for section in sections]
    assert data["sections"]["Three classes"]["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert data["sections"]["Intensities"]["per_emotion"]["fear"]["pearson_r"] is None
    assert data["sections"]["Heads by subset"]["rows"][0]["heads"]["text"] is None


def test_roc_curve_only_for_binary_tasks_with_both_classes():
    three = classification_metrics(Y3_TRUE, one_hot_probs(Y3_PRED, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="binary"):
        classification_section("Three", three, y_true=Y3_TRUE, y_prob=one_hot_probs(Y3_PRED, 3))
    y, p = np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]])
    one_class = classification_section("One class", classification_metrics(y, p, ["no", "yes"]), y_true=y, y_prob=p)
    assert list(one_class.figures) == ["one-class-confusion.png"]


def test_write_report_refuses_repeated_titles_and_figure_names(tmp_path):
    with pytest.raises(ValueError, match="section titles"):
        write_report(tmp_path, "r", [Section("A", "", {}), Section("A", "", {})])
    with pytest.raises(ValueError, match="figure names"):
        write_report(tmp_path, "r", [Section("A", "", {}, {"f.png": print}), Section("B", "", {}, {"f.png": print})])
    with pytest.raises(ValueError, match="plain file names"):
        write_report(tmp_path, "r", [Section("A", "", {}, {"../f.png": print})])
