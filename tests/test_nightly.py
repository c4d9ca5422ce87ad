"""`moodlake nightly` and the scheduling files of conf/scheduling/.

The schedule's commands are read from the crontab and from the Airflow DAG file (imported without
Airflow) and run as real `moodlake` processes with --dry-run; the chain's stop-at-first-failure
is checked in-process (a runner that fails on purpose) and once with a real spark-submit job.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from moodlake import cli
from moodlake.config import Secret, load_config
from moodlake.nightly import Step, exit_code, parse_night, plan, run_chain

REPO = Path(__file__).resolve().parents[1]
MOODLAKE = str(Path(sys.prefix) / "bin" / "moodlake")
SCHEDULING = REPO / "conf" / "scheduling"
KEY, SECRET = "fake-flickr-key-0123456789abcdef", "fake-secret-fedcba98"
NIGHT = "2026-11-22"
# no Derby network server for dry runs of the embedded default: a metastore URI that nothing
# serves (a dry run only prints; the failing-step run fails before it connects)
NO_METASTORE = {"MOODLAKE__LAKEHOUSE__METASTORE_URI": "thrift://127.0.0.1:9"}


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
    env.update({"MOODLAKE_HOME": str(tmp_path / "lh"), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _submitted_jobs(stdout: str) -> list[str]:
    """The jobs/*.py named by the spark-submit lines of a dry run, in order."""
    jobs = []
    for line in stdout.splitlines():
        words = shlex.split(line) if "spark-submit" in line.split(" ", 1)[0] else []
        jobs += [Path(w).name for w in words if re.fullmatch(r".*/jobs/\w+\.py", w)]
    return jobs


def _submit_line(stdout: str, job: str) -> list[str]:
    lines = [shlex.split(ln) for ln in stdout.splitlines() if ln.split(" ", 1)[0].endswith("spark-submit")]
    found = [w for w in lines if any(x.endswith(f"/jobs/{job}.py") for x in w)]
    assert len(found) == 1, stdout
    words = found[0]
    return words[next(i for i, x in enumerate(words) if x.endswith(f"/jobs/{job}.py")):]


def _with_dry_run(command: str) -> str:
    """Insert --dry-run after the moodlake subcommand (nightly or submit) of a shell command."""
    out, n = re.subn(r"(\.venv/bin/moodlake (?:--env \S+ )?(?:nightly|submit))\b", r"\1 --dry-run", command)
    assert n == 1, command
    return out


# --------------------------------------------------------------------------- the schedule's commands


def _crontab_commands(tmp_path: Path) -> list[tuple[str, str]]:
    """(schedule, command) of every job line of conf/scheduling/crontab, made runnable here."""
    jobs = []
    for line in (SCHEDULING / "crontab").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        command = fields[5]
        assert "/opt/moodlake" in command and "/var/lib/moodlake/cron.lock" in command, command
        command = re.sub(r"\s*>>\s*\S+\s+2>&1\s*$", "", command)  # the log redirection
        command = command.replace("/opt/moodlake", str(REPO)).replace("/var/lib/moodlake/cron.lock",
                                                                      str(tmp_path / "cron.lock"))
        jobs.append((" ".join(fields[:5]), command))
    return jobs


