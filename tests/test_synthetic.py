"""Synthetic posts: deterministic, realistic missing rates, and a signal a model can learn."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
from PIL import Image

from moodlake.sources.synthetic import LEXICON, SCENES, SyntheticSpec, synthetic_post

LABELS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
SPEC = SyntheticSpec(labels=LABELS, seed=11)


def test_same_seed_and_index_give_the_same_post():
    assert synthetic_post(5, SPEC) == synthetic_post(5, SPEC)
    assert synthetic_post(5, SPEC) != synthetic_post(6, SPEC)
    assert synthetic_post(5, SPEC).image != synthetic_post(5, SyntheticSpec(labels=LABELS, seed=12)).image


def test_missing_modality_rates_match_the_spec():
    posts = [synthetic_post(i, SPEC) for i in range(1500)]
    no_text = np.mean([p.description is None for p in posts])
    no_tags = np.mean([len(p.tags) == 0 for p in posts])
    no_image = np.mean([p.image is None for p in posts])
    assert abs(no_text - SPEC.p_text_missing) < 0.05
    assert abs(no_tags - SPEC.p_tags_missing) < 0.05
    assert no_image < 0.05
    assert set(Counter(p.label for p in posts)) == set(LABELS)


def _mean_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))


def test_each_modality_carries_the_label_better_than_chance():
    """Simple readers of each modality, fitted on one half and scored on the other."""
    posts = [synthetic_post(i, SPEC) for i in range(800)]
    train, test = posts[:400], posts[400:]
    # image: nearest class centroid of the mean colour
    cent = {lab: np.mean([_mean_rgb(p.image) for p in train if p.label == lab and p.image], axis=0) for lab in LABELS}
    img_acc = np.mean([min(cent, key=lambda lab: np.linalg.norm(cent[lab] - _mean_rgb(p.image))) == p.label
                       for p in test if p.image])
    # text: the lexicon the words come from; tags: the scene pool
    def vote(words, table):
        scores = Counter(lab for w in words for lab in LABELS if w.strip(".,").lower() in table[lab].split())
        return scores.most_common(1)[0][0] if scores else None

    txt = [vote(p.description.split(), LEXICON) == p.label for p in test if p.description]
    tag = [vote(p.tags, SCENES) == p.label for p in test if p.tags]
    chance = 1 / len(LABELS)
    for acc in (img_acc, np.mean(txt), np.mean(tag)):
        assert acc > chance + 0.35
    # ... and no single modality is perfect, so fusing them is worth something
    assert max(img_acc, np.mean(txt), np.mean(tag)) < 0.95
