"""The ``moodlake`` command. Every ``jobs/*.py`` spark-submit entry point calls :func:`main` too.

    moodlake [--env ENV] [--set section.key=value ...] COMMAND ...

    ingest flickr --ids FILE [--format auto|plain|csv|fi|mat] [--label-set NAME] [--refresh]
    ingest flickr --search [--tags T,..] [--text Q] [--since DATE] [--until DATE] [--max N]
    ingest dataset NAME --path DIR [--label-set NAME] [--taxonomy ekman|original] [--source-name NAME]
    ingest synthetic --n N [--seed S] [--label-set NAME]
    features
    datasets build NAME [--fold F | --all-folds]
    datasets list
    train --dataset NAME [--model multitask] [--fold F] [--epochs N] [--processes P] [--promote]
    models list | models promote VERSION
    evaluate [--model VERSION|production] [--dataset NAME] [--fold F] [--split test]
    sql "QUERY" [--limit N]
    tables
    demo
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("moodlake")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moodlake", description="MoodLake: emotions of social-media posts on a lakehouse")
    p.add_argument("--env", help="configuration environment (conf/<env>/); default MOODLAKE_ENV or 'demo'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration key, e.g. --set flickr.calls_per_hour=1800")
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
    ds.add_argument("--source-name", help="export only: the source name its posts get (default 'export')")

    syn = ing.add_parser("synthetic", help="seeded synthetic posts with a learnable emotion signal")
    syn.add_argument("--n", type=int, required=True)
    syn.add_argument("--seed", type=int, default=7)
    syn.add_argument("--label-set", default="mikels8")

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

    mp = sub.add_parser("models", help="the model registry (moodlake.models)")
    ms = mp.add_subparsers(dest="action", required=True)
    ms.add_parser("list", help="every registered version")
    pr = ms.add_parser("promote", help="make VERSION the model that scoring uses")
    pr.add_argument("version")

    ev = sub.add_parser("evaluate", help="evaluate a model version on a dataset split")
    ev.add_argument("--model", default="production", help="a version, or 'production' (default)")
    ev.add_argument("--dataset", help="default: the dataset the model was trained on")
    ev.add_argument("--fold")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])

    sql = sub.add_parser("sql", help="run a SQL query on the lakehouse and print the rows")
    sql.add_argument("query")
    sql.add_argument("--limit", type=int, default=100, help="rows printed at most (default 100)")

    sub.add_parser("tables", help="print the documentation of every table")
    sm = sub.add_parser("submit", help="run a jobs/*.py entry point with spark-submit, settings from config")
    sm.add_argument("job", help="a job in jobs/ (ingest, sql, ...)")
    sm.add_argument("job_args", nargs=argparse.REMAINDER)
    sm.add_argument("--dry-run", action="store_true", help="print the spark-submit command only")
    sub.add_parser("demo", help="the whole pipeline end to end on the embedded lakehouse")
    return p


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
            if args.name != "export":
                raise SystemExit("--source-name applies to export only")
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


def print_rows(df, limit: int, out=sys.stdout) -> int:
    """Print a DataFrame as an aligned text table; binary cells as <N bytes>. Returns rows shown."""
    rows = df.limit(limit + 1).collect()
    cols = df.columns

    def cell(v) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        s = str(v)
        return s if len(s) <= 80 else s[:77] + "..."

    table = [[cell(r[c]) for c in cols] for r in rows[:limit]]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
    print("-+-".join("-" * w for w in widths), file=out)
    for t in table:
        print(" | ".join(v.ljust(w) for v, w in zip(t, widths)), file=out)
    more = " (more rows not shown; --limit)" if len(rows) > limit else ""
    print(f"({len(table)} row{'s' if len(table) != 1 else ''}){more}", file=out)
    return len(table)


def _datasets(spark, cfg, args) -> None:
    from moodlake.data.build import build_dataset

    if args.action == "list":
        print_rows(spark.sql(f"SELECT name, version, label_set, train_rows, val_rows, test_rows, excluded_rows, "
                             f"vocab_version, built_at, path FROM {cfg.table('datasets')} ORDER BY built_at DESC"), 100)
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


def main(argv: list[str] | None = None) -> int:
    from moodlake.config import ConfigError, load_config
    from moodlake.logs import register_secret, setup_logging

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        cfg = load_config(args.env, overrides=_overrides(args.set))
    except ConfigError as e:
        print(f"moodlake: configuration error: {e}", file=sys.stderr)
        return 2
    register_secret(cfg.flickr.api_key)
    register_secret(cfg.flickr.api_secret)

    if args.command == "submit":
        return _submit(cfg, args)
    if args.command == "tables":
        from moodlake.tables import describe

        print(describe(cfg=cfg))
        return 0

    from moodlake.ingest import IngestError, Ingestor
    from moodlake.spark import SetupError, build_spark
    from pyspark.errors import AnalysisException

    try:
        spark = build_spark(cfg, app_name=f"moodlake-{args.command}")
    except SetupError as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "ingest":
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

            from moodlake.train.launch import train

            if args.launcher:
                cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, launcher=args.launcher))
            print(train(spark, cfg, args.dataset, args.model, fold=args.fold, promote=args.promote,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, processes=args.processes,
                        new_run=args.new_run).summary())
        elif args.command == "models":
            from moodlake.train.registry import promote

            if args.action == "promote":
                promote(spark, cfg, args.version)
                print(f"{args.version} is now the production model")
            print_rows(spark.sql(f"SELECT version, model, dataset, label_set, stage, created_at, promoted_at, "
                                 f"get_json_object(metrics, '$.val_accuracy') AS val_metric, code_revision "
                                 f"FROM {cfg.table('models')} ORDER BY created_at DESC"), 100)
        elif args.command == "evaluate":
            from moodlake.evaluation.job import evaluate

            print(evaluate(spark, cfg, args.model, args.dataset, args.fold, args.split).summary())
        elif args.command == "sql":
            print_rows(spark.sql(args.query), args.limit)
        elif args.command == "demo":
            from moodlake.demo import run_demo

            run_demo(spark, cfg)
        return 0
    except (IngestError, FileNotFoundError, ConfigError) as e:
        print(f"moodlake: {e}", file=sys.stderr)
        return 1
    except AnalysisException as e:  # a wrong query: the message is the answer
        print(f"moodlake: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
