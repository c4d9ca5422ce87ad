"""The committed cluster configurations (conf/prod, conf/standalone, conf/yarn, conf/k8s) load with the
project's loader, and put what executors read under filesystem URIs, driver-local state under home."""
from __future__ import annotations

import pytest

from moodlake import storage
from moodlake.config import load_config
from moodlake.spark import spark_conf


@pytest.mark.parametrize("env,master", [("prod", "spark://"), ("standalone", "spark://"), ("yarn", "yarn"),
                                        ("k8s", "k8s://https://")])
def test_cluster_examples_load(env, master, monkeypatch):
    monkeypatch.setattr("moodlake.spark.delta_jars", lambda: ["delta-spark.jar"])  # no jars needed to read config
    cfg = load_config(env, environ={})
    assert cfg.env == env and cfg.spark.master.startswith(master)
    assert storage.scheme(cfg.lakehouse.home) == ""  # driver-local state: a plain path
    # everything executors read or write is a Hadoop filesystem URI, not a driver path
    for uri in (cfg.lakehouse.warehouse, cfg.datasets_root, cfg.training_root, cfg.models_root):
        assert storage.scheme(uri) in ("hdfs", "s3a"), (env, uri)
    assert cfg.training.local_mode is False and cfg.training.processes >= 2
    assert cfg.lakehouse.metastore_uri or env == "standalone"
    if cfg.lakehouse.metastore_uri:  # no Derby server to start: spark_conf needs nothing running
        conf = spark_conf(cfg)
        assert conf["spark.sql.warehouse.dir"] == cfg.lakehouse.warehouse
        assert conf["spark.task.maxFailures"] == "8"
