"""The Hive metastore of the embedded lakehouse, shared by every Spark application on it.

An embedded Derby database admits one JVM at a time, so Spark applications on the same lakehouse
(the JDBC server of :mod:`moodlake.sql_server`, a nightly job, a notebook) could not run together.
The embedded default (``lakehouse.metastore_uri`` empty) therefore serves the same database files,
``$MOODLAKE_HOME/metastore_db``, through Derby's network server: one detached ``java`` process per
lakehouse, bound to 127.0.0.1, on ``lakehouse.metastore_port`` (0: a free port, the last one
reused when it is free). :func:`ensure_running` starts it or finds it (``build_spark`` calls it
before every session); its pid and port are in ``$MOODLAKE_HOME/state/metastore.json``, its log
in ``$MOODLAKE_HOME/logs/metastore.log`` (Derby's own in ``metastore-derby.log``). A metastore
folder written by the embedded driver is the same database: it is served as it is.

Spark reaches it with Derby's client driver, ``jdbc:derby://127.0.0.1:PORT//abs/home/metastore_db``
(the client jar on the driver class path, see :func:`moodlake.spark.spark_conf`). With an
external Hive metastore (``conf/prod``) nothing here runs.

    moodlake metastore start | status | stop
"""
from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from moodlake import services
from moodlake.config import Config

log = logging.getLogger(__name__)

NAME = "metastore"
HOST = "127.0.0.1"
# Derby 10.15+ keeps the client driver class in derbytools.jar (pyspark ships it); it loads
# org.apache.derby.client.* from derbyclient.jar. (org.apache.derby.client.ClientDriver does not exist.)
DRIVER = "org.apache.derby.jdbc.ClientDriver"
SERVER_CLASS = "org.apache.derby.drda.NetworkServerControl"
START_TIMEOUT_S = 60.0
_CHILDREN: list[subprocess.Popen] = []  # kept so that Python does not warn about them at exit


class MetastoreError(services.ServiceError):
    pass


def enabled(cfg: Config) -> bool:
    """True for the embedded default (no external Hive metastore configured)."""
    return not cfg.lakehouse.metastore_uri


def database_path(cfg: Config) -> Path:
    return Path(cfg.lakehouse.home) / "metastore_db"


def connection_url(cfg: Config, port: int) -> str:
    # an absolute database path follows the port's slash: jdbc:derby://h:p//abs/path
    return f"jdbc:derby://{HOST}:{port}/{database_path(cfg)};create=true"


def _classpath(names: tuple[str, ...]) -> str:
    from moodlake.spark import derby_jars

    jars = derby_jars()
    return ":".join(jars[n] for n in names)


def server_command(cfg: Config, port: int) -> list[str]:
    home = Path(cfg.lakehouse.home)
    return [
        services.java(), "-Xmx256m", "-XX:+UseSerialGC", *services.markers(NAME, home),
        f"-Dderby.system.home={home}",
        f"-Dderby.stream.error.file={services.logs_dir(home) / 'metastore-derby.log'}",
        "-cp", _classpath(("derby", "derbyshared", "derbytools", "derbynet")),
        SERVER_CLASS, "start", "-h", HOST, "-p", str(port), "-noSecurityManager",
    ]


def _require_enabled(cfg: Config) -> None:
    if not enabled(cfg):
        raise MetastoreError(f"lakehouse.metastore_uri is {cfg.lakehouse.metastore_uri}: the metastore is "
                             "external, nothing runs locally")


def status(cfg: Config) -> dict | None:
    """The running server's state (pid, port, host, url, log), or None."""
    _require_enabled(cfg)
    return services.running(cfg.lakehouse.home, NAME)


def _choose_port(cfg: Config, previous: dict | None) -> int:
    wanted = cfg.lakehouse.metastore_port
    if wanted:
        if not services.port_free(HOST, wanted):
            raise MetastoreError(f"lakehouse.metastore_port {wanted} on {HOST} is taken by another process")
        return wanted
    if previous and previous.get("port"):
        deadline = time.monotonic() + 2  # a server that just died may still hold it a moment
        while time.monotonic() < deadline:
            if services.port_free(HOST, int(previous["port"])):
                return int(previous["port"])  # the same URL as before where possible
            time.sleep(0.1)
    return services.free_port(HOST)


