"""spark-submit entry point: build training datasets (Petastorm) from moodlake.post_features.

    spark-submit [options] jobs/datasets.py build synthetic
    spark-submit [options] jobs/datasets.py build vso-twitter --all-folds
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["datasets", *sys.argv[1:]]))
