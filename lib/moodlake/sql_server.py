"""The lakehouse's JDBC/ODBC endpoint: Spark's Thrift server (HiveServer2 protocol).

    moodlake sql-server start | status | stop
    beeline -u jdbc:hive2://127.0.0.1:10000/default -e "select count(*) from moodlake.posts"
    moodlake sql "select ..."          # through the server when it runs (about a second)

One detached ``spark-submit --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2``
per lakehouse, with MoodLake's Spark settings (Delta's extension and catalog, the warehouse, the
shared metastore of :mod:`moodlake.metastore`), listening on ``sql_server.host`` (127.0.0.1) and
``sql_server.port`` (0: a free port). Its pid and port are in ``$MOODLAKE_HOME/state/sql-server.json``,
its log in ``$MOODLAKE_HOME/logs/sql-server.log``. Because the metastore is a server, other Spark
applications (a nightly job) write the same tables while it serves them; every query resolves the
table in the metastore and reads the Delta log again, so it sees their commits.

The server's sessions do not see jars passed with ``--jars``: Delta's ``delta-spark`` and
``delta-storage`` jars (and Derby's client) also go on the driver class path, but not Delta's
whole dependency set (its jackson-databind 2.13 ahead of Spark's 2.18 breaks the server).

Security. The server listens on 127.0.0.1 unless ``sql_server.host`` says otherwise, and a
non-loopback host is refused unless ``sql_server.authentication`` (HiveServer2's LDAP, KERBEROS,
PAM or CUSTOM, with ``sql_server.hiveconf``) is configured: with NONE, anyone who reaches the port
could query every table. With ``sql_server.read_only`` (the default) the server's sessions run
the session extension ``moodlake.ReadOnlySql`` (``lib/moodlake/java/ReadOnlySql.java``, compiled
on first use or by ``make setup``): every statement that would change a table or the catalog
(INSERT, DELETE, UPDATE, MERGE, CREATE, DROP, ALTER, TRUNCATE, ...) fails its analysis with
``[MOODLAKE_READ_ONLY]`` before anything runs; queries, SHOW, DESCRIBE, EXPLAIN, SET and USE work.
It is enforced in the server, whatever the client; the nightly jobs are other applications and write.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from moodlake import services
from moodlake.config import Config

log = logging.getLogger(__name__)

NAME = "sql-server"
MAIN_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
# of Delta's jars, the ones the server's sessions need on the driver class path
_CLASSPATH_JARS = ("io.delta_delta-spark_", "io.delta_delta-storage-")
_CHILDREN: list[subprocess.Popen] = []
READ_ONLY_CLASS = "moodlake.ReadOnlySql"
READ_ONLY_SOURCE = Path(__file__).resolve().parent / "java" / "ReadOnlySql.java"


class SqlServerError(services.ServiceError):
    pass


class QueryError(RuntimeError):
    """The server refused or failed the query; the message is the server's."""


