"""spark-submit entry point: `moodlake models` (same arguments).

    spark-submit [options] jobs/models.py ...        (or: moodlake submit models ...)
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", *sys.argv[1:]]))
