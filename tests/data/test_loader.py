"""PostLoader over real petastorm readers: shards, equal batch counts, content, shuffling, views, buckets."""
from __future__ import annotations

from itertools import islice

import cv2
import numpy as np
import pytest
import torch
from petastorm import make_reader
from petastorm.predicates import in_lambda

from moodlake.data.loader import BUCKET_BOUNDS, PostLoader
from moodlake.data.petastorm_io import row_groups, split_row_counts
from moodlake.models import PREPROCESSING, get_model
from tests.data.conftest import IMAGES, JPEGS, K, TAG_VOCAB, VOCAB

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]

MEAN = np.array(PREPROCESSING["efficientnet_lite0"].mean)[:, None, None]
STD = np.array(PREPROCESSING["efficientnet_lite0"].std)[:, None, None]


def ids(batches: list[dict]) -> list[str]:
    return [pid for b in batches for pid in b["post_id"]]


def pixels(x: torch.Tensor) -> np.ndarray:
    """A normalised [3, H, W] image back to float pixels [H, W, 3]."""
    return ((x.numpy() * STD + MEAN) * 255).transpose(1, 2, 0)


def normalised(rgb: np.ndarray) -> np.ndarray:
    return (rgb.transpose(2, 0, 1) / 255 - MEAN) / STD


def check_padded(row: torch.Tensor, source, width: int) -> None:
    source = np.asarray(source, dtype=np.int64)
    assert row.shape == (width,)
    np.testing.assert_array_equal(row[:len(source)].numpy(), source)
    assert not row[len(source):].any()


def test_one_rank_yields_every_row_once_with_its_content(posts_split):
    loader = PostLoader(posts_split.url, batch_size=64, num_labels=K, shuffle=False)
    assert len(loader) == 8  # ceil(480 / 64)
    batches = list(loader)
    assert len(batches) == 8 and [len(b["post_id"]) for b in batches] == [60] * 8
    assert sorted(ids(batches)) == sorted(posts_split.posts)
    for b in batches:
        assert b["image"].dtype == torch.float32 and b["image"].shape == (60, 3, 224, 224)
        assert {b[k].dtype for k in ("text", "tags", "chars", "label")} == {torch.long}
        assert b["mask"].dtype == torch.bool and b["labels"].dtype == b["label_dist"].dtype == torch.float32
        posts = [posts_split.posts[pid] for pid in b["post_id"]]
        for name in ("text", "tags", "chars"):
            assert b[name].shape[1] == max(1, max(len(p[name]) for p in posts)), name
        for i, p in enumerate(posts):
            for name in ("text", "tags", "chars"):
                check_padded(b[name][i], p[name], b[name].shape[1])
            assert b["mask"][i].tolist() == p["mask"]
            assert b["label"][i] == p["label"]
            np.testing.assert_array_equal(b["labels"][i].numpy(), np.asarray(p["labels"], np.float32))
            np.testing.assert_array_equal(b["label_dist"][i].numpy(), np.asarray(p["label_dist"], np.float32))
            if p["source_image"] is None:
                assert not b["image"][i].any()
            else:
                diff = np.abs(pixels(b["image"][i]) - IMAGES[p["source_image"]])
                assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12  # JPEG quality 90


@pytest.mark.parametrize("bucketing", [False, True])
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("split", ["posts_split", "uneven_split"])
def test_ranks_read_disjoint_shards_that_cover_the_split_with_equal_batch_counts(request, split, world, bucketing):
    split = request.getfixturevalue(split)
    loaders = [PostLoader(split.url, batch_size=16, num_labels=K, rank=r, world_size=world,
                          bucket_by_text_length=bucketing, seed=3) for r in range(world)]
    assert len({len(loader) for loader in loaders}) == 1
    per_rank = []
    for loader, rows in zip(loaders, split_row_counts(split.url, world)):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(1 <= len(b["post_id"]) <= 16 for b in batches)
        assert len(ids(batches)) == rows  # the whole shard, exactly once
        per_rank.append(set(ids(batches)))
    assert sum(map(len, per_rank)) == len(split.posts)
    assert set().union(*per_rank) == set(split.posts)


def test_uneven_shards_get_the_batch_counts_their_rows_imply(uneven_split):
    # shards of 130 and 55 rows (row groups of 100, 50, 30, 5), batches of 16
    def loaders(**kw):
        return [PostLoader(uneven_split.url, batch_size=16, num_labels=K, rank=r, world_size=2, **kw) for r in (0, 1)]

    evaluation = loaders()
    assert [len(x) for x in evaluation] == [9, 9]  # ceil(130 / 16); 55 rows spread over 9 batches
    assert [len(b["post_id"]) for b in evaluation[1]] == [7] * 1 + [6] * 8
    training = loaders(drop_last=True)
    assert [len(x) for x in training] == [3, 3]  # floor(55 / 16)
    seen = []
    for loader in training:
        batches = list(loader)
        assert [len(b["post_id"]) for b in batches] == [16, 16, 16]
        seen.append(set(ids(batches)))
    assert not seen[0] & seen[1]


