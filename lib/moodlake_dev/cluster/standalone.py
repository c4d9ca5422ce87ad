"""A Spark standalone cluster on 127.0.0.1: a master and workers, each a ``spark-class`` JVM.

The cluster suite (tests/cluster/) and the README's timings use it; it is also handy by hand::

    python -m moodlake_dev.cluster.standalone --workers 2      # prints the master URL, Ctrl-C stops it

Every process starts in a session (process group) of its own, so :meth:`StandaloneCluster.stop`
and :meth:`StandaloneCluster.kill_worker` take the executors and Python workers a worker launched
along with it. Each worker has its own work directory (``<root>/worker-N``), cores and memory.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from moodlake import services

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    pass


def spark_class() -> str:
    """The ``spark-class`` launcher of the pyspark that runs (the virtual environment's bin/)."""
    path = Path(sys.prefix) / "bin" / "spark-class"
    if not path.exists():
        raise ClusterError(f"no spark-class in {path.parent}: is pyspark installed in this environment?")
    return str(path)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class StandaloneCluster:
    root: Path
    workers: int = 2
    cores: int = 1
    memory: str = "2g"
    master_port: int = 0
    ui_port: int = 0
    processes: list[Process] = field(default_factory=list)
    worker_ui_ports: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    def _env(self) -> dict:
        # a lost worker is noticed in 30 s (default 60); both sides need it: workers heartbeat every timeout / 4
        timeout = "-Dspark.worker.timeout=30"
        return dict(os.environ, SPARK_LOCAL_IP=HOST, PYSPARK_PYTHON=sys.executable,
                    SPARK_MASTER_OPTS=timeout, SPARK_WORKER_OPTS=timeout)

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([spark_class(), *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env(), cwd=self.root, start_new_session=True)
        p = Process(name, proc, log)
        self.processes.append(p)
        return p

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://{HOST}:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")
        except (OSError, ValueError):  # not up yet, or a page that is not JSON while it starts
            return 0

    def start(self, timeout: float = 120.0) -> "StandaloneCluster":
        """Start the master, then the workers; returns once every worker has registered."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.master_port = self.master_port or services.free_port(HOST)
        self.ui_port = self.ui_port or services.free_port(HOST)
        master = self._spawn("master", [MASTER_CLASS, "--host", HOST, "--port", str(self.master_port),
                                        "--webui-port", str(self.ui_port)])
        deadline = time.monotonic() + timeout
        try:
            services.wait_for_port(master.proc, HOST, self.ui_port, timeout, "the Spark master", master.log)
            for i in range(self.workers):
                self.start_worker(i)
            while self.alive_workers() < self.workers:
                dead = [p for p in self.processes if not p.alive()]
                if dead:
                    raise ClusterError(f"{dead[0].name} exited: {services.log_tail(dead[0].log)}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"{self.alive_workers()} of {self.workers} workers registered in {timeout:.0f} s")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, i: int) -> Process:
        work = self.root / f"worker-{i}"
        work.mkdir(parents=True, exist_ok=True)
        self.worker_ui_ports[i] = services.free_port(HOST)
        return self._spawn(f"worker-{i}", [WORKER_CLASS, "--host", HOST, "--cores", str(self.cores),
                                           "--memory", self.memory, "--work-dir", str(work),
                                           "--webui-port", str(self.worker_ui_ports[i]), self.url])

    def executor_ids(self, i: int, app_id: str) -> set[str]:
        """The ids of the executors that worker ``i`` runs for application ``app_id`` (its UI's JSON)."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.worker_ui_ports[i]}/json/", timeout=5) as r:
                state = json.load(r)
        except (OSError, ValueError):
            return set()
        return {str(e.get("id")) for e in state.get("executors", []) if e.get("appid") == app_id}

    def worker(self, i: int) -> Process:
        return next(p for p in self.processes if p.name == f"worker-{i}")

    def executor_pids(self, i: int) -> list[int]:
        """The pids of the executor JVMs that worker ``i`` launched (its process group)."""
        pgid = self.worker(i).proc.pid
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid and "CoarseGrainedExecutorBackend" in \
                            (entry / "cmdline").read_bytes().decode(errors="replace"):
                        out.append(int(entry.name))
                except (OSError, ProcessLookupError):
                    continue
        return out

    def python_cpu_seconds(self, i: int) -> float:
        """CPU seconds used so far by the Python workers (pyspark.daemon and its forks) of worker ``i``'s
        executors: sampled twice, it tells whether a Python task is running there now."""
        pgid = self.worker(i).proc.pid
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid and b"pyspark" in (entry / "cmdline").read_bytes():
                        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                except (OSError, ProcessLookupError, IndexError, ValueError):
                    continue
        return total

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` with everything it launched (executor, Python workers)."""
        p = self.worker(i)
        try:
            os.killpg(p.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process the cluster started (workers first), whatever state they are in."""
        for p in reversed(self.processes):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(p.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # the executors of a worker that went first
                os.killpg(p.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.processes.clear()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--memory", default="2g")
    p.add_argument("--root", help="work directories and logs (default: a temporary folder)")
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="moodlake-cluster-"))
    with StandaloneCluster(root, args.workers, args.cores, args.memory) as c:
        print(f"master {c.url} (UI http://{HOST}:{c.ui_port}), {args.workers} workers; logs in {root}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
