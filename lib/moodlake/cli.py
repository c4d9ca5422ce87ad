"""The ``moodlake`` command. Every ``jobs/*.py`` spark-submit entry point calls :func:`main` too.

    moodlake [--env ENV] [--set section.key=value ...] COMMAND ...

    ingest flickr --ids FILE [--format auto|plain|csv|fi|mat] [--label-set NAME] [--refresh] [--source-name NAME]
    ingest flickr --search [--tags T,..] [--text Q] [--since DATE] [--until DATE] [--max N]
    ingest dataset NAME [--path DIR] [--label-set NAME] [--taxonomy ekman|original] [--source-name NAME]
    ingest synthetic --n N [--seed S] [--label-set NAME]
    ingest csd [FILE ...] [--labels FILE ...] --source-name NAME
    features
    datasets build NAME [--fold F | --all-folds]
    datasets list
    train --dataset NAME [--model multitask] [--fold F] [--epochs N] [--processes P] [--promote]
    models list | models promote VERSION | models sync
    evaluate [--version VERSION|production] [--dataset NAME] [--fold F] [--split test]
    score [--since DATE] [--until DATE] [--version VERSION|production] [--limit N] [--source NAME ...]
    score segments [--version VERSION|production] [--source NAME ...] [--limit N]
    views
    sql "QUERY" [--limit N] [--spark]
    metastore start|status|stop
    sql-server start|status|stop
    tables
    ui [--port N]
    demo
    nightly [--date YYYY-MM-DD] [--skip ingest|features|score] [--only STEP] [--dry-run]
    maintain

The global options ``--env`` and ``--set`` go before the command or after it (``--set`` may be
repeated in both places; every one counts). ``--version`` names a registered model version
everywhere (``evaluate --model`` is its older spelling); ``train --model`` names an architecture.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from moodlake.console import print_rows, print_table

log = logging.getLogger("moodlake")


def _global_options(p: argparse.ArgumentParser, level: int = 0) -> None:
    """``--env`` and ``--set`` on ``p``: the top-level parser (level 0) or a command's parser at
    that depth. A command's parser keeps them apart (``env_1``, ``set_2``, ...; nothing when not
    given) because argparse would otherwise let it replace what came before the command:
    :func:`parse_args` merges them."""
    top = level == 0
    suffix = "" if top else f"_{level}"
    p.add_argument("--env", dest="env" + suffix, default=None if top else argparse.SUPPRESS, metavar="ENV",
                   help="configuration environment (conf/<env>/); default MOODLAKE_ENV or 'demo'")
    p.add_argument("--set", dest="set" + suffix, action="append", default=[] if top else argparse.SUPPRESS,
                   metavar="KEY=VALUE", help="override a configuration key, e.g. --set flickr.calls_per_hour=1800 "
                                             "(repeatable; before or after the command)")


def _command_parsers(p: argparse.ArgumentParser, level: int = 1):
    """(parser, depth) of every command and sub-command under ``p``."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield sp, level
                yield from _command_parsers(sp, level + 1)


