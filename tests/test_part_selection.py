"""Parts of the multitask model that no training post connects are selected on their own
validation loss (the pure pieces; tests/test_training.py trains a model on unpaired posts)."""
from __future__ import annotations

import torch

from moodlake.models.multitask import HEADS, independent_parts, pattern_code
from moodlake.train.loop import assemble_best, part_losses

IMAGE, TEXT, TAGS = 1, 2, 4


def test_pattern_codes_are_the_mask_bits():
    mask = torch.tensor([[True, False, False], [False, True, False], [True, True, True], [False, True, True]])
    assert pattern_code(mask).tolist() == [IMAGE, TEXT, IMAGE | TEXT | TAGS, TEXT | TAGS]


def test_unpaired_images_and_texts_are_two_parts_with_their_own_extractor_and_head():
    parts = independent_parts([IMAGE, TEXT])
    assert list(parts) == ["image", "text"]
    assert parts["image"] == ((IMAGE,), ("extractors.image.", "heads.image."))
    assert parts["text"] == ((TEXT,), ("extractors.text.", "heads.text."))


def test_posts_with_several_modalities_join_their_parts():
    assert list(independent_parts([IMAGE | TEXT | TAGS, IMAGE, TEXT])) == ["image+text+tags"]
    parts = independent_parts([IMAGE | TEXT, TAGS, IMAGE])  # image+text posts join image and text
    assert list(parts) == ["image+text", "tags"]
    members, prefixes = parts["image+text"]
    assert members == (IMAGE, TEXT, IMAGE | TEXT)
    assert set(prefixes) == {"extractors.image.", "extractors.text.", "heads.image.", "heads.text.",
                             "heads.image+text."}
    # the heads that span two parts are in none: nothing trains them
    owned = {p for _, ps in parts.values() for p in ps}
    assert {f"heads.{h}." for h in HEADS} - owned == {"heads.image+tags.", "heads.text+tags.",
                                                       "heads.image+text+tags."}


def test_a_part_s_loss_is_the_log_loss_of_the_posts_routed_to_it():
    parts = independent_parts([IMAGE, TEXT])
    nll, rows = [0.0] * 8, [0.0] * 8
    nll[IMAGE], rows[IMAGE] = 6.0, 4
    nll[TEXT], rows[TEXT] = 1.0, 10
    assert part_losses(parts, {"pattern_nll": nll, "pattern_rows": rows}) == {"image": 1.5, "text": 0.1}
    rows[TEXT] = nll[TEXT] = 0  # no validation post of a part: no loss for it
    assert part_losses(parts, {"pattern_nll": nll, "pattern_rows": rows}) == {"image": 1.5}


def test_the_best_weights_take_each_part_from_the_epoch_where_it_improved():
    parts = independent_parts([IMAGE, TEXT])
    keys = ("extractors.image.fc.weight", "extractors.text.fc.weight", "heads.image.net.0.weight",
            "heads.image+text.net.0.weight")
    epoch = {e: {k: torch.full((2,), float(e)) for k in keys} for e in (1, 2, 3)}
    best = assemble_best(None, epoch[1], parts, {"image": True, "text": True}, True)
    best = assemble_best(best, epoch[2], parts, {"image": False, "text": True}, True)
    best = assemble_best(best, epoch[3], parts, {"image": False, "text": True}, False)
    assert {k: int(v[0]) for k, v in best.items()} == {
        "extractors.image.fc.weight": 1, "heads.image.net.0.weight": 1,  # image: best at epoch 1
        "extractors.text.fc.weight": 3,  # text: still improving at epoch 3
        "heads.image+text.net.0.weight": 2}  # in no part: the whole model's best epoch
    epoch[3]["extractors.text.fc.weight"] += 10  # copies, not the live tensors
    assert int(best["extractors.text.fc.weight"][0]) == 3
