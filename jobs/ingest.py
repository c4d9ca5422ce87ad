"""spark-submit entry point: bring posts into moodlake.posts.

    spark-submit [options] jobs/ingest.py dataset vso-twitter --path ../shared/data/vso_twitter
    spark-submit [options] jobs/ingest.py flickr --ids ids.txt
    spark-submit [options] jobs/ingest.py synthetic --n 1000
    spark-submit [options] jobs/ingest.py csd --labels labels.csd audio.csd visual.csd --source-name mydata

`moodlake submit ingest ...` fills in the options (master, Delta jars, settings) from config.
The arguments are those of `moodlake ingest`; MOODLAKE_ENV selects the configuration.
"""
import sys

from moodlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