def build_parser() -> argparse.ArgumentParser:
    """The ``moodlake`` argument parser (:func:`parse_args` merges the global options)."""
    p = argparse.ArgumentParser(prog="moodlake", description="MoodLake: emotions of social-media posts on a lakehouse")
    _global_options(p)
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="bring posts into moodlake.posts").add_subparsers(dest="what", required=True)
    fl = ing.add_parser("flickr", help="from the Flickr API (key and secret from FLICKR_API_KEY / FLICKR_API_SECRET or conf/local/)")
    mode = fl.add_mutually_exclusive_group(required=True)
    mode.add_argument("--ids", metavar="FILE", help="photo ids: text, CSV, FI list or finalDataset.mat")
    mode.add_argument("--search", action="store_true", help="new posts from flickr.photos.search")
    fl.add_argument("--format", default="auto", choices=["auto", "plain", "csv", "fi", "mat"])
    fl.add_argument("--label-set", help="label set of labels carried by the id list")
    fl.add_argument("--tags", help="search: comma-separated tags")
    fl.add_argument("--tag-mode", default="any", choices=["any", "all"])
    fl.add_argument("--text", help="search: free text")
    fl.add_argument("--since", help="search: uploaded at or after (YYYY-MM-DD or unix seconds)")
    fl.add_argument("--until", help="search: uploaded before (YYYY-MM-DD or unix seconds)")
    fl.add_argument("--max", type=int, help="search: at most this many posts")
    fl.add_argument("--refresh", action="store_true", help="fetch ids that already landed again")
    fl.add_argument("--source-name", default="flickr")

    ds = ing.add_parser("dataset", help="a research set or export on disk")
    ds.add_argument("name", choices=["vso-twitter", "emotion6", "goemotions", "export"])
    ds.add_argument("--path", help="its folder (default: <data.shared_dir>/<usual folder>)")
    ds.add_argument("--label-set")
    ds.add_argument("--taxonomy", choices=["ekman", "original"], help="goemotions only")
    ds.add_argument("--splits", help="goemotions only: comma-separated splits (default train,dev,test where present)")
    ds.add_argument("--source-name", help="the source name its posts get (default: NAME), e.g. to ingest a second "
                                          "folder of the same layout as a source of its own")

    syn = ing.add_parser("synthetic", help="seeded synthetic posts with a learnable emotion signal")
    syn.add_argument("--n", type=int, required=True)
    syn.add_argument("--seed", type=int, default=7)
    syn.add_argument("--label-set", default="mikels8")

    csd = ing.add_parser(
        "csd", help="CMU-MultimodalSDK computational sequences (.csd): video features and segment labels",
        description="Feature sequences (FILE: COVAREP, FACET, GloVe, ...) into moodlake.video_features, labels "
                    "sequences (--labels FILE) into moodlake.segment_labels, bad videos into "
                    "moodlake.ingest_failures; idempotent (a second run changes no row). A file that cannot be "
                    "read at all stops the run before anything is written.")
    csd.add_argument("files", nargs="*", metavar="FILE", help="feature sequences (.csd), one modality each")
    csd.add_argument("--labels", action="append", default=[], metavar="FILE",
                     help="a labels sequence (.csd), e.g. CMU_MOSI_Opinion_Labels.csd (repeatable)")
    csd.add_argument("--source-name", required=True, metavar="NAME",
                     help="the source its rows get (e.g. cmu-mosi): a dataset's files share one")

    sub.add_parser("features", help="bring moodlake.post_features up to date with moodlake.posts")
    dsp = sub.add_parser("datasets", help="training datasets (Petastorm) from the feature table")
    dss = dsp.add_subparsers(dest="action", required=True)
    b = dss.add_parser("build", help="build a dataset of datasets.definitions (idempotent)")
    b.add_argument("name")
    b.add_argument("--fold", help="folds split: the source fold used as test set (e.g. partition3)")
    b.add_argument("--all-folds", action="store_true", help="folds split: one build per fold")
    dss.add_parser("list", help="the builds recorded in moodlake.datasets")

    tr = sub.add_parser("train", help="train a model on a dataset (DDP), record it, register the best weights")
    tr.add_argument("--dataset", required=True, help="a dataset of datasets.definitions (built)")
    tr.add_argument("--model", default="multitask", help="a model with a recipe in training.recipes")
    tr.add_argument("--fold", help="for datasets split by folds: the test fold")
    tr.add_argument("--epochs", type=int, help="at most this many epochs (per phase)")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--processes", type=int, help="DDP processes (training.processes)")
    tr.add_argument("--launcher", choices=["distributor", "torchrun", "inline"], help="training.launcher")
    tr.add_argument("--new-run", action="store_true", help="start a new run instead of resuming this one")
    tr.add_argument("--promote", action="store_true", help="make the result the production model")

    mp = sub.add_parser("models", help="the model registry (MLflow, mirrored in moodlake.models)")
    ms = mp.add_subparsers(dest="action", required=True)
    ms.add_parser("list", help="every registered version")
    pr = ms.add_parser("promote", help="make VERSION the model that scoring uses (the MLflow alias production): "
                                       "one for posts, one for video segments")
    pr.add_argument("version")
    ms.add_parser("sync", help="mirror MLflow's production alias into moodlake.models (after moving it in the "
                               "MLflow UI)")

    ev = sub.add_parser("evaluate", help="evaluate a model version on a dataset split")
    ev.add_argument("--version", "--model", dest="version", default="production",
                    help="a registered version, or 'production' (default); --model is the older spelling")
    ev.add_argument("--dataset", help="default: the dataset the model was trained on")
    ev.add_argument("--fold")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])

    sc = sub.add_parser(
        "score", help="score new or changed posts of moodlake.post_features (or video segments) with a model, exactly once",
        description="posts (the default): the rows of moodlake.post_features into moodlake.emotion_scores; segments: "
                    "the labelled segments of moodlake.segment_labels, aligned as the model's dataset was, into "
                    "moodlake.segment_emotion_scores (an intensity 0-3 per emotion). Each (row, version) once; the run "
                    "in moodlake.scoring_runs.")
    sc.add_argument("target", nargs="?", choices=["posts", "segments"], default="posts",
                    help="what to score: posts (default) or segments (video segments, with a williams_blstm model)")
    sc.add_argument("--since", help="posts only: uploaded at or after (YYYY-MM-DD or a timestamp, UTC)")
    sc.add_argument("--until", help="posts only: uploaded before (YYYY-MM-DD or a timestamp, UTC)")
    sc.add_argument("--version", default="production",
                    help="a registered version (shadow scoring, e.g. to compare with production); default: the "
                         "production model of posts (of video segments for segments)")
    sc.add_argument("--limit", type=int, help="at most this many posts (oldest uploads first) or segments")
    sc.add_argument("--source", action="append", default=[],
                    help="only posts of this source (repeatable); segments: the videos of this source (default: the "
                         "model's dataset's)")
    sub.add_parser("views", help="(re)create the analysts' views over the production models' scores")

    sql = sub.add_parser("sql", help="run a SQL query on the lakehouse and print the rows")
    sql.add_argument("query")
    sql.add_argument("--limit", type=int, default=100, help="rows printed at most (default 100)")
    sql.add_argument("--spark", action="store_true",
                     help="run the query on a Spark session of its own even when a sql-server runs")
    mst = sub.add_parser("metastore", help="the embedded lakehouse's shared metastore (Derby network server)")
    mst.add_argument("action", choices=["start", "status", "stop"])
    mst.add_argument("--force", action="store_true", help="stop: even while the lakehouse's sql-server runs")
    sqs = sub.add_parser("sql-server", help="the Spark Thrift (JDBC/ODBC) server on the lakehouse")
    sqs.add_argument("action", choices=["start", "status", "stop"])

    sub.add_parser("tables", help="print the documentation of every table")
    ui = sub.add_parser("ui", help="the MLflow UI of the experiment tracking and the model registry, on 127.0.0.1")
    ui.add_argument("--port", type=int, help="its port (mlflow.ui_port; 0: a free one)")
    ui.add_argument("--dry-run", action="store_true", help="print the command that serves it, start nothing")
    nb = sub.add_parser("notebook", help="execute an analyst notebook on the lakehouse and render it to HTML")
    nb.add_argument("--name", default="emotion_trends.ipynb", help="a notebook of notebooks/")
    nb.add_argument("--out", help="the HTML file (default <lakehouse.home>/reports/<name>.html)")
    sm = sub.add_parser("submit", help="run a jobs/*.py entry point with spark-submit, settings from config")
    sm.add_argument("job", help="a job in jobs/ (ingest, sql, ...)")
    sm.add_argument("job_args", nargs=argparse.REMAINDER,
                    help="the job's arguments (those of the moodlake command it runs; --env and --set given here "
                         "are the job's, not spark-submit's)")
    sm.add_argument("--dry-run", action="store_true", help="print the spark-submit command only")
    sub.add_parser("demo", help="the whole pipeline end to end on the embedded lakehouse")
    nt = sub.add_parser("nightly", help="the night's chain: ingest >> features >> score, each a spark-submit job")
    nt.add_argument("--date", help="the night, YYYY-MM-DD (default today, UTC); the Flickr search covers the day before")
    nt.add_argument("--skip", action="append", default=[], choices=["ingest", "features", "score"],
                    help="leave a step out (repeatable)")
    nt.add_argument("--only", choices=["ingest", "features", "score"], help="run this step only (a scheduler's task)")
    nt.add_argument("--dry-run", action="store_true", help="print each step's spark-submit command, run nothing")
    sub.add_parser("maintain", help="OPTIMIZE and VACUUM every MoodLake table (maintenance.retention_days of time travel)")
    for parser, level in list(_command_parsers(p)):
        _global_options(parser, level)
    return p


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``argv`` parsed, the global options given after the command merged into ``env`` and ``set``:
    every ``--set`` counts (in command-line order), and ``--env`` may be given once."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    for name in sorted(k for k in vars(args) if k.startswith(("env_", "set_"))):
        value = vars(args).pop(name)
        if name.startswith("set_"):
            args.set = args.set + value
        elif args.env is not None and value != args.env:
            parser.error(f"--env given twice: {args.env} and {value}")
        else:
            args.env = value
    return args


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def build_source(args, cfg):
    """The ingest Source described by parsed CLI arguments."""
    if args.what == "dataset":
        from moodlake.sources.datasets import DEFAULT_PATHS, dataset_source

        path = args.path or (str(Path(cfg.data.shared_dir) / DEFAULT_PATHS[args.name]) if args.name in DEFAULT_PATHS else None)
        if path is None:
            raise SystemExit("ingest dataset export needs --path")
        options = {}
        if args.taxonomy:
            if args.name != "goemotions":
                raise SystemExit("--taxonomy applies to goemotions only")
            options["taxonomy"] = args.taxonomy
        if args.splits:
            if args.name != "goemotions":
                raise SystemExit("--splits applies to goemotions only")
            options["splits"] = tuple(x.strip() for x in args.splits.split(",") if x.strip())
        if args.source_name:
            options["name"] = args.source_name
        return dataset_source(args.name, path, cfg, args.label_set, **options)
    if args.what == "synthetic":
        from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec

        return SyntheticSource(n=args.n, spec=SyntheticSpec(labels=cfg.label_set(args.label_set), seed=args.seed),
                               label_set_name=args.label_set)
    if args.what == "flickr":
        from moodlake.sources.flickr import flickr_source

        return flickr_source(cfg, args)
    raise SystemExit(f"unknown ingest {args.what}")


