"""Which posts a registered model can score: by their modalities only. Posts being scored carry no
label, so a single-input model (a character CNN here) must score every post with text, not only the
labelled ones; training still learns only from labelled rows. No Spark: feature rows as scoring's
Python workers receive them."""
from __future__ import annotations

import torch

from moodlake.data.vocab import Vocab
from moodlake.inference import Predictor
from moodlake.models import get_model
from moodlake.train.adapters import adapter_for

LABELS = ["negative", "positive"]


def _row(post_id: str, text: str | None) -> dict:
    return {"post_id": post_id, "text": text, "text_words": text.split() if text else [], "tags": [],
            "image": None, "has_image": False, "has_text": text is not None, "has_tags": False}


def test_a_character_model_scores_every_post_with_text_and_none_without():
    torch.manual_seed(0)
    build = {"num_classes": 2, "channels": 4, "embedding_dim": 4}
    vocab = Vocab(words=("<PAD>", "<UNK>"), tags=("<PAD>", "<UNK>"), chars=("<PAD>", "<UNK>", *"abcdefghij "))
    predictor = Predictor(get_model("stpierre_char", **build),
                          {"model": "stpierre_char", "build_kwargs": build, "labels": LABELS, "version": "v"}, vocab)
    preds, rejected = predictor.predict_rows([_row("a", "a bad day"), _row("b", "fine"), _row("c", None)])
    assert [r.post_id for r in rejected] == ["c"]  # no text, no tags, no image: no usable modality
    (pred,) = preds
    assert list(pred.post_ids) == ["a", "b"] and pred.usable.tolist() == [True, True]
    assert abs(pred.probs.sum(1) - 1).max() < 1e-5


def test_training_rows_still_need_a_label():
    adapter = adapter_for("stpierre_char")
    batch = {"mask": torch.tensor([[False, True, False], [False, True, False], [True, False, False]]),
             "label": torch.tensor([1, -1, 0])}
    assert adapter.scorable(batch).tolist() == [True, True, False]
    assert adapter.rows(batch).tolist() == [True, False, False]
    fused = adapter_for("stpierre_fused")
    both = {"mask": torch.tensor([[True, True, False], [True, True, False], [True, False, True]]),
            "label": torch.tensor([0, -1, 1])}
    assert fused.scorable(both).tolist() == [True, True, False]
    assert fused.rows(both).tolist() == [True, False, False]
