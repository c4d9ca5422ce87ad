"""The one place that builds Spark sessions, and that knows the Delta Lake jars.

``build_spark(cfg)`` gives a session with Delta Lake and a persistent catalog: the embedded Derby
metastore under ``$MOODLAKE_HOME`` by default, so that tables have names (``moodlake.posts``) and a
fresh process can query them; or an external Hive metastore from config.

The Delta jars are resolved once by ``make setup`` (``python -m moodlake.spark resolve-jars``):
Ivy fetches ``io.delta:delta-spark_<spark major.minor>_2.13:<delta-spark version>`` and its
dependencies from Maven Central, and they are copied into the virtual environment, so that jobs
and tests run offline afterwards. The coordinates follow the installed pyspark and delta-spark
versions (pinned in requirements.txt), so there is a single place to change them.

The embedded default serves its Derby metastore through Derby's network server
(:mod:`moodlake.metastore`), so that several Spark applications (a nightly job, the JDBC server of
:mod:`moodlake.sql_server`, a notebook) share it. ``resolve-jars`` also fetches Derby's network
server and client jars (:func:`derby_maven_coordinates`), at the version of the Derby engine that
pyspark ships.

The drivers it starts (a session, a spark-submit job) log through ``log4j2.properties`` beside this
module (:func:`with_driver_log`): into ``$MOODLAKE_HOME/logs/spark.log``, only errors on the console.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from moodlake import storage
from moodlake.config import Config

log = logging.getLogger(__name__)
SCALA_VERSION = "2.13"


class SetupError(RuntimeError):
    """The environment is incomplete; the message says how to fix it."""


def _spark_major_minor() -> str:
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def delta_version() -> str:
    return importlib.metadata.version("delta-spark")


def delta_maven_coordinates() -> str:
    return f"io.delta:delta-spark_{_spark_major_minor()}_{SCALA_VERSION}:{delta_version()}"


def jars_dir() -> Path:
    """Where ``resolve-jars`` keeps the Delta jars: inside the active virtual environment."""
    return Path(sys.prefix) / "share" / "moodlake-jars" / f"delta-{delta_version()}-spark{_spark_major_minor()}"


def delta_jars() -> list[str]:
    d = jars_dir()
    jars = sorted(str(p) for p in d.glob("*.jar")) if d.is_dir() else []
    if not any("delta-spark" in Path(j).name for j in jars):
        raise SetupError(
            f"the Delta Lake jars ({delta_maven_coordinates()}) are not in {d}. "
            "Run `make setup` once (it resolves them from Maven Central into the virtual environment)."
        )
    return jars


# Derby's network server and its client driver; the engine (derby), derbyshared and derbytools
# ship with pyspark, and these must be of the same version (see derby_version).
DERBY_ARTIFACTS = ("derbynet", "derbyclient")
DERBY_GROUP = "org.apache.derby"


def pyspark_jars_dir() -> Path:
    """The jars of the Spark that runs: $SPARK_HOME/jars (set by spark-submit, whose Python then
    imports pyspark from a zip), else those of the pyspark package."""
    home = os.environ.get("SPARK_HOME")
    if home and Path(home, "jars").is_dir():
        return Path(home, "jars").resolve()
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def _shipped_version(artifact: str) -> str:
    """The version of ``artifact`` among pyspark's jars (``<artifact>-<version>.jar``)."""
    found = sorted(pyspark_jars_dir().glob(f"{artifact}-[0-9]*.jar"))
    if not found:
        raise SetupError(f"pyspark ships no {artifact}-*.jar in {pyspark_jars_dir()}")
    return found[0].name[len(artifact) + 1:-len(".jar")]


def derby_version() -> str:
    """The version of the Derby engine that pyspark ships (derby-10.16.1.1.jar: 10.16.1.1)."""
    return _shipped_version("derby")


def derby_maven_coordinates() -> list[str]:
    return [f"{DERBY_GROUP}:{a}:{derby_version()}" for a in DERBY_ARTIFACTS]


def derby_jars_dir() -> Path:
    return Path(sys.prefix) / "share" / "moodlake-jars" / f"derby-{derby_version()}"


def derby_jars() -> dict[str, str]:
    """Every Derby jar MoodLake uses, by artifact: the engine, derbyshared and derbytools from
    pyspark, derbynet and derbyclient resolved by ``make setup``."""
    v = derby_version()
    jars = {a: pyspark_jars_dir() / f"{a}-{v}.jar" for a in ("derby", "derbyshared", "derbytools")}
    jars.update({a: derby_jars_dir() / f"{a}-{v}.jar" for a in DERBY_ARTIFACTS})
    missing = [a for a, p in jars.items() if not p.is_file()]
    if missing:
        raise SetupError(
            f"the Derby jars {', '.join(missing)} ({', '.join(derby_maven_coordinates())}) are not in "
            f"{derby_jars_dir()}. Run `make setup` once (it resolves them from Maven Central into the "
            "virtual environment)."
        )
    return {a: str(p) for a, p in jars.items()}