def _load_dag_module(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MOODLAKE_DIR", str(REPO))
    monkeypatch.delenv("MOODLAKE_AIRFLOW_ENV", raising=False)
    spec = importlib.util.spec_from_file_location("airflow_moodlake_nightly_under_test",
                                                  SCHEDULING / "airflow_moodlake_nightly.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_shell(command: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=180)


def test_crontab_commands_dry_run_name_the_jobs_in_order(tmp_path):
    commands = _crontab_commands(tmp_path)
    assert [s for s, _ in commands] == ["30 2 * * *", "0 5 * * 0"]
    env = _env(tmp_path, FLICKR_API_KEY=KEY, FLICKR_API_SECRET=SECRET)
    nightly = _run_shell(_with_dry_run(commands[0][1]), env)
    assert nightly.returncode == 0, nightly.stderr[-3000:]
    assert _submitted_jobs(nightly.stdout) == ["ingest.py", "features.py", "score.py"]
    # --env prod: the example cluster's master; tonight's search window (today, UTC)
    assert "--master spark://spark-master.internal:7077" in nightly.stdout
    today = dt.datetime.now(dt.timezone.utc).date()
    assert _submit_line(nightly.stdout, "ingest")[1:] == [
        "flickr", "--search", "--since", (today - dt.timedelta(days=1)).isoformat(), "--until", today.isoformat()]
    maintain = _run_shell(_with_dry_run(commands[1][1]), env)
    assert maintain.returncode == 0, maintain.stderr[-3000:]
    assert _submitted_jobs(maintain.stdout) == ["maintain.py"]
    for out in (nightly, maintain):
        assert KEY not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr


def test_airflow_dag_commands_dry_run_name_the_jobs_in_order(tmp_path, monkeypatch):
    mod = _load_dag_module(monkeypatch, tmp_path)
    if importlib.util.find_spec("airflow") is None:
        assert mod.airflow is None and not hasattr(mod, "nightly_dag")
    assert [t for t, _ in mod.NIGHTLY_TASKS] == ["ingest", "features", "score"]
    assert [t for t, _ in mod.MAINTAIN_TASKS] == ["maintain"]
    assert (mod.NIGHTLY_SCHEDULE, mod.MAINTAIN_SCHEDULE) == ("30 2 * * *", "0 5 * * 0")
    env = _env(tmp_path, FLICKR_API_KEY=KEY, FLICKR_API_SECRET=SECRET)
    stdout = ""
    for task_id, command in mod.NIGHTLY_TASKS + mod.MAINTAIN_TASKS:
        assert command.startswith(f"cd {REPO} && ")
        # what Airflow's template gives for the run scheduled at 2026-11-22 02:30 UTC
        rendered = command.replace(mod.NIGHT, NIGHT)
        out = _run_shell(_with_dry_run(rendered), env)
        assert out.returncode == 0, (task_id, out.stderr[-3000:])
        assert KEY not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr
        assert _submitted_jobs(out.stdout) == [f"{task_id}.py"], out.stdout
        stdout += out.stdout
    assert _submitted_jobs(stdout) == ["ingest.py", "features.py", "score.py", "maintain.py"]
    assert _submit_line(stdout, "ingest")[1:] == ["flickr", "--search", "--since", "2026-11-21", "--until", NIGHT]


# --------------------------------------------------------------------------- the CLI in a process


def test_dry_run_with_flickr_credentials_searches_the_previous_day_and_hides_them(tmp_path):
    env = _env(tmp_path, FLICKR_API_KEY=KEY, FLICKR_API_SECRET=SECRET, MOODLAKE__NIGHTLY__FLICKR_TAGS="sunset,sea",
               **NO_METASTORE)
    out = subprocess.run([MOODLAKE, "nightly", "--dry-run", "--date", NIGHT], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _submitted_jobs(out.stdout) == ["ingest.py", "features.py", "score.py"]
    assert _submit_line(out.stdout, "ingest")[1:] == [
        "flickr", "--search", "--since", "2026-11-21", "--until", "2026-11-22", "--tags", "sunset,sea"]
    assert KEY not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr
    # one line per step: start, end, duration, exit code
    steps = [ln for ln in out.stdout.splitlines() if ln.startswith(f"[nightly {NIGHT}] step=")]
    assert [re.search(r"step=(\S+)", ln).group(1) for ln in steps] == ["ingest:flickr-search", "features", "score"]
    assert all(re.search(r"start=\S+Z end=\S+Z duration=[\d.]+s exit=0", ln) for ln in steps), steps
    assert not (tmp_path / "lh").exists()  # a dry run writes nothing


def test_dry_run_without_credentials_uses_the_configured_sources(tmp_path):
    env = _env(tmp_path, MOODLAKE__NIGHTLY__SOURCES="[[dataset, export, --path, /data/incoming], [synthetic, --n, 5]]",
               **NO_METASTORE)
    out = subprocess.run([MOODLAKE, "nightly", "--dry-run", "--date", NIGHT, "--skip", "score"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _submitted_jobs(out.stdout) == ["ingest.py", "ingest.py", "features.py"]
    assert "flickr" not in " ".join(_submitted_jobs(out.stdout)) and "--search" not in out.stdout
    assert "/jobs/ingest.py dataset export --path /data/incoming\n" in out.stdout
    assert "/jobs/ingest.py synthetic --n 5\n" in out.stdout
    assert "skipped: score" in out.stdout


def test_a_failing_spark_submit_job_stops_the_chain_with_its_code(tmp_path):
    """A real spark-submit job that exits 2 (its arguments are wrong): features and score never start."""
    env = _env(tmp_path, MOODLAKE__NIGHTLY__SOURCES="[[dataset, no-such-dataset]]", **NO_METASTORE)
    out = subprocess.run([MOODLAKE, "nightly", "--date", NIGHT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr[-3000:]
    # the job's own argparse, under spark-submit (which sends the Python job's stderr to its stdout)
    assert "invalid choice: 'no-such-dataset'" in out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(f"[nightly {NIGHT}]")]
    assert re.search(r"step=ingest:dataset-no-such-dataset .* exit=2", lines[1]), lines
    assert "FAILED at step ingest:dataset-no-such-dataset with exit code 2; not run: features, score" in lines[2]
    assert len(lines) == 3, lines


# --------------------------------------------------------------------------- in-process


@pytest.fixture()
def plain_cfg(tmp_path):
    return load_config("demo", overrides={"lakehouse.home": str(tmp_path / "lh")}, environ={})


def _with(cfg, **nightly):
    return dataclasses.replace(cfg, nightly=dataclasses.replace(cfg.nightly, **nightly))


def test_plan(plain_cfg):
    night = dt.date(2026, 1, 1)
    # no credentials, no sources: nothing to ingest
    assert [s.name for s in plan(plain_cfg, night)] == ["features", "score"]
    keyed = dataclasses.replace(plain_cfg, flickr=dataclasses.replace(
        plain_cfg.flickr, api_key=Secret(KEY), api_secret=Secret(SECRET)))
    cfg = _with(keyed, flickr_text="happy dog", flickr_max=500, score_args=("--limit", "1000"),
                sources=(("dataset", "export", "--path", "/a"), ("dataset", "export", "--path", "/b")))
    steps = plan(cfg, night)
    assert steps == [
        Step("ingest", "ingest:flickr-search", "ingest",
             ("flickr", "--search", "--since", "2025-12-31", "--until", "2026-01-01", "--text", "happy dog", "--max", "500")),
        Step("ingest", "ingest:dataset-export", "ingest", ("dataset", "export", "--path", "/a")),
        Step("ingest", "ingest:dataset-export#2", "ingest", ("dataset", "export", "--path", "/b")),
        Step("features", "features", "features"),
        Step("score", "score", "score", ("--limit", "1000")),
    ]
    assert [s.name for s in plan(_with(cfg, flickr_search=False), night, skip=["score"])] == [
        "ingest:dataset-export", "ingest:dataset-export#2", "features"]
    assert plan(cfg, night, skip=["ingest", "features", "score"]) == []
    with pytest.raises(ValueError, match="unknown step"):
        plan(cfg, night, skip=["train"])
    assert parse_night(None, today=night) == night and parse_night("2026-02-28") == dt.date(2026, 2, 28)
    assert parse_night(None) == dt.datetime.now(dt.timezone.utc).date()
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_night("22.11.2026")


def test_run_chain_stops_at_the_first_failure(plain_cfg):
    steps = plan(_with(plain_cfg, sources=(("synthetic", "--n", "5"),)), dt.date(2026, 11, 22))
    for codes, expected, ran in (({"features": 3}, 3, ["ingest:synthetic", "features"]),
                                 ({"ingest:synthetic": -9}, 137, ["ingest:synthetic"]),  # SIGKILL, as a shell says
                                 ({}, 0, ["ingest:synthetic", "features", "score"])):
        calls, out = [], io.StringIO()

        def run(step, codes=codes, calls=calls):
            calls.append(step.name)
            return codes.get(step.name, 0)

        assert run_chain(plain_cfg, dt.date(2026, 11, 22), steps, run, out=out) == expected
        assert calls == ran
        text = out.getvalue()
        assert text.count("step=") == len(ran)
        if expected:
            assert f"FAILED at step {ran[-1]} with exit code {expected}" in text
        else:
            assert "done: 3 steps succeeded" in text
    assert exit_code(0) == 0 and exit_code(2) == 2 and exit_code(-15) == 143


def test_cli_nightly_passes_on_the_failing_code_and_the_overrides(tmp_path, monkeypatch, capsys):
    """moodlake nightly in-process, the spark-submit runner replaced: exit codes, --only, --set, --date."""
    for k in [k for k in os.environ if k.startswith(("MOODLAKE", "FLICKR_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MOODLAKE_HOME", str(tmp_path / "lh"))
    monkeypatch.setenv("MOODLAKE__FEATURES__VERSION", "1")  # restored after the test: nightly sets it
    calls = []

    def fake_submit(cfg, args):
        calls.append((args.job, tuple(args.job_args), args.dry_run, os.environ.get("MOODLAKE__FEATURES__VERSION")))
        return {"features": 0, "score": 1}[args.job]

    monkeypatch.setattr(cli, "_submit", fake_submit)
    assert cli.main(["--set", "features.version=7", "nightly", "--date", NIGHT]) == 1
    assert calls == [("features", (), False, "7"), ("score", (), False, "7")]
    assert "FAILED at step score with exit code 1" in capsys.readouterr().out

    calls.clear()
    assert cli.main(["nightly", "--only", "features", "--dry-run", "--date", NIGHT]) == 0
    assert [c[:3] for c in calls] == [("features", (), True)]
    assert cli.main(["nightly", "--date", "2026-13-01"]) == 2
    assert "--date expects YYYY-MM-DD" in capsys.readouterr().err


def test_nightly_configuration_is_validated(tmp_path):
    from moodlake.config import ConfigError

    cfg = load_config("demo", environ={"MOODLAKE__NIGHTLY__SOURCES": "[[dataset, export, --path, /x], [synthetic, --n, 5]]"})
    assert cfg.nightly.sources == (("dataset", "export", "--path", "/x"), ("synthetic", "--n", "5"))  # numbers as text
    with pytest.raises(ConfigError, match=r"override nightly.flickr_max: nightly.flickr_max: must be >= 0"):
        load_config("demo", overrides={"nightly.flickr_max": "-1"}, environ={})
    with pytest.raises(ConfigError, match=r"nightly.sources: every entry must be a non-empty list"):
        load_config("demo", overrides={"nightly.sources": "[[]]"}, environ={})
    with pytest.raises(ConfigError, match=r"nightly.score_args: expected a list"):
        load_config("demo", overrides={"nightly.score_args": "--limit 5"}, environ={})
