"""Every `moodlake ...` command that README.md shows, parsed by the CLI's own argument parser, and
every `make` target it names, found in the Makefile: a documented option, command or target that
does not exist fails here. No Spark: only argparse runs.

- Lines of fenced code blocks that start with ``moodlake`` are whole commands: they must parse as
  they are (placeholders and shell variables replaced by sample values first).
- Inline mentions (`moodlake evaluate`, `moodlake submit JOB ARGS`) are often partial: each of their
  words must be a command of the parser at that place, an option that parser (or a parser above it)
  has, or a value.
- ``python -m moodlake_dev.experiments ...`` (the experiment runner) parses with the runner's parser,
  and an experiment file it names exists and validates.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from moodlake import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")  # a span may wrap onto the next line
# placeholders a command line may hold, and the sample value each stands for
SAMPLES = [
    (re.compile(r"\{\{[^}]*\}\}"), "2026-11-22"),    # a template: {{ data_interval_end | ds }}
    (re.compile(r"\$\{\w+\}|\$\w+"), "sample"),       # a shell variable: $MOODLAKE_HOME, ${X}
    (re.compile(r"<[^>\s]+>"), "sample"),             # <data.shared_dir>
]


def _argv(line: str) -> list[str]:
    """The arguments after ``moodlake`` of a README command line (comments dropped)."""
    for pattern, sample in SAMPLES:
        line = pattern.sub(sample, line)
    words = shlex.split(line, comments=True)
    assert words[0] == "moodlake", line
    return words[1:]


def _code_blocks() -> list[str]:
    return FENCED.findall(README)


def _prose() -> str:
    return FENCED.sub("", README)


def fenced_commands() -> list[str]:
    return [ln.strip() for block in _code_blocks() for ln in block.splitlines() if ln.strip().startswith("moodlake ")]


def _spans() -> list[str]:
    return [" ".join(m.split()) for m in INLINE.findall(_prose())]


def inline_mentions() -> list[str]:
    return sorted({m for m in _spans() if re.match(r"moodlake( |$)", m)})


def runner_commands() -> list[str]:
    """The arguments of every ``python -m moodlake_dev.experiments ...`` that README.md shows."""
    lines = [ln.strip() for block in _code_blocks() for ln in block.splitlines()] + _spans()
    return sorted({m.group(1).strip() for ln in lines for m in [re.search(r"-m moodlake_dev\.experiments (.+)", ln)]
                   if m})


def make_targets() -> list[str]:
    lines = [ln.strip() for block in _code_blocks() for ln in block.splitlines()]
    lines += _spans()
    return sorted({m.group(1) for ln in lines for m in [re.match(r"make\s+([\w.-]+)", ln)] if m})


def _parse_error(argv: list[str], capsys) -> str | None:
    """None when ``argv`` parses; argparse's complaint when it does not."""
    try:
        cli.parse_args(argv)
    except SystemExit as e:
        if e.code == 0:  # --help
            return None
        return capsys.readouterr().err.strip().splitlines()[-1]
    return None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, p in a.choices.items()}


def _unknown_words(argv: list[str]) -> list[str]:
    """The words of a partial command that are neither a command, an option of a parser on its
    path, nor a value."""
    parser = cli.build_parser()
    options = {}  # option string -> takes a value
    unknown, takes_value = [], False
    for word in argv:
        options.update({s: a.nargs != 0 for a in parser._actions for s in a.option_strings})
        commands = _subcommands(parser)
        if takes_value:
            takes_value = False
        elif word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in options:
                unknown.append(word)
            takes_value = options.get(name, False) and "=" not in word
        elif commands:
            if word not in commands and word != "...":
                unknown.append(word)
                break
            parser = commands.get(word, parser)
    return unknown


def test_readme_shows_the_commands_this_test_checks():
    """The extraction finds what README shows (an empty list would let everything pass)."""
    commands = fenced_commands()
    assert len(commands) >= 30, commands
    assert "moodlake evaluate --version multitask-0123abcd4567 --dataset emotion6 --split val" in commands
    assert "moodlake nightly --only STEP --date {{ data_interval_end | ds }}" in inline_mentions()
    assert {"demo", "test", "setup", "bench", "test-cluster", "experiments"} <= set(make_targets())
    assert "conf/experiments/emotion6-frozen-lr1e-4.yaml" in runner_commands()


@pytest.mark.parametrize("line", fenced_commands())
def test_readme_command_parses(line, capsys):
    error = _parse_error(_argv(line), capsys)
    assert error is None, f"README.md shows {line!r}, which the moodlake parser refuses: {error}"


@pytest.mark.parametrize("mention", inline_mentions())
def test_readme_mention_names_existing_commands_and_options(mention):
    assert _unknown_words(_argv(mention)) == [], f"README.md mentions `{mention}`"


@pytest.mark.parametrize("args", runner_commands())
def test_readme_runner_command_parses_and_its_experiment_file_loads(args):
    """The experiment runner's commands, parsed by its own parser; a file of conf/experiments they
    name exists and validates (FILE and other placeholders only parse)."""
    from moodlake_dev.experiments import build_parser, load_experiment

    parsed = build_parser().parse_args(shlex.split(args))
    if parsed.experiment.parts[:2] == ("conf", "experiments"):
        assert (REPO / parsed.experiment).is_file(), f"README.md names {parsed.experiment}, which does not exist"
        load_experiment(REPO / parsed.experiment, parsed.env or "demo", parsed.set, environ={})


@pytest.mark.parametrize("target", make_targets())
def test_readme_make_target_exists(target):
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(target)}\s*:", makefile, re.M), \
        f"README.md names `make {target}`; the Makefile has no such target"


def test_the_checks_refuse_an_option_command_or_target_that_does_not_exist(capsys):
    assert _parse_error(_argv("moodlake evaluate --version v1 --no-such-option"), capsys)
    assert _parse_error(_argv("moodlake no-such-command"), capsys)
    assert _parse_error(_argv("moodlake score --model v1"), capsys)  # evaluate's old spelling only
    assert _parse_error(_argv("moodlake ingest dataset emotion6 --path $HOME/x --source-name b"), capsys) is None
    assert _unknown_words(_argv("moodlake models retire VERSION")) == ["retire"]
    assert _unknown_words(_argv("moodlake submit --dry-run --no-such-option JOB")) == ["--no-such-option"]
    assert _unknown_words(_argv("moodlake --env ENV submit JOB ...")) == []