# s3a:// for Spark itself (the Delta tables and scoring's staging on an S3-compatible store): Hadoop's
# S3A connector at the Hadoop version pyspark ships, and the AWS SDK v2 modules it uses. Not the SDK's
# "bundle" that hadoop-aws declares (one ~600 MB jar of every AWS service): only S3, its transfer
# manager, STS and the Apache HTTP client. Their version is the newest the Maven repository served
# here (the 2.24 line hadoop-aws 3.4.1 was built with is not served in full); the cluster suite's s3a
# test runs Delta writes, MERGE and reads through them. What Spark ships already (Netty, SLF4J, Apache
# HttpClient 4, commons-codec; commons-logging as jcl-over-slf4j) is left out, at Spark's version.
S3A_SDK_VERSION = "2.59.1"
S3A_SDK_ARTIFACTS = ("s3", "s3-transfer-manager", "sts", "apache-client")


def _spark_ships(ivy_jar: Path) -> bool:
    """Whether Spark's own jars hold the artifact of ``ivy_jar`` (Ivy names it group_artifact-version.jar)."""
    artifact = ivy_jar.name.split("_", 1)[-1].rsplit("-", 1)[0]
    if artifact == "commons-logging":
        artifact = "jcl-over-slf4j"
    return any(pyspark_jars_dir().glob(f"{artifact}-[0-9]*.jar"))


def hadoop_version() -> str:
    """The Hadoop version of the Spark that runs (hadoop-client-api-3.4.1.jar: 3.4.1)."""
    return _shipped_version("hadoop-client-api")


def s3a_maven_coordinates() -> list[str]:
    return [f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"] + [
        f"software.amazon.awssdk:{a}:{S3A_SDK_VERSION}" for a in S3A_SDK_ARTIFACTS]


def s3a_jars_dir() -> Path:
    return Path(sys.prefix) / "share" / "moodlake-jars" / f"s3a-hadoop{hadoop_version()}-sdk{S3A_SDK_VERSION}"


def s3a_jars() -> list[str]:
    """The jars that give Spark the ``s3a://`` filesystem (resolved by ``make setup``)."""
    d = s3a_jars_dir()
    jars = sorted(str(p) for p in d.glob("*.jar")) if d.is_dir() else []
    if not any(Path(j).name.startswith("org.apache.hadoop_hadoop-aws-") for j in jars):
        raise SetupError(
            f"the s3a jars ({', '.join(s3a_maven_coordinates())}) are not in {d}. Run `make setup` once "
            "(it resolves them from Maven Central into the virtual environment).")
    return jars


def uses_s3a(conf: dict[str, str], paths: list[str]) -> bool:
    """Whether a session needs the s3a jars: a path it reads or writes is ``s3a://``, or its settings
    configure s3a (``spark.hadoop.fs.s3a.*``)."""
    return any(str(p).startswith("s3a://") for p in paths) or any(k.startswith("spark.hadoop.fs.s3a.") for k in conf)


def _ivy_fetch(coordinates: list[str], excludes: tuple[str, ...] = ()) -> list[Path]:
    """Resolve Maven coordinates with Spark's own Ivy (and ~/.m2), leaving out the ``group:artifact``s
    of ``excludes``; the jars are copied to a temporary folder the caller removes.

    Each resolution runs in a child Python process, so in a JVM of its own: ``spark.jars.packages`` is
    read only when a JVM starts, and a second session in the same process would reuse the first one's
    JVM, with the first resolution's (since removed) jars on its list and the new coordinates never
    resolved. ``make setup`` on a fresh clone resolves twice (Delta and Derby, then s3a)."""
    import subprocess

    ivy = tempfile.mkdtemp(prefix="moodlake-ivy-")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                     env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "moodlake.spark", "ivy-fetch", ivy, ",".join(coordinates), ",".join(excludes)],
        env=env)
    fetched = sorted(Path(ivy, "jars").glob("*.jar"))
    if done.returncode != 0 or not fetched:
        shutil.rmtree(ivy, ignore_errors=True)
        raise SetupError(f"Ivy resolved no jars for {', '.join(coordinates)} (exit code {done.returncode}; "
                         "its output is above)")
    return fetched