def test_drop_last_with_buckets_gives_full_one_bucket_batches_on_every_rank(posts_split):
    loaders = [PostLoader(posts_split.url, batch_size=8, num_labels=K, rank=r, world_size=2, drop_last=True,
                          bucket_by_text_length=True) for r in (0, 1)]
    assert len(loaders[0]) == len(loaders[1]) > 0
    for loader in loaders:
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert len(b["post_id"]) == 8
            bound = b["chars"].shape[1]
            lower = BUCKET_BOUNDS[BUCKET_BOUNDS.index(bound) - 1] if bound > 128 else -1
            assert all(lower < len(posts_split.posts[pid]["chars"]) <= bound for pid in b["post_id"])


def test_bucketed_batches_hold_one_bucket_padded_to_its_bound(posts_split):
    loader = PostLoader(posts_split.url, batch_size=16, num_labels=K, bucket_by_text_length=True)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert sorted(ids(batches)) == sorted(posts_split.posts)
    widths = set()
    for b in batches:
        bound = b["chars"].shape[1]
        assert bound in BUCKET_BOUNDS
        widths.add(bound)
        lower = BUCKET_BOUNDS[BUCKET_BOUNDS.index(bound) - 1] if bound > 128 else -1
        for i, pid in enumerate(b["post_id"]):
            chars = posts_split.posts[pid]["chars"]
            assert lower < len(chars) <= bound
            check_padded(b["chars"][i], chars, bound)
    # the posts' lengths include 1, 127-129, 2048, 2049, 2560, 4096 and 1..1199
    assert {128, 256, 2048, 2560, 4096} <= widths and len(widths) >= 12


def test_shuffling_is_reproducible_for_a_seed_and_epoch_and_changes_between_epochs(posts_split):
    def run(seed: int, epoch: int, workers: int = 3):
        loader = PostLoader(posts_split.url, batch_size=32, num_labels=K, rank=0, world_size=2, seed=seed,
                            augment=True, workers_count=workers)
        loader.set_epoch(epoch)
        batches = list(loader)
        return ids(batches), torch.cat([b["image"] for b in batches])

    first, images = run(7, 0)
    again, images_again = run(7, 0, workers=1)
    assert len(first) == split_row_counts(posts_split.url, 2)[0]
    assert first == again and torch.equal(images, images_again)
    next_epoch, _ = run(7, 1)
    other_seed, _ = run(8, 0)
    assert sorted(next_epoch) == sorted(first) and next_epoch != first
    assert sorted(other_seed) == sorted(first) and other_seed != first
    unshuffled = ids(list(PostLoader(posts_split.url, batch_size=32, num_labels=K, rank=0, world_size=2,
                                     shuffle=False)))
    assert unshuffled == sorted(unshuffled)  # file order: post ids were written in order


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 1)])
def test_reading_order_is_the_order_petastorm_ventilates_row_groups(posts_split, world, rank):
    loader = PostLoader(posts_split.url, batch_size=32, num_labels=K, rank=rank, world_size=world, workers_count=1)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        with loader.open_reader() as reader:  # one worker: rows arrive in ventilation order; first pass only
            groups = [loader._group_of[row.post_id] for row in islice(reader, split_row_counts(posts_split.url,
                                                                                              world)[rank])]
        arrived = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
        assert arrived == loader.reading_order()
        assert sorted(arrived) == [g.index for g in row_groups(posts_split.url) if g.index % world == rank]


def test_augmentation_keeps_shapes_and_flips_half_the_images(posts_split):
    loader = PostLoader(posts_split.url, batch_size=64, num_labels=K, shuffle=False, augment=True)
    plain = {pid: img for b in PostLoader(posts_split.url, batch_size=64, num_labels=K, shuffle=False)
             for pid, img in zip(b["post_id"], b["image"])}
    flips = moved = 0
    batches = list(loader)
    assert len(ids(batches)) == 480
    for b in batches:
        assert b["image"].shape == (len(b["post_id"]), 3, 224, 224)
        for pid, img in zip(b["post_id"], b["image"]):
            if posts_split.posts[pid]["source_image"] is None:
                assert not img.any()
                continue
            # the images are dark on the left and bright on the right
            flips += bool(img[:, :, :60].mean() > img[:, :, -60:].mean())
            moved += not torch.equal(img, plain[pid])
    with_image = sum(p["source_image"] is not None for p in posts_split.posts.values())
    assert abs(flips / with_image - 0.5) < 0.1  # ~420 images: 4 standard deviations
    assert moved > 0.9 * with_image  # a shift of 0 on both axes and no flip: 1 in 2 * 33 * 33


