"""spark-submit entry point for tests: run SQL queries on the lakehouse, print their rows as JSON.

    spark-submit [options] table_probe.py "SELECT count(*) AS n FROM moodlake.posts" ...

Prints one line ``PROBE-JSON [[{column: value, ...}, ...], ...]`` (one list of rows per query), so
that a test outside the Spark application reads the tables a submitted job wrote.
"""
import json
import sys


def main(queries: list[str]) -> int:
    from moodlake.config import load_config
    from moodlake.spark import build_spark

    spark = build_spark(load_config(), app_name="moodlake-probe")
    try:
        out = [[r.asDict(recursive=True) for r in spark.sql(q).collect()] for q in queries]
    finally:
        spark.stop()
    print("PROBE-JSON " + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