def _ivy_fetch_here(ivy: str, coordinates: str, excludes: str) -> None:
    """The child of :func:`_ivy_fetch`: one local session whose start resolves the coordinates."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("moodlake-resolve-jars")
        .config("spark.jars.packages", coordinates)
        .config("spark.jars.ivy", ivy)
        .config("spark.jars.excludes", excludes)
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()


def _install_jars(jars: list[Path], dest: Path, rename=lambda p: p.name) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for j in jars:
        shutil.copy2(j, tmp / rename(j))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def resolve_jars() -> None:
    """Fetch what is missing of the Delta jars and of Derby's network server and client, in one
    Ivy resolution (one JVM), into :func:`jars_dir` and :func:`derby_jars_dir`; then the s3a jars
    (another, with the AWS SDK bundle excluded) into :func:`s3a_jars_dir`."""
    _resolve_delta_and_derby()
    try:
        s3a_jars()
    except SetupError:
        fetched = _ivy_fetch(s3a_maven_coordinates(), excludes=("software.amazon.awssdk:bundle",))
        try:
            _install_jars([j for j in fetched if not _spark_ships(j)], s3a_jars_dir())
        finally:
            shutil.rmtree(fetched[0].parent.parent, ignore_errors=True)
        s3a_jars()


def _resolve_delta_and_derby() -> None:
    need_delta = not (jars_dir().is_dir() and any("delta-spark" in p.name for p in jars_dir().glob("*.jar")))
    try:
        derby_jars()
        need_derby = False
    except SetupError:
        need_derby = True
    coordinates = ([delta_maven_coordinates()] if need_delta else []) + (derby_maven_coordinates() if need_derby else [])
    if not coordinates:
        return
    fetched = _ivy_fetch(coordinates)
    try:
        prefix = DERBY_GROUP + "_"
        if need_delta:
            # Delta does not depend on Derby: the Derby group's jars are the ones asked for below
            _install_jars([j for j in fetched if not j.name.startswith(prefix)], jars_dir())
        if need_derby:
            wanted = {f"{prefix}{a}-{derby_version()}.jar" for a in DERBY_ARTIFACTS}
            got = [j for j in fetched if j.name in wanted]
            if len(got) != len(wanted):
                raise SetupError(f"Ivy did not resolve {sorted(wanted - {j.name for j in got})}")
            _install_jars(got, derby_jars_dir(), rename=lambda p: p.name[len(prefix):])
    finally:
        shutil.rmtree(fetched[0].parent.parent, ignore_errors=True)
    delta_jars()
    derby_jars()


def resolve_delta_jars() -> list[str]:
    """Kept for callers of the old name: :func:`resolve_jars`, then the Delta jars."""
    resolve_jars()
    return delta_jars()


def under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (its JVM already runs)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_conf(cfg: Config, app_name: str | None = None) -> dict[str, str]:
    """Every Spark setting MoodLake needs, as plain strings (also used for spark-submit)."""
    lh = cfg.lakehouse
    home = Path(lh.home)
    delta = ",".join(delta_jars())
    conf = {
        "spark.app.name": app_name or cfg.spark.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": lh.warehouse,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.jars": delta,  # and the s3a jars where the lakehouse uses s3a (below)
        # MoodLake reports its own progress; Spark's console bar would garble it
        "spark.ui.showConsoleProgress": "false",
        # Delta rebuilds a table's snapshot with this many tasks (default 50: slow for the
        # small tables of a local lakehouse); follows the shuffle partitions
        "spark.databricks.delta.snapshotPartitions": str(cfg.spark.shuffle_partitions),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # rows per Arrow batch into pandas UDFs: posts carry images (~100 KB), not 10,000 at once
        "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
        # petastorm (pinned) still calls pyarrow's legacy filesystem API: a FutureWarning per
        # Python worker and task, not something a user can act on
        "spark.executorEnv.PYTHONWARNINGS": "ignore:pyarrow.localfs is deprecated:FutureWarning",
    }
    if lh.metastore_uri:
        conf["spark.hadoop.hive.metastore.uris"] = lh.metastore_uri
    else:
        # the embedded default: $MOODLAKE_HOME/metastore_db served by Derby's network server, which
        # several applications share (moodlake.metastore; started here unless it runs)
        from moodlake import metastore

        port = metastore.ensure_running(cfg)["port"]
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = metastore.connection_url(cfg, port)
        conf["spark.hadoop.javax.jdo.option.ConnectionDriverName"] = metastore.DRIVER
        conf["spark.driver.extraClassPath"] = derby_jars()["derbyclient"]
        # quoted: spark-submit splits the driver's Java options at spaces (a home such as "/data/my lake")
        conf["spark.driver.extraJavaOptions"] = f'"-Dderby.system.home={home}"'
    # pyspark workers use the interpreter that runs the driver unless told otherwise
    conf.setdefault("spark.pyspark.python", sys.executable)
    ours_cp = conf.get("spark.driver.extraClassPath")
    conf.update({k: str(v) for k, v in cfg.spark.conf.items()})
    if ours_cp and conf["spark.driver.extraClassPath"] != ours_cp:  # a configured class path keeps the client
        conf["spark.driver.extraClassPath"] = f"{ours_cp}:{conf['spark.driver.extraClassPath']}"
    if uses_s3a(conf, [lh.warehouse, cfg.datasets_root, cfg.training_root, cfg.models_root]) \
            and conf["spark.jars"] == delta:  # unless the configuration set its own jars
        conf["spark.jars"] = ",".join([delta, *s3a_jars()])
    # moodlake.storage on executors (scoring's Python workers, TorchDistributor's training processes)
    # reaches the S3 service that s3a's endpoint names: through their environment
    for k, v in storage.s3a_environment(conf).items():
        conf.setdefault(f"spark.executorEnv.{k}", v)
    return conf


LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def with_driver_log(cfg: Config, conf: dict[str, str]) -> dict[str, str]:
    """``conf`` with the driver's log4j configuration: Spark's start-up warnings and its log into
    ``<lakehouse.home>/logs/spark.log``, only errors on the console. Left as it is where the
    configuration names a log4j configuration of its own or the driver runs on the cluster."""
    opts = conf.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" in opts or conf.get("spark.submit.deployMode") == "cluster":
        return conf
    from moodlake.services import logs_dir

    # quoted: spark-submit splits the driver's Java options at spaces
    ours = f'"-Dlog4j2.configurationFile={LOG4J_CONFIG}" "-Dmoodlake.log.dir={logs_dir(cfg.lakehouse.home)}"'
    return {**conf, "spark.driver.extraJavaOptions": f"{opts} {ours}".strip()}


def spark_submit_command(cfg: Config, script: str, args: list[str], app_name: str | None = None) -> list[str]:
    """The spark-submit command line that runs ``script`` with MoodLake's settings from ``cfg``."""
    conf = with_driver_log(cfg, spark_conf(cfg, app_name or Path(script).stem))
    cmd = [str(Path(sys.prefix) / "bin" / "spark-submit"), "--master", cfg.spark.master,
           "--jars", conf.pop("spark.jars"), "--driver-memory", conf.pop("spark.driver.memory")]
    if "spark.driver.extraClassPath" in conf:
        cmd += ["--driver-class-path", conf.pop("spark.driver.extraClassPath")]
    if "spark.driver.extraJavaOptions" in conf:
        cmd += ["--driver-java-options", conf.pop("spark.driver.extraJavaOptions")]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    return cmd + [script, *args]


