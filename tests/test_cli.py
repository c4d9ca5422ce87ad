"""The moodlake command's arguments, without Spark: global options before and after the command,
one name for a model version, a source name for every research set, and what reaches the console
and the log file."""
from __future__ import annotations

import io
import logging
import os
import warnings

import pytest
from PIL import Image

from moodlake import cli
from moodlake.config import load_config
from moodlake.ingest import ExecContext
from moodlake.logs import SUMMARY, log_file, setup_logging
from moodlake.spark import LOG4J_CONFIG, spark_submit_command, with_driver_log


@pytest.fixture
def clean_environ(tmp_path, monkeypatch):
    """No MOODLAKE_*/FLICKR_* variables of the caller; a lakehouse of the test's own."""
    for k in [k for k in os.environ if k.startswith(("MOODLAKE", "FLICKR_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MOODLAKE_HOME", str(tmp_path / "lh"))
    return tmp_path / "lh"


# --------------------------------------------------------------------------- global options


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "synthetic", "--epochs", "2"],
    ["ingest", "dataset", "emotion6", "--path", "/data/e6"],
    ["models", "promote", "multitask-0123"],
    ["sql", "select 1", "--limit", "5"],
    ["nightly", "--date", "2026-11-22"],
    ["tables"],
])
def test_global_options_mean_the_same_before_and_after_the_command(command):
    options = ["--env", "prod", "--set", "spark.shuffle_partitions=3", "--set", "ingest.chunk_size=7"]
    before = cli.parse_args(options + command)
    after = cli.parse_args(command + options)
    assert vars(before) == vars(after)
    assert before.env == "prod" and before.set == ["spark.shuffle_partitions=3", "ingest.chunk_size=7"]


def test_set_given_before_and_after_the_command_all_count_in_order():
    args = cli.parse_args(["--set", "a.b=1", "ingest", "--set", "c.d=2", "synthetic", "--n", "5", "--set", "e.f=3"])
    assert args.set == ["a.b=1", "c.d=2", "e.f=3"]
    assert (args.command, args.what, args.n) == ("ingest", "synthetic", 5)
    assert not [k for k in vars(args) if k.startswith(("env_", "set_"))]  # merged, nothing left apart


def test_env_given_before_and_after_must_agree(capsys):
    assert cli.parse_args(["--env", "prod", "tables", "--env", "prod"]).env == "prod"
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--env", "prod", "tables", "--env", "demo"])
    assert e.value.code == 2 and "--env given twice: prod and demo" in capsys.readouterr().err


def test_options_after_a_submitted_job_are_the_jobs():
    args = cli.parse_args(["submit", "--set", "spark.master=local[1]", "ingest", "synthetic", "--n", "5",
                           "--set", "ingest.chunk_size=7"])
    assert args.set == ["spark.master=local[1]"]  # spark-submit's configuration
    assert args.job_args == ["synthetic", "--n", "5", "--set", "ingest.chunk_size=7"]  # the job's
    assert cli.parse_args(["ingest", *args.job_args]).set == ["ingest.chunk_size=7"]  # as jobs/ingest.py parses them


@pytest.mark.parametrize("argv", [
    ["tables", "--set", "lakehouse.database=nightlydb"],
    ["--set", "lakehouse.database=nightlydb", "tables"],
])
def test_a_set_after_the_command_reaches_the_configuration(argv, clean_environ, fresh_logging, capsys):
    """`moodlake tables` prints the tables under the configured database's name (no Spark)."""
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "### nightlydb.posts" in out and "### moodlake.posts" not in out


# --------------------------------------------------------------------------- model versions


def test_evaluate_and_score_name_the_model_version_with_version():
    assert cli.parse_args(["evaluate", "--version", "multitask-0123"]).version == "multitask-0123"
    assert cli.parse_args(["score", "--version", "multitask-0123"]).version == "multitask-0123"
    assert cli.parse_args(["evaluate"]).version == cli.parse_args(["score"]).version == "production"
    # the older spelling still works
    assert cli.parse_args(["evaluate", "--model", "multitask-0123"]).version == "multitask-0123"
    assert cli.parse_args(["train", "--dataset", "d", "--model", "multitask"]).model == "multitask"  # an architecture


