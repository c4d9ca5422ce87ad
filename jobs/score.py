"""spark-submit entry point: score new or changed posts (or, with `segments`, video segments) with the
production model of posts (of video segments) or --version V.

    spark-submit [options] jobs/score.py [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--version V] [--limit N]
    spark-submit [options] jobs/score.py segments [--version V] [--source NAME] [--limit N]

(or: moodlake submit score ...). Exit 0 when done, also with "0 new posts"; 1 with one line saying why
when the run cannot start or fails (no production model, a table that cannot be read, ...).
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
