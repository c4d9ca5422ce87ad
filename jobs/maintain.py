"""spark-submit entry point: OPTIMIZE and VACUUM every MoodLake Delta table (weekly).

    spark-submit [options] jobs/maintain.py        (or: moodlake submit maintain)

Keeps `maintenance.retention_days` days of time travel; MOODLAKE_ENV selects the configuration.
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
