"""Torch batches over one Petastorm split of posts, for training and evaluation, on one or many DDP ranks.

::

    loader = PostLoader(url, batch_size=32, num_labels=8, shuffle=True, augment=True, drop_last=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:        # exactly len(loader) batches on every rank
            outputs = model(batch); loss = model.loss(outputs, batch)

Reading. Each rank reads its own shard with a real petastorm reader (``make_reader(cur_shard=rank,
shard_count=world_size)``: row group ``i`` goes to shard ``i % world_size``), one reader per epoch,
decoding JPEGs and arrays in the reader's worker pool (threads by default; OpenCV releases the GIL).
The reader is opened with ``num_epochs=None`` and stopped once every row of the shard has arrived:
petastorm 0.13's pools decide that an epoch is over by reading "every ventilated item processed"
and then "the ventilator has finished"; when the ventilator finishes between those two reads, the
epoch ends with rows missing (the empty epochs seen with the thread pool). A reader that never
finishes cannot end early, and counting rows against the Parquet footers tells when the shard is
complete; rows of the next pass that workers read ahead are dropped.

Equal batch counts. Before anything is read, the row groups' row counts (and, when bucketing, the
``char_len`` column) give the rows of every shard, and :func:`plan_batches` gives every rank the
same number of batches, ``len(loader)``, so that no DDP rank waits for a collective that another
never reaches (petastorm issue 508):

- ``drop_last=False`` (evaluation; the default): every row of every shard, exactly once per epoch.
  ``len(loader)`` is the most batches any shard needs; a shard that needs fewer spreads its rows
  over that many smaller batches. Each batch holds at most ``batch_size`` rows, and the rows of a
  shard (of a bucket, when bucketing) are spread as evenly as possible over its batches.
- ``drop_last=True`` (training): every batch holds exactly ``batch_size`` rows; ``len(loader)`` is
  the fewest full batches any shard makes, and larger shards leave their extra rows out of the
  epoch (other rows each epoch when shuffled).

A split too small for that (no full batch on some rank, or a shard with fewer rows than the
batches asked of it) is refused when the loader is made; a reader that delivers fewer rows than
its shard holds raises instead of ending the epoch short.

Shuffling (``shuffle=True``): the row groups' order (petastorm's own, seeded) and a shuffle buffer
of ``shuffle_buffer_size`` rows, both from ``(seed, epoch)``; call ``set_epoch`` before each epoch,
as with ``DistributedSampler``. Worker threads finish row groups in any order, so rows are put back
into the seeded row-group order before the buffer: the same seed and epoch give the same batches.

Bucketing (``bucket_by_text_length=True``, St. Pierre): buckets by ``char_len`` up to 128, 256, ...,
2,048, then 2,560, ..., 4,096 characters (:data:`BUCKET_BOUNDS`); a batch holds the rows of one
bucket and ``chars`` is padded to the bucket's bound, so batch shapes come from 20 widths. The plan
above then counts batches per bucket (a bucket's batch leaves as soon as it has its planned rows),
and the equal-count guarantee holds in the same way.

A batch is a dict:

    image       float [B, 3, 224, 224]  normalised with ``preprocessing``; zeros where mask[:, 0] is False
    views       float [B, 10, 3, s, s]  only with ``ten_crop`` (s = 192): see :mod:`.transforms`
    text        long  [B, L]            word ids, 0-padded to the longest in the batch (1 <= L <= 150)
    tags        long  [B, T]            tag ids, 0-padded (1 <= T <= 10)
    chars       long  [B, C]            character codes, 0-padded to the longest (or to the bucket's bound)
    mask        bool  [B, 3]            image, text, tags usable
    label       long  [B]               -1 when the post has no single label
    labels      float [B, K]            multi-hot
    label_dist  float [B, K]
    post_id     list[str]
"""
from __future__ import annotations

import random
import warnings
from collections import defaultdict, deque
from typing import Iterator, Sequence

import numpy as np
import torch
from petastorm import make_reader

from moodlake.data import remote_fs
from moodlake.data.petastorm_io import dataset_url, read_columns, row_groups, stored_schema
from moodlake.data.schema import IMAGE_SIZE, MAX_CHARS, MAX_TAGS, MAX_WORDS
from moodlake.data.transforms import random_crop_flip, ten_crop, to_tensor