def _datasets(spark, cfg, args) -> None:
    from moodlake.data.build import build_dataset

    if args.action == "list":
        print_rows(spark.sql(f"SELECT name, version, label_set, train_rows, val_rows, test_rows, excluded_rows, "
                             f"vocab_version, built_at, path FROM {cfg.table('datasets')} ORDER BY built_at DESC"), 100)
        return
    if cfg.dataset(args.name).segments is not None:  # a segment dataset: split by video, no folds
        from moodlake.data.segments import build_segment_dataset

        if args.fold or args.all_folds:
            raise SystemExit(f"dataset {args.name} is split by video; --fold and --all-folds do not apply")
        print(build_segment_dataset(spark, cfg, args.name).summary())
        return
    folds = [args.fold]
    if args.all_folds:
        from pyspark.sql import functions as F

        d = cfg.dataset(args.name)
        folds = sorted(r[0] for r in spark.table(cfg.table("post_features")).where(F.col("source").isin(*d.sources))
                       .select("source_split").distinct().collect() if r[0])
    for fold in folds:
        print(build_dataset(spark, cfg, args.name, fold).summary())


def _submit(cfg, args) -> int:
    import os
    import shlex
    import subprocess

    from moodlake.config import repo_root
    from moodlake.spark import spark_submit_command

    script = repo_root() / "jobs" / f"{args.job}.py"
    if not script.exists():
        known = ", ".join(sorted(p.stem for p in (repo_root() / "jobs").glob("*.py")))
        print(f"moodlake: no job {args.job!r}; jobs: {known}", file=sys.stderr)
        return 2
    cmd = spark_submit_command(cfg, str(script), args.job_args)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    env = dict(os.environ, MOODLAKE_ENV=cfg.env, SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
               PYSPARK_PYTHON=cfg.spark.conf.get("spark.pyspark.python", sys.executable))
    return subprocess.call(cmd, env=env)


