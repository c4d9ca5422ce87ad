"""Long-running helper processes of a lakehouse (the Derby metastore server, the JDBC server).

Each service of a lakehouse is one detached process (its own session, so that a job killed with
its process group does not take it along), with

- ``$MOODLAKE_HOME/state/<name>.json``: ``{pid, port, host, ...}``, written when it starts;
- ``$MOODLAKE_HOME/state/<name>.lock``: held (``flock``) while a process checks for or starts it,
  so that two processes that race start one server, and the second reuses it;
- ``$MOODLAKE_HOME/logs/<name>.log``: its standard output and error.

A recorded process counts as running only if its pid is alive and its command line carries the
markers ``-Dmoodlake.service=<name>`` and ``-Dmoodlake.home=<home>`` (a recycled pid is not
mistaken for it) and its port answers.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MARK_SERVICE = "-Dmoodlake.service="
MARK_HOME = "-Dmoodlake.home="


class ServiceError(RuntimeError):
    """A service did not start or stop; the message says why (with its log's tail)."""


class ServiceExited(ServiceError):
    """The service's process ended while it was starting."""


def markers(name: str, home: str | Path) -> list[str]:
    """JVM options that name the service and its lakehouse on the process's command line."""
    return [f"{MARK_SERVICE}{name}", f"{MARK_HOME}{Path(home)}"]


def state_dir(home: str | Path) -> Path:
    return Path(home) / "state"


def logs_dir(home: str | Path) -> Path:
    return Path(home) / "logs"


def state_file(home: str | Path, name: str) -> Path:
    return state_dir(home) / f"{name}.json"


def log_file(home: str | Path, name: str) -> Path:
    return logs_dir(home) / f"{name}.log"


@contextlib.contextmanager
def locked(home: str | Path, name: str):
    """Hold the service's lock file (blocking) for the duration of the block."""
    path = state_dir(home) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_state(home: str | Path, name: str) -> dict | None:
    try:
        return json.loads(state_file(home, name).read_text())
    except (FileNotFoundError, ValueError):
        return None


def write_state(home: str | Path, name: str, state: dict) -> None:
    path = state_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def clear_state(home: str | Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_file(home, name).unlink()


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _zombie(pid: int) -> bool:
    """True if the process has exited (a zombie whose threads are all gone, so that its files and
    sockets are closed: a JVM's main thread is a zombie while its other threads still exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def is_service_process(pid: int, name: str, home: str | Path) -> bool:
    """True if ``pid`` is alive and is the ``name`` service of the lakehouse ``home``."""
    if not pid or _zombie(pid):
        return False
    args = cmdline(pid)
    return markers(name, home)[0] in args and markers(name, home)[1] in args


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True if a server could listen on the port now (as Java's, with SO_REUSEADDR: connections
    of a dead server in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def running(home: str | Path, name: str) -> dict | None:
    """The recorded state of the service if its process is alive and its port answers."""
    state = read_state(home, name)
    if not state or not is_service_process(int(state.get("pid") or 0), name, home):
        return None
    if not port_open(state.get("host", "127.0.0.1"), int(state["port"])):
        return None
    return state


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def spawn(cmd: list[str], log: Path, env: dict | None = None, cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` detached: its own session, stdin from /dev/null, output appended to ``log``,
    no inherited descriptors (a caller's pipes and lock files stay its own)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env, cwd=cwd)


def wait_for_port(proc: subprocess.Popen, host: str, port: int, timeout: float, what: str, log: Path) -> None:
    """Wait until ``port`` answers; raise :class:`ServiceError` with the log's tail if the process
    exits first or ``timeout`` passes (the process is then stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc.poll() is not None:
            raise ServiceExited(f"{what} exited with status {proc.returncode} before it answered on "
                               f"{host}:{port}; the end of {log}:\n{log_tail(log)}")
        time.sleep(0.2)
    terminate(proc.pid)
    raise ServiceError(f"{what} did not answer on {host}:{port} within {timeout:.0f} s (stopped it); "
                       f"the end of {log}:\n{log_tail(log)}")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _zombie(pid):
        # our own child: reap it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def terminate(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_gone(pid, 10)


@dataclass(frozen=True)
class ServiceProcess:
    pid: int
    name: str
    home: str


def find_processes() -> list[ServiceProcess]:
    """Every MoodLake service process of this machine (by the markers on its command line)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        args = cmdline(int(d.name))
        name = next((a[len(MARK_SERVICE):] for a in args if a.startswith(MARK_SERVICE)), None)
        home = next((a[len(MARK_HOME):] for a in args if a.startswith(MARK_HOME)), None)
        if name and home and not _zombie(int(d.name)):
            found.append(ServiceProcess(int(d.name), name, home))
    return found


def reap_orphans() -> list[ServiceProcess]:
    """Stop the service processes of lakehouses that no longer exist (a temporary lakehouse that
    was deleted under its servers: nothing can use them any more). Returns what was stopped."""
    gone = [p for p in find_processes() if not Path(p.home).exists()]
    for p in gone:
        terminate(p.pid, timeout=10)
    return gone


def java() -> str:
    """The java that Spark uses: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    import shutil

    found = shutil.which("java")
    if not found:
        raise ServiceError("no java found (set JAVA_HOME or put java on PATH); Spark needs Java 17")
    return found
