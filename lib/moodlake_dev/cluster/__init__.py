"""Spark on a cluster, locally: a standalone master and workers on 127.0.0.1
(:mod:`.standalone`), a lakehouse whose jobs are spark-submitted to it (:mod:`.lake`), and the
submitted script that reads its tables back (:mod:`.table_probe`). Used by tests/cluster
(``make test-cluster``) and by :mod:`moodlake_dev.bench.cluster`."""
