"""spark-submit entry point: bring moodlake.post_features up to date with moodlake.posts.

    spark-submit [options] jobs/features.py        (or: moodlake submit features)
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))
