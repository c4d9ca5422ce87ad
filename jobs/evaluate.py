"""spark-submit entry point: `moodlake evaluate` (same arguments).

    spark-submit [options] jobs/evaluate.py ...        (or: moodlake submit evaluate ...)
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