BUCKET_BOUNDS = (*range(128, 2048 + 1, 128), *range(2048 + 512, MAX_CHARS + 1, 512))
"""Upper bounds (inclusive) of the text-length buckets, in characters."""


def bucket_index(char_len):
    """Index into :data:`BUCKET_BOUNDS` of the smallest bound >= ``char_len`` (a number or an array)."""
    if np.max(char_len) > MAX_CHARS:
        raise ValueError(f"a text of {np.max(char_len)} characters is longer than MAX_CHARS={MAX_CHARS}")
    return np.searchsorted(BUCKET_BOUNDS, char_len, side="left")


def plan_batches(shard_counts: Sequence[Sequence[int]], batch_size: int,
                 drop_last: bool) -> tuple[int, list[list[list[int]]]]:
    """(N, sizes): the number of batches every shard yields and, for each shard and each bucket, the
    sizes of that bucket's batches (module docstring). ``shard_counts[s][b]``: rows of shard ``s`` in
    bucket ``b`` (one bucket when not bucketing).

    ``drop_last``: full batches only, N = the fewest any shard makes (a shard may plan more; it
    stops at N). Otherwise N = the most any shard needs; a shard that needs fewer gives its extra
    batches to the buckets with the most rows per batch; each bucket's rows are split as evenly as
    possible. Raises ``ValueError`` when a shard cannot make N batches.
    """
    counts = [np.asarray(c, dtype=np.int64) for c in shard_counts]
    if drop_last:
        n = min(int((c // batch_size).sum()) for c in counts)
        if n == 0:
            raise ValueError(f"shards of {[int(c.sum()) for c in counts]} rows: some rank cannot make one full "
                             f"batch of {batch_size}")
        return n, [[[batch_size] * int(k // batch_size) for k in c] for c in counts]
    n = max(int(-(-c // batch_size).sum()) for c in counts)
    plans = []
    for c in counts:
        if c.sum() < n:
            raise ValueError(f"shards of {[int(c.sum()) for c in counts]} rows: a shard of {int(c.sum())} rows "
                             f"cannot make the {n} batches another needs (use drop_last or fewer ranks)")
        m = -(-c // batch_size)
        for _ in range(n - int(m.sum())):
            room = np.where(m < c, c / np.maximum(m, 1), -1)
            m[int(np.argmax(room))] += 1
        plans.append([_even_sizes(int(k), int(j)) for k, j in zip(c, m)])
    return n, plans


def _even_sizes(rows: int, batches: int) -> list[int]:
    """``rows`` split into ``batches`` sizes that differ by at most one."""
    if batches == 0:
        return []
    small, extra = divmod(rows, batches)
    return [small + 1] * extra + [small] * (batches - extra)


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The arguments, or torch.distributed's rank and world size when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
    return rank, world_size


def _preprocessing(preprocessing) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a backbone name in ``moodlake.models.PREPROCESSING`` or of a Preprocessing."""
    from moodlake.models import PREPROCESSING

    if isinstance(preprocessing, str):
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {preprocessing!r}; known: {', '.join(PREPROCESSING)}")
        preprocessing = PREPROCESSING[preprocessing]
    if preprocessing.input_size != IMAGE_SIZE:
        raise ValueError(f"the backbone expects {preprocessing.input_size}-px images; "
                         f"datasets hold {IMAGE_SIZE}-px images")
    return tuple(preprocessing.mean), tuple(preprocessing.std)


def _pad(arrays: Sequence[np.ndarray], limit: int, name: str, width: int | None = None) -> torch.Tensor:
    """long ``[B, width]``: the arrays 0-padded to ``width`` (default: the longest, at least 1)."""
    longest = max(len(a) for a in arrays)
    if longest > (width or limit):
        raise ValueError(f"{name}: a row has {longest} values, more than {width or limit}")
    out = np.zeros((len(arrays), width or max(1, longest)), np.int64)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return torch.from_numpy(out)


def _shuffled(rows: Iterator, rng: np.random.Generator, size: int) -> Iterator:
    """A shuffle buffer of ``size`` rows: each row leaves in place of a uniformly chosen buffered one."""
    buffer: list = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = row
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


class PostLoader:
    """An iterable of batches (dicts, see the module docstring) over the split at ``url``.

    ``batch_size``: the most rows in a batch (per rank). ``num_labels``: K of the dataset's label set
    (checked against the stored schema). ``rank``/``world_size``: this process's shard; by default
    torch.distributed's when initialised, else 0/1. ``shuffle``, ``seed``, ``shuffle_buffer_size``:
    see the module docstring; ``set_epoch(e)`` selects the epoch. ``augment``: random crop and flip
    (:func:`.transforms.random_crop_flip`). ``ten_crop``: add ``views`` for test-time oversampling
    (not with ``augment``). ``bucket_by_text_length``: St. Pierre's buckets. ``preprocessing``: a
    backbone name of ``moodlake.models.PREPROCESSING`` or a ``Preprocessing``. ``reader_pool_type``
    ("thread" or "process") and ``workers_count``: petastorm's decoding pool. ``drop_last``: full
    batches only (training), else every row once per epoch (evaluation); see the module docstring.
    """

    #: the split's unique row id (the column sharding is checked on)
    id_field = "post_id"

    def __init__(self, url, *, batch_size: int, num_labels: int, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True, seed: int = 0,
                 shuffle_buffer_size: int = 256, augment: bool = False, ten_crop: bool = False,
                 bucket_by_text_length: bool = False, preprocessing="efficientnet_lite0",
                 reader_pool_type: str = "thread", workers_count: int = 2, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if augment and ten_crop:
            raise ValueError("augment and ten_crop do not go together: ten-crop views are for evaluation")
        self.url = dataset_url(url)
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.batch_size, self.num_labels = batch_size, num_labels
        self.shuffle, self.seed, self.shuffle_buffer_size = shuffle, seed, shuffle_buffer_size
        self.augment, self.ten_crop, self.bucketing = augment, ten_crop, bucket_by_text_length
        self.mean, self.std = _preprocessing(preprocessing) if preprocessing is not None else (None, None)
        self.reader_pool_type, self.workers_count, self.drop_last = reader_pool_type, workers_count, drop_last
        self.epoch = 0

        stored_k = stored_schema(self.url).fields["labels"].shape[0]
        if stored_k != num_labels:
            raise ValueError(f"{self.url} has {stored_k} labels per post, not num_labels={num_labels}")
        groups = row_groups(self.url)
        if len(groups) < self.world_size:
            raise ValueError(f"{self.url} has {len(groups)} row groups, fewer than world_size={self.world_size}: "
                             "some ranks would read nothing (write it with smaller row groups)")
        self._num_groups = len(groups)
        self._groups = [g for g in groups if g.index % self.world_size == self.rank]
        key = self.id_field
        columns = read_columns(self.url, groups, [key, "char_len"] if self.bucketing else [key])
        self._group_of = {pid: g.index for g, c in zip(groups, columns) if g.index % self.world_size == self.rank
                          for pid in c[key]}
        if len(self._group_of) != sum(g.num_rows for g in self._groups):
            raise ValueError(f"{self.url}: {key} is not unique within shard {self.rank}/{self.world_size}")
        shard_counts = []
        for shard in range(self.world_size):
            if self.bucketing:
                lengths = [n for g, c in zip(groups, columns) if g.index % self.world_size == shard
                           for n in c["char_len"]]
                shard_counts.append(np.bincount(bucket_index(lengths), minlength=len(BUCKET_BOUNDS)))
            else:
                shard_counts.append([sum(g.num_rows for g in groups if g.index % self.world_size == shard)])
        try:
            self._num_batches, plans = plan_batches(shard_counts, batch_size, drop_last)
        except ValueError as e:
            raise ValueError(f"{self.url}, {self.world_size} rank(s), batch_size={batch_size}: {e}") from None
        self._plan = plans[self.rank]

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shuffling and augmentation for the next iterations."""
        self.epoch = epoch

    def _reader_seed(self) -> int | None:
        """Petastorm's seed for this epoch's row-group order (never 0: petastorm reads 0 as "unseeded")."""
        if not self.shuffle:
            return None
        return int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]) or 1

    def reading_order(self) -> list[int]:
        """The row-group indexes of this shard in the order petastorm ventilates them this epoch
        (petastorm 0.13's ``Reader._partition_row_groups`` and ``ConcurrentVentilator``)."""
        seed = self._reader_seed()
        indexes = list(range(self._num_groups))
        if self.world_size > 1 and seed is not None:
            random.Random(seed).shuffle(indexes)
        indexes = [i for i in indexes if i % self.world_size == self.rank]
        if seed is not None:
            indexes = [int(i) for i in np.random.default_rng(seed).permutation(indexes)]
        return indexes

    def open_reader(self):
        """A petastorm reader of this rank's shard for the current epoch (what ``__iter__`` reads); it
        cycles over the shard without end, and ``__iter__`` stops it once it has every row."""
        sharded = self.world_size > 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyarrow 14's legacy dataset, which petastorm uses
            return make_reader(self.url, reader_pool_type=self.reader_pool_type, workers_count=self.workers_count,
                               results_queue_size=5 * self.workers_count, seed=self._reader_seed(),
                               shuffle_row_groups=self.shuffle, shuffle_rows=False, num_epochs=None,
                               cur_shard=self.rank if sharded else None,
                               shard_count=self.world_size if sharded else None,
                               filesystem=remote_fs.for_url(self.url))  # s3a:// without s3fs

    def _in_order(self, reader, order: list[int]) -> Iterator:
        """Every row of this shard once, whole row groups at a time in ``order``; stops ``reader`` after.

        The reader cycles over the shard without end (module docstring), so rows of a row group
        already complete (a later pass) are dropped. Raises when the reader ends, or has delivered
        three passes and its read-ahead, without completing every row group.
        """
        expected = {g.index: g.num_rows for g in self._groups}
        limit = 3 * sum(expected.values()) + 3 * self.workers_count * max(expected.values())
        pending: dict[int, dict] = defaultdict(dict)
        complete = {g for g, n in expected.items() if n == 0}
        position = received = 0
        for row in reader:
            received += 1
            row_id = getattr(row, self.id_field)
            group = self._group_of.get(row_id)
            if group is None:
                raise RuntimeError(f"{self.url}: the reader of shard {self.rank}/{self.world_size} returned "
                                   f"{self.id_field} {row_id!r}, which is not in that shard")
            if group not in complete:
                pending[group][row_id] = row
                if len(pending[group]) == expected[group]:
                    complete.add(group)
            while position < len(order) and order[position] in complete:
                yield from pending.pop(order[position]).values()
                position += 1
            if position == len(order):
                reader.stop()
                return
            if received > limit:
                break
        have = sum(len(rows) for rows in pending.values())
        raise RuntimeError(f"{self.url}: the petastorm reader of shard {self.rank}/{self.world_size} delivered "
                           f"{received} rows, but row groups {sorted(set(order[position:]) - complete)} stay "
                           f"incomplete ({have} of their rows); the epoch cannot give every rank its batches")

    def _row_batches(self, rows: Iterator) -> Iterator[tuple[list, int | None]]:
        """(rows of a batch, the chars width or None), exactly ``len(self)`` of them, following the plan."""
        sizes = [deque(bucket) for bucket in self._plan]
        buffers: dict[int, list] = defaultdict(list)
        made = 0
        for row in rows:
            key = int(bucket_index(row.char_len)) if self.bucketing else 0
            if not sizes[key]:
                continue  # drop_last: beyond this bucket's full batches
            buffers[key].append(row)
            if len(buffers[key]) == sizes[key][0]:
                sizes[key].popleft()
                yield buffers.pop(key), BUCKET_BOUNDS[key] if self.bucketing else None
                made += 1
                if made == self._num_batches:
                    return
        raise RuntimeError(f"{self.url}: shard {self.rank}/{self.world_size} made {made} batches, "
                           f"not {self._num_batches}")

    def __iter__(self) -> Iterator[dict]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, self.rank]))
        reader = self.open_reader()
        try:
            rows = self._in_order(reader, self.reading_order())
            if self.shuffle:
                rows = _shuffled(rows, rng, self.shuffle_buffer_size)
            for batch_rows, chars_width in self._row_batches(rows):
                yield self.collate(batch_rows, chars_width, rng)
        finally:
            reader.stop()  # again, when the epoch stops early or fails; stopping twice is harmless
            reader.join()

    def collate(self, rows: list, chars_width: int | None, rng: np.random.Generator) -> dict:
        """One batch dict (module docstring) from petastorm rows, vectorised over the batch."""
        return collate(rows, self.mean, self.std, chars_width=chars_width, rng=rng if self.augment else None,
                       ten_crop_views=self.ten_crop)


def collate(rows: Sequence, mean: Sequence[float], std: Sequence[float], *, chars_width: int | None = None,
            rng: np.random.Generator | None = None, ten_crop_views: bool = False) -> dict:
    """One batch dict (module docstring) from rows with the dataset's fields as attributes (petastorm
    rows, or :mod:`moodlake.inference`'s records of feature rows): the one place where stored posts
    become model inputs, for training, evaluation and scoring. ``rng``: random crop and flip
    (training augmentation); ``ten_crop_views``: add ``views``."""
    mask = np.stack([r.mask for r in rows]).astype(bool)
    images = np.zeros((len(rows), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, r in enumerate(rows):
        if not mask[i, 0]:
            continue
        if r.image is None or r.image.shape != images.shape[1:]:
            raise ValueError(f"post {r.post_id}: the mask says it has an image but the stored image is "
                             f"{None if r.image is None else r.image.shape}")
        images[i] = r.image
    batch = {
        "post_id": [str(r.post_id) for r in rows],
        "mask": torch.from_numpy(mask),
        "image": to_tensor(random_crop_flip(images, rng) if rng is not None else images, mean, std, mask[:, 0]),
        "text": _pad([r.text for r in rows], MAX_WORDS, "text"),
        "tags": _pad([r.tags for r in rows], MAX_TAGS, "tags"),
        "chars": _pad([r.chars for r in rows], MAX_CHARS, "chars", chars_width),
        "label": torch.tensor([int(r.label) for r in rows], dtype=torch.long),
        "labels": torch.from_numpy(np.stack([r.labels for r in rows]).astype(np.float32)),
        "label_dist": torch.from_numpy(np.stack([r.label_dist for r in rows]).astype(np.float32)),
    }
    if ten_crop_views:
        batch["views"] = to_tensor(ten_crop(images), mean, std, mask[:, 0])
    return batch


class SegmentLoader(PostLoader):
    """Batches over one Petastorm split of video segments (:func:`moodlake.data.segments.segment_schema`),
    with the same sharding, equal batch counts and seeded shuffling as :class:`PostLoader`. A batch::

        audio, visual, text  float [B, maxlen, d]  aligned to the words; zeros after ``length`` steps
        length               long  [B]             real steps (>= 1)
        labels               float [B, E]          emotion intensities (absent where the rows have none)
        mask                 bool  [B, 3]          all True: every segment has steps of the three modalities
                                                    (a modality that did not cover a word is zeros there)
        segment_id, video_id list[str]
    """

    id_field = "segment_id"

    def __init__(self, url, *, batch_size: int, num_labels: int, **options):
        for unsupported in ("augment", "ten_crop", "bucket_by_text_length"):
            if options.pop(unsupported, False):
                raise ValueError(f"{unsupported} is for posts, not video segments")
        options.pop("preprocessing", None)
        super().__init__(url, batch_size=batch_size, num_labels=num_labels, preprocessing=None, **options)

    def collate(self, rows: list, chars_width: int | None, rng: np.random.Generator) -> dict:
        return collate_segments(rows)


def collate_segments(rows: Sequence) -> dict:
    """One segment batch (:class:`SegmentLoader`) from rows with the segment dataset's fields as
    attributes (petastorm rows, or scoring's aligned segments): the one place where aligned segments
    become model inputs, for training, evaluation and scoring."""
    batch = {m: torch.from_numpy(np.stack([getattr(r, m) for r in rows]).astype(np.float32))
             for m in ("audio", "visual", "text")}
    lengths = np.array([int(r.length) for r in rows], np.int64)
    maxlen = batch["text"].shape[1]
    if (lengths < 1).any() or (lengths > maxlen).any():
        bad = [str(r.segment_id) for r, n in zip(rows, lengths) if not 1 <= n <= maxlen]
        raise ValueError(f"segments {bad[:5]} have lengths outside 1..{maxlen}")
    batch.update({
        "length": torch.from_numpy(lengths),
        "mask": torch.ones(len(rows), 3, dtype=torch.bool),
        "segment_id": [str(r.segment_id) for r in rows],
        "video_id": [str(r.video_id) for r in rows],
    })
    if all(getattr(r, "labels", None) is not None for r in rows):  # segments being scored have none
        batch["labels"] = torch.from_numpy(np.stack([r.labels for r in rows]).astype(np.float32))
    return batch