def ensure_running(cfg: Config, timeout: float = START_TIMEOUT_S) -> dict:
    """Start the lakehouse's Derby network server unless it runs; returns its state.

    Safe when several processes call it at once: the first starts the server under the lock
    file, the others wait on the lock and then find it.
    """
    _require_enabled(cfg)
    home = Path(cfg.lakehouse.home)
    found = services.running(home, NAME)
    if found and found.get("database") == str(database_path(cfg)):
        return found
    for p in services.reap_orphans():
        log.info("stopped the %s server (pid %d) of the deleted lakehouse %s", p.name, p.pid, p.home)
    with services.locked(home, NAME):
        previous = services.read_state(home, NAME) or _adopt(cfg)
        if previous and services.is_service_process(int(previous.get("pid") or 0), NAME, home):
            # alive but not answering (stuck or a foreign state): give it a moment, then replace it
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not services.port_open(HOST, int(previous["port"])):
                time.sleep(0.2)
            if services.port_open(HOST, int(previous["port"])):
                return previous
            log.warning("metastore server pid %s does not answer on port %s: restarting it",
                        previous["pid"], previous["port"])
            _shutdown(previous)
        last_error = None
        for _ in range(3):  # a free port may be taken between choosing it and binding it
            port = _choose_port(cfg, previous)
            logfile = services.log_file(home, NAME)
            started = time.monotonic()
            proc = services.spawn(server_command(cfg, port), logfile, cwd=home)
            _CHILDREN.append(proc)
            state = {"pid": proc.pid, "port": port, "host": HOST, "url": connection_url(cfg, port),
                     "database": str(database_path(cfg)), "log": str(logfile),
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            services.write_state(home, NAME, state)
            try:
                services.wait_for_port(proc, HOST, port, timeout, "the Derby metastore server", logfile)
            except services.ServiceError as e:
                services.clear_state(home, NAME)
                last_error = e
                if cfg.lakehouse.metastore_port or not isinstance(e, services.ServiceExited):
                    break
                previous = None  # perhaps its port was taken meanwhile: another one
                continue
            log.info("metastore: Derby network server on %s:%d (pid %d), %.1f s", HOST, port, proc.pid,
                     time.monotonic() - started)
            return state
        raise MetastoreError(str(last_error))


def _adopt(cfg: Config) -> dict | None:
    """The state of a server of this lakehouse whose state file was lost (found by its markers)."""
    home = Path(cfg.lakehouse.home)
    for p in services.find_processes():
        if p.name == NAME and Path(p.home) == home:
            args = services.cmdline(p.pid)
            if "-p" in args[:-1] and args[args.index("-p") + 1].isdigit():
                port = int(args[args.index("-p") + 1])
                state = {"pid": p.pid, "port": port, "host": HOST, "url": connection_url(cfg, port),
                         "database": str(database_path(cfg)), "log": str(services.log_file(home, NAME)),
                         "started_at": None}
                services.write_state(home, NAME, state)
                return state
    return None


def _shutdown(state: dict, timeout: float = 30.0) -> None:
    """Derby's own shutdown (a clean checkpoint of the database), then signals if needed."""
    pid, port = int(state["pid"]), int(state["port"])
    try:
        subprocess.run([services.java(), "-cp", _classpath(("derby", "derbyshared", "derbytools", "derbynet")),
                        SERVER_CLASS, "shutdown", "-h", HOST, "-p", str(port)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (subprocess.TimeoutExpired, OSError) as e:
        log.warning("Derby shutdown command failed (%s): terminating pid %d", e, pid)
    if not services.wait_gone(pid, timeout):
        services.terminate(pid)


def stop(cfg: Config, timeout: float = 30.0) -> dict | None:
    """Stop the lakehouse's Derby network server; returns the state it had, or None if none ran."""
    _require_enabled(cfg)
    home = Path(cfg.lakehouse.home)
    with services.locked(home, NAME):
        state = services.read_state(home, NAME)
        if not state or not services.is_service_process(int(state.get("pid") or 0), NAME, home):
            state = _adopt(cfg)
        if not state:
            services.clear_state(home, NAME)
            return None
        _shutdown(state, timeout)
        services.clear_state(home, NAME)
        return state
