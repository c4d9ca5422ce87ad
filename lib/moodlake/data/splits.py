"""Deterministic, stable train / val / test assignment.

A post's split is a function of its id, the seed and (for given folds or source splits) the
source's own split, through a hash: the same post lands in the same split every time the job
runs, and adding posts never moves an existing one. Because the hash is independent of the
label, every label is split in the configured proportions (stratified in expectation; the
deviation per label shrinks as 1/sqrt(n), checked by the tests). No post can be in two splits.

The hash is computed in Spark SQL (:func:`split_column`) for the job and in Python
(:func:`assign_split`) for tests and tools; both give the same answer.
"""
from __future__ import annotations

import hashlib

from pyspark.sql import Column
from pyspark.sql import functions as F

from moodlake.config import SplitSpec

_HEX_DIGITS = 13  # 52 bits: exact in a double


def hash_unit(post_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from the post id and the seed."""
    h = hashlib.sha256(f"{seed}:{post_id}".encode("utf-8")).hexdigest()[:_HEX_DIGITS]
    return int(h, 16) / 16 ** _HEX_DIGITS


def _hash_unit_col(post_id: Column, seed: int) -> Column:
    hexa = F.substring(F.sha2(F.concat(F.lit(f"{seed}:"), post_id), 256), 1, _HEX_DIGITS)
    return F.conv(hexa, 16, 10).cast("double") / float(16 ** _HEX_DIGITS)


def assign_split(post_id: str, source_split: str | None, spec: SplitSpec) -> str:
    """'train', 'val', 'test', 'drop' (a source split the spec does not map) or 'sampled_out'
    (the hash scheme's ``drop`` fraction)."""
    u = hash_unit(post_id, spec.seed)
    if spec.scheme == "hash":
        if spec.drop and u >= spec.train + spec.val + spec.test:
            return "sampled_out"
        return "train" if u < spec.train else "val" if u < spec.train + spec.val else "test"
    if spec.scheme == "folds":
        if source_split == spec.test_fold:
            return "test"
        return "val" if u < spec.val_fraction else "train"
    target = spec.source_map.get(source_split or "", "drop")
    if target == "train" and u < spec.val_fraction:
        return "val"
    return target


def split_column(spec: SplitSpec, post_id: str = "post_id", source_split: str = "source_split") -> Column:
    """The Spark column equivalent of :func:`assign_split`."""
    u = _hash_unit_col(F.col(post_id), spec.seed)
    if spec.scheme == "hash":
        kept = F.when(u < spec.train, "train").when(u < spec.train + spec.val, "val").otherwise("test")
        return F.when(u >= spec.train + spec.val + spec.test, "sampled_out").otherwise(kept) if spec.drop else kept
    if spec.scheme == "folds":
        return (F.when(F.col(source_split) == spec.test_fold, "test")
                .when(u < spec.val_fraction, "val").otherwise("train"))
    target = F.lit("drop")
    for src, dst in sorted(spec.source_map.items()):
        target = F.when(F.col(source_split) == src, F.lit(dst)).otherwise(target)
    return F.when((target == "train") & (u < spec.val_fraction), "val").otherwise(target)