def _nightly(cfg, args) -> int:
    import os

    from moodlake.nightly import GROUPS, parse_night, plan, run_chain

    try:
        night = parse_night(args.date)
    except ValueError as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 2
    skip = [g for g in GROUPS if g in args.skip or (args.only and g != args.only)]
    # --set overrides reach the spark-submit jobs as MOODLAKE__SECTION__KEY variables (keys are
    # lower-cased on the way, as every such variable is)
    for key, value in _overrides(args.set).items():
        os.environ["MOODLAKE__" + "__".join(key.upper().split("."))] = value

    def run(step) -> int:
        return _submit(cfg, argparse.Namespace(job=step.job, job_args=list(step.args), dry_run=args.dry_run))

    return run_chain(cfg, night, plan(cfg, night, skip), run, skip=skip, dry_run=args.dry_run)


def _service(cfg, args) -> int:
    """moodlake metastore|sql-server start|status|stop"""
    from moodlake import metastore, services, sql_server
    from moodlake.spark import SetupError

    try:
        if args.command == "metastore":
            if not metastore.enabled(cfg):
                print(f"metastore: external Hive metastore {cfg.lakehouse.metastore_uri} (lakehouse.metastore_uri); "
                      "nothing runs locally")
                return 0 if args.action == "status" else 2
            if args.action == "stop":
                if not args.force and sql_server.status(cfg):
                    print("moodlake: the lakehouse's sql-server uses the metastore: `moodlake sql-server stop` first "
                          "(or metastore stop --force)", file=sys.stderr)
                    return 1
                st = metastore.stop(cfg)
                print(f"metastore: stopped (pid {st['pid']}, port {st['port']})" if st else "metastore: not running")
                return 0
            st = metastore.ensure_running(cfg) if args.action == "start" else metastore.status(cfg)
            if not st:
                print("metastore: not running (Spark sessions on this lakehouse start it)")
                return 1
            print(f"metastore: Derby network server on {st['host']}:{st['port']} (pid {st['pid']})\n"
                  f"  url: {st['url']}\n  log: {st['log']}")
            return 0
        if args.action == "stop":
            st = sql_server.stop(cfg)
            print(f"sql-server: stopped (pid {st['pid']}, port {st['port']})" if st else "sql-server: not running")
            return 0
        if args.action == "start":
            st, started = sql_server.start(cfg)
            how = f"started in {st['start_s']} s" if started else "already running"
        else:
            st, how = sql_server.status(cfg), "running"
            if not st:
                print("sql-server: not running (moodlake sql-server start)")
                return 1
        print(f"sql-server: {how}, pid {st['pid']}\n  jdbc: {st['jdbc_url']}\n  log:  {st['log']}")
        return 0
    except (services.ServiceError, SetupError) as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 1