def build_spark(cfg: Config, app_name: str | None = None):
    """The SparkSession for ``cfg``: Delta Lake, named tables in the configured catalog.

    Under spark-submit the submitter's master and settings win; MoodLake adds what it needs
    where the submitter left it unset.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (pyspark reads the variable, not spark.pyspark.python,
    # when the driver is a plain Python process)
    os.environ.setdefault("PYSPARK_PYTHON", cfg.spark.conf.get("spark.pyspark.python", sys.executable))
    from pyspark.sql import SparkSession

    Path(cfg.lakehouse.home).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    conf = spark_conf(cfg, app_name)
    if not under_spark_submit():  # (a submitted job's JVM runs already: spark_submit_command set its log)
        conf = with_driver_log(cfg, conf)
        builder = builder.master(cfg.spark.master)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    # ... and in this driver (and the processes it starts, such as torchrun's): the session's own s3a
    # endpoint, whichever configuration or submitter set it
    os.environ.update(storage.s3a_environment(dict(spark.sparkContext.getConf().getAll())))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.lakehouse.database}")
    return spark


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["resolve-jars"]:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        resolve_jars()
        print(f"Delta Lake jars for {delta_maven_coordinates()} in {jars_dir()}:")
        for j in delta_jars():
            print("  " + Path(j).name)
        print(f"Derby network server and client ({', '.join(derby_maven_coordinates())}) in {derby_jars_dir()}; "
              f"the engine from pyspark:")
        for a, j in derby_jars().items():
            print(f"  {a}: {j}")
        print(f"s3a ({', '.join(s3a_maven_coordinates())}): {len(s3a_jars())} jars in {s3a_jars_dir()}")
        return 0
    if len(argv) == 4 and argv[0] == "ivy-fetch":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        _ivy_fetch_here(*argv[1:])
        return 0
    if argv == ["coordinates"]:
        print(delta_maven_coordinates())
        for c in derby_maven_coordinates() + s3a_maven_coordinates():
            print(c)
        return 0
    print("usage: python -m moodlake.spark resolve-jars|coordinates", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


@contextlib.contextmanager
def session_conf(spark, settings: dict[str, str]):
    """The session's configuration with ``settings`` while the block runs, as it was after."""
    before = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
