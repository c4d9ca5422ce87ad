"""Configuration layers, validation errors that name the file and key, secrets."""
from __future__ import annotations

import pickle
import textwrap

import pytest

from moodlake.config import ConfigError, Secret, load_config


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """A conf/ tree of our own: base + demo + prod + local."""
    root = tmp_path / "conf"
    for d in ("base", "demo", "prod", "local"):
        (root / d).mkdir(parents=True)
    (root / "base" / "moodlake.yaml").write_text(textwrap.dedent("""
        spark: {master: "local[*]", shuffle_partitions: 8}
        flickr: {calls_per_hour: 3600}
        lakehouse: {home: ./lakehouse}
    """))
    (root / "base" / "labels.yaml").write_text("label_sets: {sentiment2: [negative, positive]}\n")
    (root / "prod" / "moodlake.yaml").write_text("spark: {master: 'spark://m:7077'}\nlakehouse: {metastore_uri: 'thrift://hms:9083'}\n")
    monkeypatch.setenv("MOODLAKE_CONF_DIR", str(root))
    return root


def test_layers_override_in_order(conf, tmp_path):
    (conf / "local" / "me.yaml").write_text("spark: {shuffle_partitions: 3}\n")
    env = {"MOODLAKE__FLICKR__CALLS_PER_HOUR": "1800", "MOODLAKE_HOME": str(tmp_path / "lh")}
    cfg = load_config("prod", environ=env)
    assert cfg.env == "prod"
    assert cfg.spark.master == "spark://m:7077"            # conf/prod over conf/base
    assert cfg.lakehouse.metastore_uri == "thrift://hms:9083"
    assert cfg.spark.shuffle_partitions == 3                 # conf/local over conf/prod
    assert cfg.flickr.calls_per_hour == 1800                 # environment over files, typed
    assert cfg.lakehouse.home == str(tmp_path / "lh")        # MOODLAKE_HOME
    assert cfg.label_set("sentiment2") == ("negative", "positive")
    assert cfg.table("posts") == "moodlake.posts"


def test_env_default_is_demo_and_overrides_win(conf):
    cfg = load_config(environ={}, overrides={"spark.shuffle_partitions": "5"})
    assert cfg.env == "demo"
    assert cfg.spark.master == "local[*]"
    assert cfg.spark.shuffle_partitions == 5


def test_unknown_key_names_file_and_key(conf):
    (conf / "demo" / "bad.yaml").write_text("spark: {mastr: 'local[2]'}\n")
    with pytest.raises(ConfigError) as e:
        load_config(environ={})
    msg = str(e.value)
    assert str(conf / "demo" / "bad.yaml") in msg and "spark.mastr" in msg and "did you mean 'master'" in msg


def test_wrong_type_names_file_and_key(conf):
    (conf / "demo" / "bad.yaml").write_text("flickr: {calls_per_hour: lots}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: flickr\.calls_per_hour: expected an integer, got str 'lots'"):
        load_config(environ={})


def test_wrong_type_from_environment_names_the_variable(conf):
    with pytest.raises(ConfigError, match="MOODLAKE__INGEST__CHUNK_SIZE: ingest.chunk_size: expected an integer"):
        load_config(environ={"MOODLAKE__INGEST__CHUNK_SIZE": "[1, 2]"})


def test_invalid_value_is_refused(conf):
    (conf / "demo" / "bad.yaml").write_text("flickr: {burst: 0}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: flickr\.burst: must be >= 1"):
        load_config(environ={})


def test_unknown_environment(conf):
    with pytest.raises(ConfigError, match="environment 'staging' has no folder"):
        load_config("staging", environ={})


def test_secrets_from_environment_and_local_only(conf):
    cfg = load_config(environ={"FLICKR_API_KEY": "k" * 32, "FLICKR_API_SECRET": "s" * 16})
    assert isinstance(cfg.flickr.api_key, Secret) and cfg.flickr.api_key.reveal() == "k" * 32
    assert "k" * 32 not in repr(cfg) and "s" * 16 not in str(cfg.flickr)
    (conf / "local" / "flickr.yaml").write_text("flickr: {api_key: abcdefgh1234, api_secret: zyxw9876}\n")
    cfg = load_config(environ={})
    assert cfg.flickr.api_secret.reveal() == "zyxw9876"
    assert pickle.loads(pickle.dumps(cfg.flickr.api_key)).reveal() == "abcdefgh1234"  # travels to executors


def test_committed_secret_is_refused(conf):
    (conf / "base" / "flickr.yaml").write_text("flickr: {api_key: abcdefgh1234}\n")
    with pytest.raises(ConfigError, match="secrets may not be committed"):
        load_config(environ={})


def test_committed_conf_is_valid_for_every_environment():
    """The repository's own conf/ loads for demo and prod."""
    for env in ("demo", "prod"):
        cfg = load_config(env, environ={})
        assert cfg.label_set("mikels8")[0] == "amusement" and len(cfg.label_set("mikels8")) == 8
    assert load_config("prod", environ={}).lakehouse.metastore_uri.startswith("thrift://")