def _ui(cfg, args) -> int:
    """moodlake ui: the MLflow server of the configured stores on 127.0.0.1, in the foreground."""
    import shlex
    import subprocess

    from moodlake.train import tracking

    uri = tracking.tracking_uri(cfg)
    if tracking.is_server(uri):
        print(f"the MLflow UI is the tracking server's: {uri}")
        return 0
    cmd = tracking.ui_command(cfg, args.port)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if not tracking.ui_available():
        print("moodlake: the MLflow UI is not installed (the mlflow wheel: `make setup`)", file=sys.stderr)
        return 2
    print(f"MLflow UI: http://127.0.0.1:{cmd[cmd.index('--port') + 1]} (store {uri}; Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(cmd, env=tracking.ui_environment())
    except KeyboardInterrupt:
        return 0


def _sql_via_server(cfg, args) -> int | None:
    """``moodlake sql`` through the lakehouse's running sql-server; None when there is none (or it
    cannot be reached) and the query should run on Spark."""
    from moodlake import sql_server
    from moodlake.spark import under_spark_submit

    if under_spark_submit():  # a submitted job queries with its own session
        return None
    state = sql_server.status(cfg)
    if not state:
        return None
    try:
        cols, rows = sql_server.query(cfg, state, args.query, args.limit)
    except ConnectionError as e:
        log.warning("%s; running the query on Spark", e)
        return None
    except sql_server.QueryError as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 1
    print_table(cols, rows, args.limit)
    return 0


def _views(spark, cfg) -> None:
    """moodlake views: the views of posts and of video segments, each where its task has a production
    model; ScoringError (no production model) when neither has."""
    from moodlake.scoring import Scorer, ScoringError
    from moodlake.segment_scoring import SegmentScorer
    from moodlake.views import SEGMENT_VIEW_NAMES, VIEW_NAMES

    made, errors = [], []
    for job, names in ((Scorer(spark, cfg), VIEW_NAMES), (SegmentScorer(spark, cfg), SEGMENT_VIEW_NAMES)):
        try:
            _, config, _ = job.model("production")
        except ScoringError as e:
            errors.append(e)
            continue
        job.create_views(config)
        made += names
    if not made:
        raise errors[0]
    print("views: " + ", ".join(f"{cfg.lakehouse.database}.{v}" for v in made))


def main(argv: list[str] | None = None) -> int:
    from moodlake.config import ConfigError, load_config
    from moodlake.logs import log_file, register_secret, setup_logging

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.env, overrides=_overrides(args.set))
    except ConfigError as e:
        print(f"moodlake: configuration error: {e}", file=sys.stderr)
        return 2
    # the console shows MoodLake's lines, each once: results are printed on standard output (not
    # logged there too); libraries' warnings, and Spark's log (moodlake.spark), go to <home>/logs/
    setup_logging(file=log_file(cfg.lakehouse.home), summaries=False)
    register_secret(cfg.flickr.api_key)
    register_secret(cfg.flickr.api_secret)

    if args.command == "ingest" and args.what == "csd" and not (args.files or args.labels):
        print("moodlake: ingest csd: give feature files (FILE ...), --labels FILE, or both", file=sys.stderr)
        return 2
    if args.command == "score" and args.target == "segments" and (args.since or args.until):
        print("moodlake: score segments: --since and --until select posts by upload time; segments have none",
              file=sys.stderr)
        return 2
    if args.command == "submit":
        return _submit(cfg, args)
    if args.command == "nightly":
        return _nightly(cfg, args)
    if args.command == "notebook":
        from moodlake.notebooks import notebook_path, render_notebook

        env = {"MOODLAKE_HOME": str(cfg.lakehouse.home), "MOODLAKE_ENV": cfg.env}
        env.update({"MOODLAKE__" + "__".join(k.upper().split(".")): v for k, v in _overrides(args.set).items()})
        out = Path(args.out) if args.out else Path(cfg.lakehouse.home) / "reports" / (Path(args.name).stem + ".html")
        print(f"notebook rendered: {render_notebook(notebook_path(args.name), out, env)}")
        return 0
    if args.command == "tables":
        from moodlake.tables import describe

        print(describe(cfg=cfg))
        return 0
    if args.command in ("metastore", "sql-server"):
        return _service(cfg, args)
    if args.command == "ui":
        return _ui(cfg, args)
    if args.command == "sql" and not args.spark:
        answered = _sql_via_server(cfg, args)
        if answered is not None:
            return answered

    from moodlake.ingest import IngestError, Ingestor
    from moodlake.scoring import ScoringError
    from moodlake.spark import SetupError, build_spark
    from moodlake.train.tracking import TrackingError
    from pyspark.errors import AnalysisException

    try:
        spark = build_spark(cfg, app_name=f"moodlake-{args.command}")
    except SetupError as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "ingest" and args.what == "csd":
            from moodlake.sources.csd import CsdError
            from moodlake.video_ingest import CsdIngestor

            try:
                print(CsdIngestor(spark, cfg).run_csd(args.source_name, args.files, args.labels).summary())
            except CsdError as e:
                print(f"moodlake: {e}", file=sys.stderr)
                return 1
        elif args.command == "ingest":
            source = build_source(args, cfg)
            result = Ingestor(spark, cfg).run(source, refresh=getattr(args, "refresh", False))
            print(result.summary())
        elif args.command == "features":
            from moodlake.features import run_features

            print(run_features(spark, cfg).summary())
        elif args.command == "datasets":
            _datasets(spark, cfg, args)
        elif args.command == "train":
            import dataclasses

            from moodlake.train.launch import TrainingError, train

            if args.launcher:
                cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, launcher=args.launcher))
            try:
                print(train(spark, cfg, args.dataset, args.model, fold=args.fold, promote=args.promote,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, processes=args.processes,
                            new_run=args.new_run).summary())
            except TrainingError as e:  # a rank died: one line, the next run resumes
                print(f"moodlake: {e}", file=sys.stderr)
                return 1
        elif args.command == "models":
            from moodlake.train.registry import TASK_NAMES, promote, sync_stages

            if args.action == "promote":
                task = promote(spark, cfg, args.version)
                print(f"{args.version} is now the production model for {TASK_NAMES[task]}")
            elif args.action == "sync":
                for task, found in sync_stages(spark, cfg).items():
                    print(f"production model for {TASK_NAMES[task]} (MLflow alias): {found}" if found else
                          f"no MLflow model version of {TASK_NAMES[task]} carries the alias production; "
                          "moodlake.models left as it is")
            print_rows(spark.sql(f"SELECT version, model, dataset, label_set, stage, created_at, promoted_at, "
                                 f"get_json_object(metrics, '$.val_accuracy') AS val_metric, code_revision "
                                 f"FROM {cfg.table('models')} ORDER BY created_at DESC"), 100)
        elif args.command == "evaluate":
            from moodlake.evaluation.job import evaluate

            print(evaluate(spark, cfg, args.version, args.dataset, args.fold, args.split).summary())
        elif args.command == "score" and args.target == "segments":
            from moodlake.segment_scoring import score_segments

            print(score_segments(spark, cfg, args.version, tuple(args.source), args.limit).summary())
        elif args.command == "score":
            from moodlake.scoring import score

            print(score(spark, cfg, args.version, args.since, args.until, args.limit, tuple(args.source)).summary())
        elif args.command == "views":
            _views(spark, cfg)
        elif args.command == "sql":
            print_rows(spark.sql(args.query), args.limit)
        elif args.command == "maintain":
            from moodlake.maintenance import maintain

            results = maintain(spark, cfg, report=lambda r: print(r.summary(), flush=True))
            return 1 if any(r.error for r in results) else 0
        elif args.command == "demo":
            # the showcase lives beside the product (it serves Flickr from the test double), installed
            # with it; only this command imports it
            from moodlake_dev.demo import run_demo

            run_demo(spark, cfg)
        return 0
    except (IngestError, ScoringError, TrackingError, FileNotFoundError, ConfigError) as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 1
    except AnalysisException as e:  # a wrong query or a table that cannot be read: its first line says why
        print(f"moodlake: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