def jdbc_url(host: str, port: int, database: str = "default") -> str:
    return f"jdbc:hive2://{host}:{port}/{database}"


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (127.0.0.0/8, ::1)."""
    if not host:
        return False  # HiveServer2 binds every interface
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(cfg: Config) -> None:
    """Refuse a non-loopback ``sql_server.host`` while ``sql_server.authentication`` is NONE."""
    s = cfg.sql_server
    if s.authentication.upper() == "NONE" and not is_loopback(s.host):
        raise SqlServerError(
            f"sql_server.host is {s.host!r}, which is not a loopback address, and sql_server.authentication "
            "is NONE: anyone who reaches the port could read every table. Keep host 127.0.0.1 (analysts "
            "connect through an SSH tunnel), or configure sql_server.authentication (LDAP, KERBEROS, PAM, "
            "CUSTOM) and its hive.server2.* settings under sql_server.hiveconf.")


def read_only_jar() -> str:
    """The jar of :data:`READ_ONLY_CLASS`, compiled from its source with the JDK's ``javac`` against
    the running Spark's jars on first use (a few seconds), kept in the virtual environment."""
    from moodlake.spark import pyspark_jars_dir

    source = READ_ONLY_SOURCE.read_bytes()
    digest = hashlib.sha256(source + str(pyspark_jars_dir()).encode()).hexdigest()[:12]
    jar = Path(sys.prefix) / "share" / "moodlake-jars" / f"read-only-sql-{digest}" / "moodlake-read-only-sql.jar"
    if jar.is_file():
        return str(jar)
    bindir = Path(services.java()).resolve().parent
    javac, jar_tool = (shutil.which(t, path=str(bindir)) or shutil.which(t) for t in ("javac", "jar"))
    if not javac or not jar_tool:
        raise SqlServerError("the read-only SQL server needs a JDK (javac and jar, e.g. apt-get install "
                             "openjdk-17-jdk-headless) to compile lib/moodlake/java/ReadOnlySql.java once; "
                             "or set sql_server.read_only: false")
    tmp = jar.parent.with_name(jar.parent.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "classes").mkdir(parents=True)
    for cmd in ([javac, "--release", "17", "-nowarn", "-d", str(tmp / "classes"), "-cp",
                 str(pyspark_jars_dir() / "*"), str(READ_ONLY_SOURCE)],
                [jar_tool, "cf", str(tmp / jar.name), "-C", str(tmp / "classes"), "."]):
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SqlServerError(f"building {jar.name} failed: {' '.join(cmd[:2])} ...: {out.stderr[-2000:]}")
    shutil.rmtree(tmp / "classes")
    try:
        tmp.rename(jar.parent)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(jar)


def server_command(cfg: Config, port: int) -> list[str]:
    """The spark-submit command line of the Thrift server of ``cfg``'s lakehouse on ``port``."""
    from moodlake.spark import delta_jars, spark_conf

    check_bind(cfg)
    conf = spark_conf(cfg, app_name="moodlake-sql-server")
    # a long-running server: Spark's INFO lines for every statement would fill its log
    conf.setdefault("spark.log.level", cfg.spark.log_level)
    jars = conf.pop("spark.jars")
    delta_cp = [j for j in delta_jars() if Path(j).name.startswith(_CLASSPATH_JARS)]
    class_path = [conf.pop("spark.driver.extraClassPath", ""), *delta_cp]
    if cfg.sql_server.read_only:  # the server's sessions only: the jobs' applications keep writing
        class_path.append(read_only_jar())
        conf["spark.sql.extensions"] = f"{conf['spark.sql.extensions']},{READ_ONLY_CLASS}"
    java_opts = " ".join(x for x in (conf.pop("spark.driver.extraJavaOptions", ""),
                                     *services.markers(NAME, cfg.lakehouse.home)) if x)
    cmd = [str(Path(sys.prefix) / "bin" / "spark-submit"), "--master", cfg.spark.master,
           "--class", MAIN_CLASS, "--name", conf["spark.app.name"],
           "--jars", jars, "--driver-memory", conf.pop("spark.driver.memory"),
           "--driver-class-path", ":".join(p for p in class_path if p),
           "--driver-java-options", java_opts]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    hiveconf = {"hive.server2.thrift.port": str(port), "hive.server2.thrift.bind.host": cfg.sql_server.host,
                "hive.server2.authentication": cfg.sql_server.authentication.upper(), **cfg.sql_server.hiveconf}
    for k, v in hiveconf.items():
        cmd += ["--hiveconf", f"{k}={v}"]
    return cmd + ["spark-internal"]


def status(cfg: Config) -> dict | None:
    """The running server's state (pid, host, port, jdbc_url, log), or None."""
    return services.running(cfg.lakehouse.home, NAME)