# --------------------------------------------------------------------------- source names


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _emotion6(root):
    (root / "images" / "joy").mkdir(parents=True)
    (root / "images" / "joy" / "1.jpg").write_bytes(_jpeg())
    (root / "ground_truth.txt").write_text(
        "[image_filename]\tvalence\tarousal\tanger\tdisgust\tfear\tjoy\tsadness\tsurprise\tneutral\n"
        "joy/1.jpg\t7.1\t5.2\t0\t0\t0\t0.9\t0\t0.1\t0\n"
        "joy/2.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0\n")  # listed, not there: a failure


def _goemotions(root):
    (root / "ekman").mkdir(parents=True)
    (root / "ekman" / "labels.txt").write_text("anger\ndisgust\nfear\njoy\nsadness\nsurprise\nneutral\n")
    (root / "ekman" / "dev.tsv").write_text("what a day\t3\tc1\n")


def _vso(root):
    (root / "partition1").mkdir(parents=True)
    (root / "partition1" / "7.jpg").write_bytes(_jpeg())
    (root / "partition1" / "7_sunset.txt").write_text('<meta property="og:title" content="hi">')
    (root / "groundTruthLabel.txt").write_text("image label\n7.jpg positive\n")


def _export(root):
    root.mkdir(parents=True)
    (root / "posts.jsonl").write_text('{"id": "p1", "title": "hello"}\n')


@pytest.mark.parametrize("name, make, source_id", [
    ("emotion6", _emotion6, "joy/1"),
    ("goemotions", _goemotions, "c1"),
    ("vso-twitter", _vso, "7"),
    ("export", _export, "p1"),
])
def test_every_research_set_lands_under_the_source_name_given(name, make, source_id, tmp_path, clean_environ):
    cfg = load_config("demo")
    folder = tmp_path / f"second-{name}"
    make(folder)
    args = cli.parse_args(["ingest", "dataset", name, "--path", str(folder), "--source-name", f"{name}-b"])
    source = cli.build_source(args, cfg)
    assert source.name == f"{name}-b"
    ctx = ExecContext(client=None, max_image_bytes=10_000_000)
    items = list(source.work_items(ctx))
    item = next(i for i in items if i.source_id == source_id)
    [(kind, row)] = source.process(item, ctx)
    assert kind == "post" and row["source"] == f"{name}-b" and row["post_id"] == f"{name}-b:{source_id}"
    for bad in (i for i in items if i.error):  # a failure carries the name too
        kind, failure = source.failure_for(bad, *bad.error)
        assert failure["source"] == f"{name}-b" and failure["post_id"].startswith(f"{name}-b:")
    # without --source-name: the set's own name
    default = cli.build_source(cli.parse_args(["ingest", "dataset", name, "--path", str(folder)]), cfg)
    assert default.name == name


# --------------------------------------------------------------------------- console and log file


def test_summary_lines_reach_the_log_file_not_the_console(tmp_path, fresh_logging, capsys):
    """The CLI prints a command's result on stdout: its console log leaves the same line out."""
    path = log_file(tmp_path / "lh")
    assert path == tmp_path / "lh" / "logs" / "moodlake.log"
    setup_logging(file=path, summaries=False)
    log = logging.getLogger("moodlake.test")
    log.info("committed chunk 2/9 of run r1")
    log.info("ingest x run r1: 603 input records = 603 new", extra=SUMMARY)
    err = capsys.readouterr().err
    assert "committed chunk 2/9" in err and "603 new" not in err
    text = path.read_text()
    assert "committed chunk 2/9" in text and "603 new" in text


def test_summary_lines_stay_on_the_console_of_callers_that_do_not_print_them(fresh_logging, capsys):
    setup_logging()
    logging.getLogger("moodlake.test").info("score v1 run r2: 0 new posts", extra=SUMMARY)
    assert "0 new posts" in capsys.readouterr().err


