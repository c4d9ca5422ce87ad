"""A lakehouse for spark-submitted jobs (``moodlake submit``) and the whole pipeline run on it: the
driver of the cluster suite (tests/cluster/) and of the cluster benchmark (:mod:`moodlake_dev.bench.cluster`,
the README's cluster table).

Each lake has a home of its own whose warehouse, datasets, model registry and training runs are
``file://`` URIs (with a space in the path, as a check that nothing splits them); the Derby metastore
server of that lakehouse is shared by the submitted applications, and stopped at the end. On the
standalone cluster (:mod:`moodlake_dev.cluster.standalone`) training runs with ``TorchDistributor`` on
the executors (``training.local_mode: false``), 2 processes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# (label, job, arguments): the pipeline in order, small (one epoch). Two DDP ranks need at least two
# Petastorm row groups (~1 MB of images each) in every split they read: hence DATASET's large val split.
PIPELINE = (
    ("ingest", "ingest", ["synthetic", "--n", "{posts}", "--seed", "7"]),
    ("features", "features", []),
    ("datasets build", "datasets", ["build", "cluster"]),
    ("train (2 processes)", "train", ["--dataset", "cluster", "--epochs", "1", "--batch-size", "8", "--promote"]),
    ("evaluate", "evaluate", []),
    ("score", "score", ["--limit", "{score_limit}"]),
)
DATASET = {"sources": ["synthetic"], "label_set": "mikels8",
           "split": {"scheme": "hash", "train": 0.4, "val": 0.4, "test": 0.2, "seed": 0}}


class JobFailed(RuntimeError):
    pass


@dataclass
class Lake:
    """A lakehouse for submitted jobs: its home (driver-local state), file:// URIs for what executors
    read and write, and the environment every ``moodlake submit`` of it runs with."""

    root: Path
    master: str
    overrides: dict = field(default_factory=dict)  # {section: {key: value}}; spark_conf: {spark.*: value}
    logs: list = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "lake home"

    def uri(self, name: str) -> str:
        return f"file://{self.root}/shared store/{name}"

    def settings(self) -> dict:
        """The lakehouse's configuration layer (conf/<env>/moodlake.yaml over conf/base)."""
        spark_conf = {"spark.executor.memory": "1g", **self.overrides.get("spark_conf", {})}
        settings = {
            "spark": {"master": self.master, "shuffle_partitions": 2, "driver_memory": "1g", "conf": spark_conf},
            "lakehouse": {"home": str(self.home), "warehouse_dir": self.uri("warehouse")},
            "datasets": {"root": self.uri("datasets"), "definitions": {"cluster": DATASET}},
            "training": {"root": self.uri("training"), "models_root": self.uri("models"), "processes": 2,
                         "local_mode": not self.master.startswith("spark://"), "reader_workers": 1},
            "ingest": {"progress_interval_s": 2},
            "scoring": {"progress_interval_s": 2},
        }
        for section, values in self.overrides.items():
            if section != "spark_conf":
                settings.setdefault(section, {}).update(values)
        return settings

    @property
    def env(self) -> dict:
        """The environment of every job: MOODLAKE_CONF_DIR is a folder of this lake's own (conf/base
        linked, and an environment ``lake`` with :meth:`settings`)."""
        import yaml

        conf = self.root / "conf"
        if not (conf / "base").exists():
            from moodlake.config import conf_dir

            (conf / "lake").mkdir(parents=True, exist_ok=True)
            (conf / "base").symlink_to(conf_dir() / "base")
        (conf / "lake" / "moodlake.yaml").write_text(yaml.safe_dump(self.settings()))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
        # PYSPARK_PYTHON: the interpreter with pyspark, which spark-submit's find-spark-home runs
        env.update({"MOODLAKE_CONF_DIR": str(conf), "MOODLAKE_ENV": "lake", "SPARK_LOCAL_IP": "127.0.0.1",
                    "PYTHONUNBUFFERED": "1", "PYSPARK_PYTHON": sys.executable})
        return env

    def config(self):
        """The configuration the lake's jobs load (conf_dir() reads MOODLAKE_CONF_DIR from os.environ)."""
        from moodlake.config import load_config

        env, before = self.env, os.environ.get("MOODLAKE_CONF_DIR")
        os.environ["MOODLAKE_CONF_DIR"] = env["MOODLAKE_CONF_DIR"]
        try:
            return load_config(environ=env)
        finally:
            if before is None:
                os.environ.pop("MOODLAKE_CONF_DIR")
            else:
                os.environ["MOODLAKE_CONF_DIR"] = before

    def _run(self, cmd: list[str], label: str, timeout: float, on_line=None) -> tuple[float, str]:
        """Run ``cmd`` in a process group of its own (killed whole on timeout); (seconds, output)."""
        log = self.root / f"{len(self.logs):02d}-{re.sub(r'[^a-z0-9]+', '-', label.lower())}.log"
        self.logs.append(log)
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, cwd=self.root, start_new_session=True)
            try:
                while proc.poll() is None:
                    if time.monotonic() - start > timeout:
                        raise JobFailed(f"{label}: still running after {timeout:.0f} s (log {log})")
                    if on_line is not None:
                        on_line(log.read_text(errors="replace"))
                    time.sleep(0.5)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        seconds = time.monotonic() - start
        text = log.read_text(errors="replace")
        if proc.returncode != 0:
            raise JobFailed(f"{label}: exit code {proc.returncode} after {seconds:.0f} s; log {log}:\n{text[-4000:]}")
        return seconds, text

    def submit(self, job: str, *args: str, timeout: float = 600, on_line=None) -> tuple[float, str]:
        """``moodlake submit JOB ARGS`` (spark-submit of jobs/JOB.py); (seconds, output)."""
        return self._run([str(Path(sys.prefix) / "bin" / "moodlake"), "submit", job, *args], f"{job} {' '.join(args)}",
                         timeout, on_line)

    def probe(self, *queries: str, timeout: float = 300) -> list[list[dict]]:
        """The rows of each SQL query, read by a submitted application (moodlake_dev.cluster.table_probe)."""
        from moodlake.spark import spark_submit_command
        from moodlake_dev.cluster import table_probe

        cmd = spark_submit_command(self.config(), table_probe.__file__, list(queries), app_name="moodlake-probe")
        _, text = self._run(cmd, "probe", timeout)
        line = next(ln for ln in text.splitlines() if ln.startswith("PROBE-JSON "))
        return json.loads(line[len("PROBE-JSON "):])

    def stop(self) -> None:
        """Stop the lakehouse's Derby metastore server (started by the first job)."""
        from moodlake import metastore

        try:
            metastore.stop(self.config())
        except Exception as e:  # noqa: BLE001 - teardown goes on
            print(f"metastore stop: {e}", file=sys.stderr)


def run_pipeline(lake: Lake, posts: int = 240, score_limit: int | None = None, timeout: float = 600) -> dict[str, float]:
    """Submit every job of :data:`PIPELINE` in order (scoring ``score_limit`` posts, default all); their
    wall-clock seconds by label."""
    times = {}
    for label, job, args in PIPELINE:
        args = [a.format(posts=posts, score_limit=score_limit or posts) for a in args]
        times[label], _ = lake.submit(job, *args, timeout=timeout)
        print(f"{lake.master}: {label}: {times[label]:.1f} s", flush=True)
    return times
