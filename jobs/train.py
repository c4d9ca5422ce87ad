"""spark-submit entry point: `moodlake train` (same arguments).

    spark-submit [options] jobs/train.py ...        (or: moodlake submit train ...)
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
