"""MoodLake's development companion: what is built around the product, not the product itself.

The installed package :mod:`moodlake` holds the product (the library, the ``moodlake`` command, the
jobs' code); this package sits beside it in lib/ and is installed by the same setup.py, but nothing
in :mod:`moodlake` imports it when it is imported (tests/test_layout.py checks). Only the ``moodlake
demo`` command imports :mod:`moodlake_dev.demo`, when it runs.

- :mod:`moodlake_dev.bench`: the benchmarks of BENCHMARKS.md and the README (``python -m moodlake_dev.bench.<name>``, ``make bench``)
- :mod:`moodlake_dev.experiments`: the real-data experiment runner (``make experiments``)
- :mod:`moodlake_dev.doubles`: test doubles of external services (the Flickr-compatible HTTP server)
- :mod:`moodlake_dev.cluster`: a Spark standalone cluster on 127.0.0.1 and a lakehouse of submitted jobs on it (tests/cluster, ``make test-cluster``)
- :mod:`moodlake_dev.demo`: ``moodlake demo`` / ``make demo``, the pipeline end to end, offline
"""