def start(cfg: Config, timeout: float | None = None) -> tuple[dict, bool]:
    """Start the lakehouse's Thrift server unless it runs; wait until its port answers.

    Returns (state, started): ``started`` is False when one was already running.
    """
    home = Path(cfg.lakehouse.home)
    host = cfg.sql_server.host
    timeout = timeout or cfg.sql_server.start_timeout_s
    check_bind(cfg)
    home.mkdir(parents=True, exist_ok=True)
    with services.locked(home, NAME):
        found = services.running(home, NAME)
        if found:
            return found, False
        previous = services.read_state(home, NAME)
        if previous and services.is_service_process(int(previous.get("pid") or 0), NAME, home):
            log.warning("sql-server pid %s does not answer on port %s: stopping it", previous["pid"], previous["port"])
            services.terminate(int(previous["pid"]))
        port = cfg.sql_server.port or services.free_port(host)
        if not services.port_free(host, port):
            raise SqlServerError(f"port {port} on {host} is in use by another process; "
                                 f"choose another with --set sql_server.port=N (0: any free port)")
        from moodlake.spark import pyspark_jars_dir

        cmd = server_command(cfg, port)  # starts the metastore server if needed
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # spark-submit finds pyspark with the `python3` on PATH unless told (a venv not activated)
        env.setdefault("SPARK_HOME", str(pyspark_jars_dir().parent))
        logfile = services.log_file(home, NAME)
        started = time.monotonic()
        proc = services.spawn(cmd, logfile, env=env, cwd=home)
        _CHILDREN.append(proc)
        state = {"pid": proc.pid, "host": host, "port": port, "jdbc_url": jdbc_url(host, port),
                 "log": str(logfile), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        services.write_state(home, NAME, state)
        try:
            services.wait_for_port(proc, host, port, timeout, "the Spark Thrift server", logfile)
        except services.ServiceError as e:
            services.clear_state(home, NAME)
            raise SqlServerError(str(e)) from None
        _warm_up(cfg, state)
        state["start_s"] = round(time.monotonic() - started, 1)
        services.write_state(home, NAME, state)
        return state, True


def _warm_up(cfg: Config, state: dict) -> None:
    """A first session, catalog call and Delta read (a count, answered from one table's log), so
    that the first user's query does not pay for loading and compiling all that (on 2 cores
    ~10-15 s instead of ~1 s)."""
    db = cfg.lakehouse.database
    try:
        _, tables = query(cfg, state, f"SHOW TABLES IN {db}", 1000)
        names = [t[1] for t in tables if len(t) > 2 and not t[2]]  # (namespace, name, isTemporary)
        if names:
            first = cfg.tables.ingest_runs if cfg.tables.ingest_runs in names else names[0]
            query(cfg, state, f"SELECT count(*) FROM {db}.`{first}`", 1)
        else:
            query(cfg, state, "SELECT 1", 1)
    except Exception as e:  # noqa: BLE001 - the server runs; a failed warm-up is only slower
        log.warning("sql-server warm-up query failed: %s", e)


def stop(cfg: Config, timeout: float = 60.0) -> dict | None:
    """Stop the lakehouse's Thrift server (SIGTERM: Spark's shutdown hooks run; SIGKILL after
    ``timeout``). Returns the state it had, or None if none ran."""
    home = Path(cfg.lakehouse.home)
    with services.locked(home, NAME):
        state = services.read_state(home, NAME)
        if not state or not services.is_service_process(int(state.get("pid") or 0), NAME, home):
            services.clear_state(home, NAME)
            return None
        services.terminate(int(state["pid"]), timeout)
        services.clear_state(home, NAME)
        return state


# --------------------------------------------------------------------------- queries


def _limited(query: str, limit: int) -> str:
    """A SELECT wrapped in a LIMIT (the rows past ``limit + 1`` are never computed or sent, as
    ``DataFrame.limit`` does on the Spark path); other statements as they are."""
    q = query.strip().rstrip(";").strip()
    if re.match(r"(?is)^\(*\s*select\b", q):
        return f"SELECT * FROM (\n{q}\n) AS moodlake_sql LIMIT {limit + 1}"
    return q


def _converter(type_code: str, tz):
    """Values as the Spark path's Python objects print them (the server sends some as text)."""
    if type_code == "TIMESTAMP_TYPE":
        def ts(v):
            t = dt.datetime.fromisoformat(v)
            # the server renders in the session time zone; pyspark gives naive local times
            return t.replace(tzinfo=tz).astimezone().replace(tzinfo=None)
        return ts
    if type_code == "FLOAT_TYPE":  # sent as the shortest decimal of the float; pyspark widens the float
        import struct

        return lambda v: struct.unpack("f", struct.pack("f", v))[0]
    if type_code == "DATE_TYPE":
        return dt.date.fromisoformat
    if type_code == "DECIMAL_TYPE":
        from decimal import Decimal

        return Decimal
    if type_code in ("ARRAY_TYPE", "MAP_TYPE"):
        return json.loads
    if type_code == "STRUCT_TYPE":
        def as_row(v):
            from pyspark.sql import Row

            return Row(**json.loads(v))
        return as_row
    return None


def _safe(f):
    def convert(v):
        try:
            return f(v)
        except (ValueError, TypeError):  # e.g. a map with non-string keys is not JSON: as sent
            return v
    return convert


def _session_tz(cfg: Config):
    from zoneinfo import ZoneInfo

    return ZoneInfo(cfg.spark.conf.get("spark.sql.session.timeZone", "UTC"))


def _server_message(msg: str) -> str:
    """The server's error without its Java wrapping, stack and plan (which would show the LIMIT
    wrapper of :func:`_limited`): '[TABLE_OR_VIEW_NOT_FOUND] The table or view ... SQLSTATE: 42P01'."""
    msg = re.sub(r"^(org\.apache\.hive\.service\.cli\.)?HiveSQLException: ", "", msg.strip())
    msg = re.sub(r"^Error running query: (\[[A-Z_.]+\] )?([\w.$]+(Exception|Error): )?", "", msg)
    msg = msg.split("\n\tat ")[0]
    m = re.search(r"SQLSTATE: \w+", msg)
    return (msg[:m.end()] if m else msg).strip()


def query(cfg: Config, state: dict, sql: str, limit: int) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on the server of ``state``; (column names, at most ``limit + 1`` rows)."""
    from pyhive import exc, hive

    logging.getLogger("pyhive").setLevel(logging.WARNING)  # it logs every statement at INFO

    try:
        conn = hive.connect(host=state["host"], port=int(state["port"]), username=os.environ.get("USER") or "moodlake")
    except Exception as e:  # noqa: BLE001 - thrift raises its own transport errors
        raise ConnectionError(f"cannot reach the sql-server at {state.get('jdbc_url')}: {e}") from e
    try:
        cur = conn.cursor()
        try:
            cur.execute(_limited(sql, limit))
        except exc.OperationalError as e:
            resp = e.args[0] if e.args else None
            msg = getattr(getattr(resp, "status", None), "errorMessage", None) or str(e)
            raise QueryError(_server_message(msg)) from None
        if not cur.description:
            return [], []
        rows = cur.fetchmany(limit + 1)
        cols = [d[0] for d in cur.description]
        tz = _session_tz(cfg)
        convert = [_converter(d[1], tz) for d in cur.description]
        convert = [f and _safe(f) for f in convert]
        out = [tuple(v if v is None or f is None else f(v) for v, f in zip(r, convert)) for r in rows]
        return cols, out
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m moodlake.sql_server build-read-only-jar`` (run by ``make setup``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["build-read-only-jar"]:
        print(f"{READ_ONLY_CLASS}: {read_only_jar()}")
        return 0
    print("usage: python -m moodlake.sql_server build-read-only-jar", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