def test_library_warnings_go_to_the_log_file_only(tmp_path, fresh_logging, capsys):
    path = log_file(tmp_path / "lh")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging(file=path)
        warnings.warn("pyarrow.localfs is deprecated", FutureWarning)
        warnings.warn("an old API", DeprecationWarning)
        logging.getLogger("moodlake.test").warning("a MoodLake warning")
    err = capsys.readouterr().err
    assert "FutureWarning" not in err and "DeprecationWarning" not in err and "a MoodLake warning" in err
    text = path.read_text()
    assert "FutureWarning: pyarrow.localfs is deprecated" in text and "DeprecationWarning: an old API" in text


def test_a_command_that_logs_nothing_prints_its_lines_once_and_writes_no_log(clean_environ, fresh_logging, capsys):
    """`moodlake tables`: the tables on stdout, nothing else on the console, no file written (a dry
    run writes nothing); the first record creates the log file."""
    assert cli.main(["tables"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("### moodlake.posts") == 1 and captured.err == ""
    assert not clean_environ.exists()
    logging.getLogger("moodlake.test").info("first line")
    assert "first line" in (clean_environ / "logs" / "moodlake.log").read_text()


def test_spark_drivers_log_into_the_lakehouse_logs_folder(clean_environ):
    cfg = load_config("demo", overrides={"lakehouse.metastore_uri": "thrift://127.0.0.1:9"})  # starts nothing
    conf = with_driver_log(cfg, {"spark.driver.extraJavaOptions": '"-Dderby.system.home=/a b"'})
    opts = conf["spark.driver.extraJavaOptions"]
    assert opts.startswith('"-Dderby.system.home=/a b" ')  # kept
    assert f'"-Dlog4j2.configurationFile={LOG4J_CONFIG}"' in opts
    assert f'"-Dmoodlake.log.dir={clean_environ / "logs"}"' in opts
    props = LOG4J_CONFIG.read_text()
    assert "${sys:moodlake.log.dir}/spark.log" in props
    assert "appender.console.filter.threshold.level = error" in props
    # a configuration with a log4j configuration of its own, or a driver on the cluster, is left alone
    own = {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=/etc/spark/log4j2.properties"}
    assert with_driver_log(cfg, own) == own
    assert with_driver_log(cfg, {"spark.submit.deployMode": "cluster"}) == {"spark.submit.deployMode": "cluster"}
    # a submitted job's driver too
    cmd = spark_submit_command(cfg, "jobs/sql.py", ["select 1"])
    assert f"-Dlog4j2.configurationFile={LOG4J_CONFIG}" in cmd[cmd.index("--driver-java-options") + 1]


# --------------------------------------------------------------------------- ingest csd


def test_ingest_csd_takes_feature_files_labels_files_and_a_source_name(capsys):
    args = cli.parse_args(["ingest", "csd", "a.csd", "b.csd", "--labels", "l1.csd", "--labels", "l2.csd",
                           "--source-name", "mosei"])
    assert (args.what, args.files, args.labels, args.source_name) == ("csd", ["a.csd", "b.csd"], ["l1.csd", "l2.csd"],
                                                                      "mosei")
    with pytest.raises(SystemExit):
        cli.parse_args(["ingest", "csd", "a.csd"])
    assert "the following arguments are required: --source-name" in capsys.readouterr().err


def test_ingest_csd_without_a_file_stops_before_spark(clean_environ, fresh_logging, capsys):
    assert cli.main(["ingest", "csd", "--source-name", "x"]) == 2
    assert "give feature files (FILE ...), --labels FILE, or both" in capsys.readouterr().err
    assert not (clean_environ / "metastore_db").exists()


def test_moodlake_tables_documents_the_video_tables(clean_environ, fresh_logging, capsys):
    assert cli.main(["tables"]) == 0
    out = capsys.readouterr().out
    assert "### moodlake.video_features" in out and "### moodlake.segment_labels" in out
    assert "| features | array<array<float>> |" in out and "| label_values | array<float> |" in out
