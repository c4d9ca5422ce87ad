"""The night's chain: ingest, then features, then score, each step its own spark-submit job.

``moodlake nightly`` plans the steps from the configuration (``nightly`` section) and the night's
date, then runs them one after another through ``moodlake submit`` (``cli._submit``); this module
plans and runs the chain, the CLI supplies the function that runs one step.

- ingest: a Flickr search of the previous day's uploads (``--since D-1 --until D``, UTC) when the
  Flickr API key is configured and ``nightly.flickr_search`` is on, and every entry of
  ``nightly.sources`` (``moodlake ingest`` arguments);
- features: ``moodlake features`` (only new or changed posts);
- score: ``moodlake score`` (only posts the production model has not scored yet).

One line per step says its start, end, duration and exit code. The first failing step stops the
chain and its exit code is the chain's; every step is idempotent, so a failed or interrupted
night is repaired by running the same command again.
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TextIO

GROUPS = ("ingest", "features", "score")


@dataclass(frozen=True)
class Step:
    group: str                  # ingest / features / score: what --skip and --only name
    name: str                   # e.g. ingest:flickr-search, ingest:dataset-export, features, score
    job: str                    # jobs/<job>.py
    args: tuple[str, ...] = ()  # its arguments

    def describe(self) -> str:
        return " ".join(["moodlake submit", self.job, *self.args])


def parse_night(value: str | None, today: dt.date | None = None) -> dt.date:
    """The night to process: ``YYYY-MM-DD``, or today (UTC) when not given."""
    if not value:
        return today or dt.datetime.now(dt.timezone.utc).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--date expects YYYY-MM-DD, got {value!r}") from None


def _source_name(args: Sequence[str]) -> str:
    words = []
    for a in args:
        if a.startswith("-"):
            break
        words.append(a)
    return "-".join(words) or "source"


def plan(cfg, night: dt.date, skip: Sequence[str] = ()) -> list[Step]:
    """The steps of the night ``night`` (the Flickr search covers the day before it)."""
    unknown = sorted(set(skip) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(GROUPS)}")
    n = cfg.nightly
    steps: list[Step] = []
    if "ingest" not in skip:
        if n.flickr_search and cfg.flickr.api_key is not None:
            args = ["flickr", "--search", "--since", (night - dt.timedelta(days=1)).isoformat(),
                    "--until", night.isoformat()]
            if n.flickr_tags:
                args += ["--tags", n.flickr_tags]
            if n.flickr_text:
                args += ["--text", n.flickr_text]
            if n.flickr_max:
                args += ["--max", str(n.flickr_max)]
            steps.append(Step("ingest", "ingest:flickr-search", "ingest", tuple(args)))
        seen: dict[str, int] = {}
        for src in n.sources:
            name = f"ingest:{_source_name(src)}"
            seen[name] = seen.get(name, 0) + 1
            steps.append(Step("ingest", name if seen[name] == 1 else f"{name}#{seen[name]}", "ingest", tuple(src)))
    if "features" not in skip:
        steps.append(Step("features", "features", "features"))
    if "score" not in skip:
        steps.append(Step("score", "score", "score", tuple(n.score_args)))
    return steps


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(rc: int) -> int:
    """A subprocess return code as a process exit code (killed by signal N: 128 + N, as shells do)."""
    return 128 - rc if rc < 0 else rc


def run_chain(cfg, night: dt.date, steps: Sequence[Step], run: Callable[[Step], int], *,
              skip: Sequence[str] = (), dry_run: bool = False, out: TextIO | None = None,
              clock: Callable[[], float] = time.time) -> int:
    """Run ``steps`` in order with ``run(step) -> exit code``; stop at the first failure.

    Returns 0 when every step succeeded, else the exit code of the step that failed.
    """
    out = out or sys.stdout
    tag = f"[nightly {night.isoformat()}]"

    def say(line: str) -> None:
        print(f"{tag} {line}", file=out, flush=True)

    planned = [s.name for s in steps]
    say(f"{'dry run: ' if dry_run else ''}env {cfg.env}; steps: {', '.join(planned) or 'none'}"
        + (f"; skipped: {', '.join(skip)}" if skip else ""))
    if "ingest" not in skip and not any(s.group == "ingest" for s in steps):
        say("step=ingest nothing to ingest: no Flickr API key (FLICKR_API_KEY / conf/local) "
            "or nightly.flickr_search off, and nightly.sources empty")
    started = clock()
    for i, step in enumerate(steps):
        t0 = clock()
        sys.stdout.flush()
        sys.stderr.flush()
        rc = exit_code(run(step))
        t1 = clock()
        say(f"step={step.name} start={_utc(t0)} end={_utc(t1)} duration={t1 - t0:.1f}s exit={rc}"
            + (" (dry run)" if dry_run else "") + f"  [{step.describe()}]")
        if rc != 0:
            rest = [s.name for s in steps[i + 1:]]
            say(f"FAILED at step {step.name} with exit code {rc}"
                + (f"; not run: {', '.join(rest)}" if rest else "")
                + ". Every step is idempotent: fix the cause and run the same command again.")
            return rc
    say(f"done: {len(steps)} step{'s' if len(steps) != 1 else ''} succeeded in {clock() - started:.1f}s")
    return 0
