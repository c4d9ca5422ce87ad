"""Image transforms and batch planning, on arrays (no Spark, no reader)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moodlake.data.loader import BUCKET_BOUNDS, bucket_index, plan_batches
from moodlake.data.transforms import crop_flip, random_crop_flip, ten_crop, to_tensor


def _images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_crop_flip_is_a_crop_of_the_reflect_padded_image_then_a_mirror():
    images = _images(6)
    dy, dx = np.array([-16, 0, 16, 5, -3, 0]), np.array([16, 0, -16, -7, 2, 0])
    flip = np.array([True, False, False, True, True, False])
    out = crop_flip(images, dy, dx, flip)
    for i in range(6):
        padded = np.pad(images[i], ((16, 16), (16, 16), (0, 0)), mode="reflect")
        expected = padded[16 + dy[i]:16 + dy[i] + 40, 16 + dx[i]:16 + dx[i] + 40]
        np.testing.assert_array_equal(out[i], expected[:, ::-1] if flip[i] else expected)


def test_random_crop_flip_flips_half_the_time_and_shifts_within_the_pad():
    # a left-to-right ramp: the mean of the left column tells a flip; the centre pixel tells the shift
    ramp = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (64, 64, 3))
    images = np.broadcast_to(ramp, (4000, 64, 64, 3)).copy()
    out = random_crop_flip(images, np.random.default_rng(1), pad=8)
    assert out.shape == images.shape and out.dtype == np.uint8
    flipped = out[:, :, 0, 0].mean(1) > out[:, :, -1, 0].mean(1)
    assert abs(flipped.mean() - 0.5) < 0.03  # 4000 draws: 6 standard deviations
    centre = out[:, 32, 32, 0].astype(int) // 3
    shifts = np.where(flipped, 63 - centre - 32, centre - 32)
    assert set(np.unique(shifts)) == set(range(-8, 9))


def test_ten_crop_gives_corners_centre_and_their_mirrors():
    images = _images(3, size=224)
    views = ten_crop(images, 192)
    assert views.shape == (3, 10, 192, 192, 3)
    for i in range(3):
        crops = [images[i, :192, :192], images[i, :192, 32:], images[i, 32:, :192], images[i, 32:, 32:],
                 images[i, 16:208, 16:208]]
        for v, crop in enumerate(crops):
            np.testing.assert_array_equal(views[i, v], crop)
            np.testing.assert_array_equal(views[i, 5 + v], crop[:, ::-1])
    with pytest.raises(ValueError, match="larger than the images"):
        ten_crop(images, 225)


def test_to_tensor_normalises_channels_first_and_zeroes_absent_images():
    images = _images(3, size=8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    x = to_tensor(images, mean, std, np.array([True, False, True]))
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32 and x.is_contiguous()
    expected = (images.transpose(0, 3, 1, 2) / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), expected[0], atol=1e-5)
    np.testing.assert_allclose(x[2].numpy(), expected[2], atol=1e-5)
    assert not x[1].any()


def test_buckets_every_128_characters_to_2048_then_every_512_to_4096():
    assert BUCKET_BOUNDS == (*[128 * i for i in range(1, 17)], 2560, 3072, 3584, 4096)
    lengths = np.array([0, 1, 128, 129, 2048, 2049, 2560, 2561, 4096])
    assert [BUCKET_BOUNDS[i] for i in bucket_index(lengths)] == [128, 128, 128, 256, 2048, 2560, 2560, 3072, 4096]
    with pytest.raises(ValueError, match="MAX_CHARS"):
        bucket_index(4097)


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_shard_gets_the_same_number_of_batches(drop_last):
    rng = np.random.default_rng(3)
    for _ in range(200):
        shards = int(rng.integers(1, 5))
        batch = int(rng.integers(1, 40))
        buckets = int(rng.choice([1, len(BUCKET_BOUNDS)]))
        counts = [rng.integers(0, 3 * batch, buckets) * (rng.random(buckets) < 0.5) + rng.integers(0, 2, buckets) * 200
                  for _ in range(shards)]
        try:
            n, plans = plan_batches(counts, batch, drop_last)
        except ValueError:
            totals = [c.sum() for c in counts]
            full = [(c // batch).sum() for c in counts]
            needed = max((-(-c // batch)).sum() for c in counts)
            assert (min(full) == 0) if drop_last else (min(totals) < needed)
            continue
        for c, plan in zip(counts, plans):
            assert len(plan) == len(c)
            assert all(1 <= size <= batch for sizes in plan for size in sizes)
            if drop_last:
                assert sum(map(len, plan)) >= n and all(size == batch for sizes in plan for size in sizes)
                assert [sum(sizes) for sizes in plan] == [k // batch * batch for k in c]
            else:
                assert sum(map(len, plan)) == n
                assert [sum(sizes) for sizes in plan] == list(c)  # every row, once
                assert all(max(sizes) - min(sizes) <= 1 for sizes in plan if sizes)