def test_ten_crop_views_are_the_corner_and_centre_crops_of_the_stored_image(posts_split):
    loader = PostLoader(posts_split.url, batch_size=32, num_labels=K, shuffle=False, ten_crop=True)
    batch = next(iter(loader))
    assert batch["views"].shape == (32, 10, 3, 192, 192) and batch["views"].dtype == torch.float32
    checked = 0
    for i, pid in enumerate(batch["post_id"]):
        k = posts_split.posts[pid]["source_image"]
        if k is None:
            assert not batch["views"][i].any() and not batch["image"][i].any()
            continue
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(JPEGS[k], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_allclose(batch["image"][i].numpy(), normalised(rgb), atol=1e-4)
        crops = [rgb[:192, :192], rgb[:192, 32:], rgb[32:, :192], rgb[32:, 32:], rgb[16:208, 16:208]]
        for v, crop in enumerate(crops + [c[:, ::-1] for c in crops]):
            np.testing.assert_allclose(batch["views"][i, v].numpy(), normalised(crop), atol=1e-4)
        checked += 1
    assert checked >= 20


def test_masks_and_zero_images_for_posts_without_them(uneven_split):
    batches = list(PostLoader(uneven_split.url, batch_size=50, num_labels=K, augment=True))
    assert len(ids(batches)) == 185
    for b in batches:
        assert not b["image"].any() and not b["mask"][:, 0].any()
        for i, pid in enumerate(b["post_id"]):
            post = uneven_split.posts[pid]
            assert b["mask"][i].tolist() == post["mask"]
            assert bool(b["text"][i].any()) == post["mask"][1] and bool(b["tags"][i].any()) == post["mask"][2]


def test_every_epoch_yields_every_row(uneven_split):
    loader = PostLoader(uneven_split.url, batch_size=20, num_labels=K, workers_count=2)
    for epoch in range(8):
        loader.set_epoch(epoch)
        assert sorted(ids(list(loader))) == sorted(uneven_split.posts), epoch


def test_the_process_pool_gives_the_same_batches_as_the_thread_pool(uneven_split):
    def run(pool: str):
        loader = PostLoader(uneven_split.url, batch_size=20, num_labels=K, rank=1, world_size=2, seed=5,
                            reader_pool_type=pool)
        return [b["post_id"] for b in loader]

    process = run("process")
    assert sum(map(len, process)) == 55
    assert process == run("thread")


@pytest.mark.parametrize("num_epochs", [1, None])
def test_a_reader_that_delivers_too_few_rows_fails_the_epoch(uneven_split, num_epochs):
    # a real reader that leaves out the rows of label 0: it ends (1 pass) or cycles without them (None)
    loader = PostLoader(uneven_split.url, batch_size=20, num_labels=K)
    loader.open_reader = lambda: make_reader(uneven_split.url, workers_count=1, num_epochs=num_epochs,
                                             predicate=in_lambda(["label"], lambda label: label != 0))
    with pytest.raises(RuntimeError, match=r"delivered \d+ rows, but row groups \[.+\] stay incomplete"):
        list(loader)


def test_batches_feed_the_multitask_model(posts_split):
    loader = PostLoader(posts_split.url, batch_size=8, num_labels=K, augment=True, drop_last=True)
    batch = next(iter(loader))
    labelled = batch["label"] >= 0  # -1: a post without a single label, which the model's loss does not take
    batch = {k: v[labelled] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    torch.manual_seed(0)
    model = get_model("multitask", num_classes=K, pretrained=False, vocab_size=VOCAB, tag_vocab_size=TAG_VOCAB)
    loss = model.loss(model(batch), batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.extractors["text"].embedding.weight.grad.abs().sum() > 0
    assert model.predict(batch).shape == (int(labelled.sum()), K)


def test_refusals_name_the_problem(posts_split, uneven_split):
    url = posts_split.url
    with pytest.raises(ValueError, match="4 labels per post, not num_labels=8"):
        PostLoader(url, batch_size=8, num_labels=8)
    with pytest.raises(ValueError, match="augment and ten_crop"):
        PostLoader(url, batch_size=8, num_labels=K, augment=True, ten_crop=True)
    with pytest.raises(ValueError, match="rank must be in"):
        PostLoader(url, batch_size=8, num_labels=K, rank=2, world_size=2)
    with pytest.raises(ValueError, match="cannot make one full batch of 300"):
        PostLoader(url, batch_size=300, num_labels=K, world_size=2, rank=0, drop_last=True)
    # 4 ranks: shards of 100, 50, 30 and 5 rows; the first needs 7 batches of 16
    with pytest.raises(ValueError, match="a shard of 5 rows cannot make the 7 batches"):
        PostLoader(uneven_split.url, batch_size=16, num_labels=K, world_size=4, rank=0)
    with pytest.raises(ValueError, match="4 row groups, fewer than world_size=5"):
        PostLoader(uneven_split.url, batch_size=16, num_labels=K, world_size=5, rank=0)
    with pytest.raises(FileNotFoundError, match="no dataset at file:///nonexistent"):
        PostLoader("/nonexistent/train", batch_size=8, num_labels=K)
