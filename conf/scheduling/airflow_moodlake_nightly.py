"""Airflow DAGs for MoodLake: the nightly chain and the weekly table maintenance.

- ``moodlake_nightly`` (02:30 UTC daily): ``ingest >> features >> score``, one task per step of
  ``moodlake nightly`` (``--only STEP``; each step is one or more spark-submit jobs whose settings
  come from MoodLake's configuration). A run processes the night at the end of its data interval:
  ``--date`` = that day, so the Flickr search covers the day before it. Clearing a task re-runs
  that step for the same night (every step is idempotent).
- ``moodlake_maintain`` (Sunday 05:00 UTC): ``moodlake submit maintain`` (OPTIMIZE and VACUUM every
  table, keeping ``maintenance.retention_days`` of time travel).

The commands are plain data (``NIGHTLY_TASKS``, ``MAINTAIN_TASKS``: ``(task_id, bash_command)``)
built before Airflow is imported, so they can be read, tested and run by hand where Airflow is not
installed (tests/test_nightly.py runs each with ``--dry-run``). Airflow 2 (>= 2.4) and 3 are both
supported. Copy this file into the DAG folder of workers that have the project checked out at
``MOODLAKE_DIR`` with its ``.venv`` (``make setup``) and the Flickr credentials in
``conf/local/flickr.yaml`` or the workers' environment; nothing secret goes into the DAG.

A task's exit code is the step's: 0 done, 1 a failure, 2 a configuration or setup error.
"""
from __future__ import annotations

import datetime as _dt
import os
import shlex

# Where the project is checked out on the workers, and the configuration environment (conf/<env>/).
MOODLAKE_DIR = os.environ.get("MOODLAKE_DIR", "/opt/moodlake")
MOODLAKE_ENV = os.environ.get("MOODLAKE_AIRFLOW_ENV", "prod")

# The night a run processes: the (UTC) day its data interval ends. For the run scheduled at
# 2026-11-22 02:30 that is 2026-11-22 with Airflow 2's cron data intervals ([11-21 02:30, 11-22 02:30])
# and with Airflow 3's cron trigger timetable (an interval of length 0 at 11-22 02:30) alike.
NIGHT = "{{ data_interval_end | ds }}"

NIGHTLY_SCHEDULE = "30 2 * * *"
MAINTAIN_SCHEDULE = "0 5 * * 0"


def _moodlake(*args: str) -> str:
    return f"cd {shlex.quote(MOODLAKE_DIR)} && .venv/bin/moodlake --env {shlex.quote(MOODLAKE_ENV)} " + " ".join(args)


NIGHTLY_TASKS: list[tuple[str, str]] = [
    (step, _moodlake("nightly", "--only", step, "--date", NIGHT)) for step in ("ingest", "features", "score")
]
MAINTAIN_TASKS: list[tuple[str, str]] = [("maintain", _moodlake("submit", "maintain"))]

try:  # Airflow is imported only here: without it the module still gives the commands above
    import airflow  # noqa: F401
except ImportError:
    airflow = None

if airflow is not None:
    try:  # Airflow 3
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG
    except ImportError:  # Airflow 2
        from airflow import DAG
        from airflow.operators.bash import BashOperator

    _DEFAULTS = {"owner": "moodlake", "retries": 1, "retry_delay": _dt.timedelta(minutes=15)}
    _START = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)

    with DAG(
        dag_id="moodlake_nightly",
        description="MoodLake: ingest the previous day's posts, compute features, score them",
        schedule=NIGHTLY_SCHEDULE,
        start_date=_START,
        catchup=False,
        max_active_runs=1,
        default_args=_DEFAULTS,
        tags=["moodlake"],
    ) as nightly_dag:
        _previous = None
        for _task_id, _command in NIGHTLY_TASKS:
            _task = BashOperator(task_id=_task_id, bash_command=_command,
                                 execution_timeout=_dt.timedelta(hours=6))
            if _previous is not None:
                _previous >> _task
            _previous = _task

    with DAG(
        dag_id="moodlake_maintain",
        description="MoodLake: OPTIMIZE and VACUUM every Delta table (weekly)",
        schedule=MAINTAIN_SCHEDULE,
        start_date=_START,
        catchup=False,
        max_active_runs=1,
        default_args=_DEFAULTS,
        tags=["moodlake"],
    ) as maintain_dag:
        for _task_id, _command in MAINTAIN_TASKS:
            BashOperator(task_id=_task_id, bash_command=_command, execution_timeout=_dt.timedelta(hours=6))
