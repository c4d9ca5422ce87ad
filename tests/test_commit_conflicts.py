"""Retrying Delta's commit conflicts (moodlake.runs.retry_conflicts), without Spark: the end-to-end
case (two scoring runs at once) is tests/test_scoring.py::test_two_scoring_runs_at_once_leave_each_post_scored_once."""
from __future__ import annotations

import pytest
from delta.exceptions import ConcurrentAppendException, ConcurrentDeleteReadException

from moodlake.runs import is_conflict, retry_conflicts


class Boom(RuntimeError):
    pass


def test_conflicts_are_told_from_other_errors():
    assert is_conflict(ConcurrentAppendException("Files were added to the root of the table by a concurrent update."))
    assert is_conflict(ConcurrentDeleteReadException("This transaction attempted to read one or more files ..."))
    # as py4j shows it where delta-spark's conversion is not installed
    assert is_conflict(RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added ..."))
    assert not is_conflict(RuntimeError("[TABLE_OR_VIEW_NOT_FOUND] The table or view `x` cannot be found."))
    assert not is_conflict(ValueError("ConcurrentAppendException mentioned later: not a conflict"))


def test_a_conflict_is_retried_with_backoff_and_other_errors_are_not(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("moodlake.runs.time.sleep", sleeps.append)
    calls = []

    def merge():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("Files were added by a concurrent update.")
        return "merged"

    assert retry_conflicts(merge, "committing chunk 1", base_s=1.0) == "merged"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.5 and 1.0 <= sleeps[1] <= 3.0  # exponential, with jitter

    def broken():
        calls.append(1)
        raise Boom("not a conflict")

    calls.clear()
    with pytest.raises(Boom):
        retry_conflicts(broken, "committing chunk 1")
    assert len(calls) == 1


def test_a_conflict_that_persists_ends_in_one_clear_line(monkeypatch):
    monkeypatch.setattr("moodlake.runs.time.sleep", lambda s: None)

    def always():
        raise ConcurrentAppendException("Files were added by a concurrent update.\n" + "stack\n" * 50)

    with pytest.raises(Boom) as e:
        retry_conflicts(always, "run r1: committing a chunk to db.emotion_scores", attempts=4, error=Boom)
    assert str(e.value) == ("run r1: committing a chunk to db.emotion_scores: ConcurrentAppendException with a "
                            "concurrent writer, still after 4 attempts; run it again when the other job has finished")
