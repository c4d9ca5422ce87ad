"""spark-submit entry point: run a SQL query on the lakehouse and print the rows.

    spark-submit [options] jobs/sql.py "select source, count(*) from moodlake.posts group by source"
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["sql", *sys.argv[1:]]))
