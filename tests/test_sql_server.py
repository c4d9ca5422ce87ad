"""The shared metastore (Derby's network server) and the JDBC server on it.

- the metastore server's start / reuse / race / restart / stop, and that a metastore folder the
  embedded driver wrote is served as it is (no Spark: Derby's own ``ij`` tool);
- ``moodlake sql-server`` on the test lakehouse, next to the test's own Spark session: ``beeline``
  reads by name a Delta table the session created, sees the session's later writes and tables;
  ``moodlake sql`` through the server prints what it prints through Spark; the server listens on
  127.0.0.1 only and is read-only (every write and DDL through JDBC fails and changes nothing,
  queries, SHOW, DESCRIBE and time travel work); ``stop`` leaves no process.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moodlake import metastore, services, sql_server
from moodlake.config import load_config
from moodlake.spark import derby_jars, pyspark_jars_dir, spark_conf, spark_submit_command

MOODLAKE = [sys.executable, "-m", "moodlake.cli"]


def _cfg(home: Path, **overrides):
    return load_config("demo", overrides={"lakehouse.home": str(home), **overrides}, environ={})


def _ij(script: str, classpath: list[str], cwd: Path) -> str:
    """Run SQL through Derby's ij tool; returns its output."""
    out = subprocess.run([services.java(), "-cp", ":".join(classpath), "org.apache.derby.tools.ij"],
                         input=script, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _home_processes(home: Path) -> list[services.ServiceProcess]:
    return [p for p in services.find_processes() if Path(p.home) == home]


def test_metastore_server_start_reuse_race_restart_stop(tmp_path):
    home = (tmp_path / "lh").resolve()
    cfg = _cfg(home)
    jars = derby_jars()
    db = home / "metastore_db"
    try:
        # a metastore folder as the embedded driver leaves it
        home.mkdir()
        _ij(f"connect 'jdbc:derby:{db};create=true';\ncreate table probe(x int);\n"
            "insert into probe values (41), (42);\ndisconnect;\n",
            [jars["derby"], jars["derbyshared"], jars["derbytools"]], tmp_path)
        assert metastore.status(cfg) is None

        # three processes race to start it: one server, all three get its port
        code = ("import json, sys; from moodlake.config import load_config; from moodlake import metastore; "
                f"cfg = load_config('demo', overrides={{'lakehouse.home': {str(home)!r}}}, environ={{}}); "
                "print(json.dumps(metastore.ensure_running(cfg)))")
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        import json

        states = [json.loads(o.strip().splitlines()[-1]) for o in outs]
        assert len({(s["pid"], s["port"]) for s in states}) == 1, states
        first = states[0]
        assert [p.pid for p in _home_processes(home)] == [first["pid"]]
        assert services.read_state(home, "metastore")["pid"] == first["pid"]
        assert (home / "logs" / "metastore.log").exists()
        assert metastore.ensure_running(cfg)["pid"] == first["pid"]  # reused
        services.clear_state(home, "metastore")  # a lost state file: the server is found, not doubled
        assert (metastore.ensure_running(cfg)["pid"], metastore.status(cfg)["port"]) == (first["pid"], first["port"])

        # the embedded driver's database, now through the network server and its client driver
        url = metastore.connection_url(cfg, first["port"])
        assert url == f"jdbc:derby://127.0.0.1:{first['port']}/{db};create=true" and f"{first['port']}//" in url
        out = _ij(f"connect '{url}';\nselect x from probe order by x;\n",
                  [jars["derbyclient"], jars["derbyshared"], jars["derbytools"]], tmp_path)
        assert "41" in out and "42" in out, out
        assert not (home / "tmp").exists() and not list(home.glob("**/metastore_db/metastore_db"))

        # the Spark settings point at it, with the client driver on the driver class path
        conf = spark_conf(cfg)
        assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == url
        assert conf["spark.hadoop.javax.jdo.option.ConnectionDriverName"] == metastore.DRIVER
        assert conf["spark.driver.extraClassPath"] == jars["derbyclient"]
        cmd = spark_submit_command(cfg, "jobs/sql.py", ["select 1"])
        assert cmd[cmd.index("--driver-class-path") + 1] == jars["derbyclient"]
        assert f"spark.hadoop.javax.jdo.option.ConnectionURL={url}" in cmd

        # a dead server (SIGKILL) is replaced, on the same port where it is free
        os.kill(first["pid"], 9)
        assert services.wait_gone(first["pid"], 10)
        assert metastore.status(cfg) is None
        second = metastore.ensure_running(cfg)
        assert second["pid"] != first["pid"] and second["port"] == first["port"]

        stopped = metastore.stop(cfg)
        assert stopped["pid"] == second["pid"]
        assert _home_processes(home) == [] and services.read_state(home, "metastore") is None
        assert not services.port_open("127.0.0.1", second["port"])
        assert metastore.stop(cfg) is None
    finally:
        for p in _home_processes(home):
            services.terminate(p.pid)


def test_an_external_metastore_starts_nothing(tmp_path):
    cfg = _cfg(tmp_path / "lh", **{"lakehouse.metastore_uri": "thrift://hms.example:9083"})
    conf = spark_conf(cfg)
    assert conf["spark.hadoop.hive.metastore.uris"] == "thrift://hms.example:9083"
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in conf and "spark.driver.extraClassPath" not in conf
    assert not metastore.enabled(cfg) and not metastore.enabled(load_config("prod", environ={}))
    with pytest.raises(metastore.MetastoreError):
        metastore.ensure_running(cfg)
    assert _home_processes((tmp_path / "lh").resolve()) == []


# --------------------------------------------------------------------------- the JDBC server

PROBE = "sqlserver_probe"


def _env(cfg) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
    env.update({"MOODLAKE_HOME": cfg.lakehouse.home, "MOODLAKE__SPARK__MASTER": "local[2]",
                "MOODLAKE__SPARK__SHUFFLE_PARTITIONS": "2", "MOODLAKE__SPARK__DRIVER_MEMORY": "1g",
                "MOODLAKE__SQL_SERVER__PORT": "0", "SPARK_HOME": str(pyspark_jars_dir().parent),
                "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    return env


def _cli(cfg, args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(MOODLAKE + args, env=_env(cfg), capture_output=True, text=True, timeout=timeout)


def _beeline(cfg, state, sql: str, ok: bool = True, force: bool = False):
    """The result lines of ``sql`` run by beeline (``ok``: it must succeed); with ``ok=False`` the
    completed process (``force``: go on after a failed statement)."""
    import tempfile

    beeline = pyspark_jars_dir().parent / "bin" / "beeline"
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:  # --force applies to -f scripts only
        script.write(sql + "\n")
        script.flush()
        out = subprocess.run([str(beeline), "-u", f"jdbc:hive2://127.0.0.1:{state['port']}", "--silent=true",
                              "--showHeader=false", "--outputformat=csv2", f"--force={str(force).lower()}",
                              *(["-f", script.name] if force else ["-e", sql])],
                             env=_env(cfg), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    if not ok:
        return out
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    # beeline puts its prompt in front of the first result line of a non-interactive run
    lines = [re.sub(r"^\d+: jdbc:hive2://[^>]*>", "", ln).strip() for ln in out.stdout.splitlines()]
    return [ln for ln in lines if ln]


@pytest.fixture(scope="module")
def server(spark, cfg):
    """The lakehouse's sql-server, started by the CLI after the session created a Delta table."""
    t = f"{cfg.lakehouse.database}.{PROBE}"
    spark.sql(f"DROP TABLE IF EXISTS {t}")
    spark.sql(f"CREATE TABLE {t} (id INT, name STRING, score DOUBLE, tags ARRAY<STRING>, ok BOOLEAN, "
              f"at TIMESTAMP, amount DECIMAL(6,2)) USING DELTA")
    spark.sql(f"INSERT INTO {t} VALUES (1, 'joy', 0.5, array('sun', 'sea'), true, "
              "timestamp'2026-01-02 03:04:05.5', 1.50), (2, 'fear', NULL, array(), false, NULL, NULL), "
              "(3, 'a, \"quoted\" name', 1e-3, NULL, NULL, timestamp'2026-12-31 23:59:59', 1234.56)")
    try:
        t0 = time.monotonic()
        out = _cli(cfg, ["sql-server", "start"])
        assert out.returncode == 0, out.stdout + out.stderr
        state = services.read_state(cfg.lakehouse.home, sql_server.NAME)
        print(f"sql-server start: {time.monotonic() - t0:.1f} s (server {state['start_s']} s)")
        assert f"jdbc:hive2://127.0.0.1:{state['port']}/default" in out.stdout
        yield state
    finally:
        sql_server.stop(cfg)
        spark.sql(f"DROP TABLE IF EXISTS {t}")


@pytest.mark.spark
@pytest.mark.slow
def test_beeline_and_spark_share_tables_by_name(server, spark, cfg):
    db = cfg.lakehouse.database
    # the server reads the session's table (and so holds its Delta snapshot) ...
    assert sql_server.query(cfg, server, f"select count(*) as n from {db}.{PROBE}", 10) == (["n"], [(3,)])
    # this application writes while the server serves: a new row, a new table
    spark.sql(f"INSERT INTO {db}.{PROBE} (id, name) VALUES (4, 'awe')")
    spark.sql(f"DROP TABLE IF EXISTS {db}.sqlserver_later")
    spark.sql(f"CREATE TABLE {db}.sqlserver_later USING DELTA AS SELECT 7 AS n")
    # ... and beeline (JDBC) sees both (it may not write: test_jdbc_connections_are_read_only)
    lines = _beeline(cfg, server, f"select count(*) from {db}.{PROBE}; select n from {db}.sqlserver_later")
    assert lines == ["4", "7"], lines
    spark.sql(f"DROP TABLE IF EXISTS {db}.sqlserver_later")


@pytest.mark.spark
@pytest.mark.slow
def test_moodlake_sql_through_the_server_prints_what_spark_prints(server, spark, cfg):
    from moodlake.console import print_rows

    query = f"select * from {cfg.lakehouse.database}.{PROBE} where id <= 3 order by id"
    t0 = time.monotonic()
    out = _cli(cfg, ["sql", query], timeout=60)
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    expected = io.StringIO()
    print_rows(spark.sql(query), 100, out=expected)
    assert out.stdout == expected.getvalue()
    assert "(3 rows)" in out.stdout and "['sun', 'sea']" in out.stdout and "2026-01-02 03:04:05.500000" in out.stdout
    print(f"moodlake sql through the server: {elapsed:.2f} s")
    assert elapsed < 20  # about a second on an idle machine; Spark's own start is 15-40 s

    limited = _cli(cfg, ["sql", query, "--limit", "2"], timeout=60)
    expected = io.StringIO()
    print_rows(spark.sql(query), 2, out=expected)
    assert limited.stdout == expected.getvalue() and "more rows not shown" in limited.stdout

    bad = _cli(cfg, ["sql", "select * from moodlake.no_such_table"], timeout=60)
    assert bad.returncode == 1 and "TABLE_OR_VIEW_NOT_FOUND" in bad.stderr and "LIMIT" not in bad.stderr


def _listening_addresses(port: int) -> set[str]:
    """The local addresses on which a TCP socket listens on ``port`` (from /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # LISTEN
                raw = bytes.fromhex(addr)
                if len(raw) == 4:
                    found.add(".".join(str(b) for b in raw[::-1]))
                else:  # four little-endian 32-bit words
                    import ipaddress

                    ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                    found.add(str(ip.ipv4_mapped or ip))  # Java listens on ::ffff:127.0.0.1
    return found


READ_ONLY = "MOODLAKE_READ_ONLY"


@pytest.mark.spark
@pytest.mark.slow
def test_jdbc_connections_are_read_only_and_local(server, spark, cfg):
    """Every write and DDL through JDBC (beeline) fails with a clear message and changes nothing: the
    table's rows and Delta version, the catalog's tables and views; reads still work. The server
    listens on 127.0.0.1 only."""
    assert _listening_addresses(server["port"]) == {"127.0.0.1"}

    db = cfg.lakehouse.database
    t, view = f"{db}.{PROBE}", f"{db}.{PROBE}_view"
    spark.sql(f"CREATE OR REPLACE VIEW {view} AS SELECT id FROM {t}")
    spark.sql(f"DROP TABLE IF EXISTS {db}.sqlserver_evil")

    def state():
        version = spark.sql(f"DESCRIBE HISTORY {t}").agg({"version": "max"}).first()[0]
        tables = {r.tableName for r in spark.sql(f"SHOW TABLES IN {db}").collect()}
        cols = spark.table(t).columns
        return spark.table(t).count(), version, tables, cols, spark.table(t).orderBy("id").collect()

    before = state()
    writes = [
        f"INSERT INTO {t} (id, name) VALUES (99, 'evil')",
        f"INSERT OVERWRITE TABLE {t} SELECT * FROM {t} WHERE id = 1",
        f"DELETE FROM {t} WHERE id = 1",
        f"UPDATE {t} SET name = 'evil' WHERE id = 1",
        f"MERGE INTO {t} AS x USING (SELECT 98 AS id) AS s ON x.id = s.id WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
        f"DROP TABLE {t}",
        f"DROP VIEW {view}",
        f"CREATE TABLE {db}.sqlserver_evil (id INT) USING DELTA",
        f"CREATE TABLE {db}.sqlserver_evil USING DELTA AS SELECT * FROM {t}",
        f"CREATE VIEW {db}.sqlserver_evil AS SELECT 1 AS x",
        f"ALTER TABLE {t} ADD COLUMNS (evil INT)",
        f"ALTER TABLE {t} SET TBLPROPERTIES ('delta.appendOnly' = 'true')",
        f"TRUNCATE TABLE {t}",
        f"RESTORE TABLE {t} TO VERSION AS OF 0",
        f"OPTIMIZE {t}",
        f"VACUUM {t} RETAIN 0 HOURS",
        f"CACHE TABLE {t}",
        f"ANALYZE TABLE {t} COMPUTE STATISTICS",
        "ADD JAR /tmp/no-such.jar",
    ]
    out = _beeline(cfg, server, ";\n".join(writes) + f";\nSELECT count(*) FROM {t};", ok=False, force=True)
    refused = re.findall(rf"(?m)^Error: .*\[{READ_ONLY}\] this SQL server is read-only: (\w+) is not allowed", out.stderr)
    assert len(refused) == len(writes), (refused, out.stdout[-3000:], out.stderr[-5000:])
    assert "AppendData" in refused and "DeleteCommand" in refused and "DropTable" in refused
    # the same through the Python client (HiveServer2's protocol): the message is the server's
    with pytest.raises(sql_server.QueryError, match=rf"^\[{READ_ONLY}\] this SQL server is read-only: \w+ is not allowed"):
        sql_server.query(cfg, server, f"DELETE FROM {t}", 10)
    assert state() == before

    # reads: queries, SHOW, DESCRIBE, time travel, EXPLAIN, SET, USE
    n, version = before[0], before[1]
    q = lambda sql: sql_server.query(cfg, server, sql, 1000)[1]  # noqa: E731
    assert q(f"SELECT count(*) FROM {t}") == [(n,)]
    assert q(f"SELECT count(*) FROM {t} VERSION AS OF 1") == [(3,)]
    assert q(f"SELECT count(*) FROM {view}") == [(n,)]
    assert (db, PROBE, False) in q(f"SHOW TABLES IN {db}")
    assert ("id", "int") in [tuple(r[:2]) for r in q(f"DESCRIBE TABLE {t}")]
    assert max(r[0] for r in q(f"DESCRIBE HISTORY {t}")) == version
    assert q(f"DESCRIBE DETAIL {t}")[0][0] == "delta"
    assert q(f"EXPLAIN SELECT * FROM {t}")
    assert q("SET spark.sql.shuffle.partitions")
    q(f"USE {db}")  # raises QueryError if refused
    assert state() == before
    spark.sql(f"DROP VIEW IF EXISTS {view}")


@pytest.mark.spark
@pytest.mark.slow
def test_sql_server_status_and_stop_leave_nothing_running(server, cfg):
    status = _cli(cfg, ["sql-server", "status"], timeout=60)
    assert status.returncode == 0 and server["jdbc_url"] in status.stdout
    again = _cli(cfg, ["sql-server", "start"], timeout=60)
    assert again.returncode == 0 and "already running" in again.stdout
    # the metastore refuses to stop under a running server
    refused = _cli(cfg, ["metastore", "stop"], timeout=60)
    assert refused.returncode == 1 and "sql-server stop" in refused.stderr

    stop = _cli(cfg, ["sql-server", "stop"], timeout=120)
    assert stop.returncode == 0 and f"pid {server['pid']}" in stop.stdout
    assert services.wait_gone(server["pid"], 10)
    assert not services.port_open("127.0.0.1", server["port"])
    assert services.read_state(cfg.lakehouse.home, sql_server.NAME) is None
    assert [p.name for p in _home_processes(Path(cfg.lakehouse.home))] == ["metastore"]
    assert _cli(cfg, ["sql-server", "status"], timeout=60).returncode == 1

    # without a server, `moodlake sql` goes to Spark (not run here: a Spark start per call)
    import argparse

    from moodlake.cli import _sql_via_server

    assert _sql_via_server(cfg, argparse.Namespace(query="select 1", limit=10)) is None


def test_a_server_that_cannot_start_says_why(cfg):
    """A start that fails shows the log's tail and leaves no state (no Spark needed: the port is taken)."""
    import dataclasses
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        c = dataclasses.replace(cfg, sql_server=dataclasses.replace(cfg.sql_server, port=taken))
        with pytest.raises(sql_server.SqlServerError, match=f"port {taken}"):
            sql_server.start(c)
    assert services.read_state(cfg.lakehouse.home, sql_server.NAME) is None


def test_wait_for_port_reports_the_log_tail(tmp_path):
    log = tmp_path / "x.log"
    proc = services.spawn([sys.executable, "-c", "import sys; print('boom: bad things'); sys.exit(3)"], log)
    with pytest.raises(services.ServiceExited, match="(?s)status 3.*boom: bad things"):
        services.wait_for_port(proc, "127.0.0.1", services.free_port(), 30, "the thing", log)
