"""Configuration layers, validation errors that name the file and key, secrets."""
from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import textwrap

import pytest

from moodlake.config import MODEL_KEYWORDS, SET_BY_TRAINER, ConfigError, Secret, load_config, repo_root
from moodlake.config.loader import EXPERIMENTS_DIR


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


def test_extra_layers_come_after_the_files_and_before_variables_and_overrides(conf):
    """``layers`` (an experiment file's config): over conf/local, under the environment and --set;
    its errors and committed secrets name the layer's origin."""
    (conf / "local" / "me.yaml").write_text("spark: {shuffle_partitions: 3, app_name: mine}\n")
    layer = {"spark": {"shuffle_partitions": 5, "app_name": "exp", "driver_memory": "3g"}}
    cfg = load_config(environ={"MOODLAKE__SPARK__APP_NAME": "var"}, overrides={"spark.driver_memory": "4g"},
                      layers=[("exp.yaml", layer)])
    assert (cfg.spark.shuffle_partitions, cfg.spark.app_name, cfg.spark.driver_memory) == (5, "var", "4g")
    assert layer["spark"]["shuffle_partitions"] == 5  # the caller's mapping is not merged into
    with pytest.raises(ConfigError, match=r"^exp\.yaml: spark\.mastr: unknown key \(did you mean 'master'\?\)"):
        load_config(environ={}, layers=[("exp.yaml", {"spark": {"mastr": "local[1]"}})])
    with pytest.raises(ConfigError, match=r"^exp\.yaml: flickr\.api_key: secrets may not be committed"):
        load_config(environ={}, layers=[("exp.yaml", {"flickr": {"api_key": "k"}})])


def test_the_experiments_folder_is_not_an_environment(conf):
    (conf / EXPERIMENTS_DIR).mkdir()
    (conf / EXPERIMENTS_DIR / "x.yaml").write_text("run: {}\nconfig: {}\n")
    with pytest.raises(ConfigError, match="holds experiment files"):
        load_config(EXPERIMENTS_DIR, environ={})
    with pytest.raises(ConfigError) as e:
        load_config("nope", environ={})
    assert "available: base, demo, local, prod" in str(e.value)


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


def _committed_envs() -> list[str]:
    root = repo_root() / "conf"
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and d.name not in ("local", EXPERIMENTS_DIR) and any(d.glob("*.y*ml")))


@pytest.mark.parametrize("env", _committed_envs())
def test_every_committed_environment_loads(env, monkeypatch):
    monkeypatch.delenv("MOODLAKE_CONF_DIR", raising=False)
    cfg = load_config(env, environ={})
    assert cfg.env == env and "multitask" in cfg.training.recipes


def test_a_misspelt_model_keyword_fails_at_load_naming_the_file_and_key(conf):
    (conf / "base" / "training.yaml").write_text(
        "training:\n  recipes:\n    multitask: {model: {image_backbone: efficientnet_lite0, dropuot: 0.3}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(environ={})
    msg = str(e.value)
    assert msg.startswith(f"{conf / 'base' / 'training.yaml'}: training.recipes.multitask.model.dropuot: "), msg
    assert "did you mean 'dropout'?" in msg and "accepted: dropout, freeze_word_vectors, head_dropout," in msg


@pytest.mark.parametrize("where", ["override", "environment"])
def test_a_model_keyword_from_an_override_or_the_environment_names_its_source(conf, where):
    key = "training.recipes.zhu_multibranch.model.gru_unit"
    if where == "override":
        call, source = {"environ": {}, "overrides": {key: "256"}}, f"override {key}"
    else:
        var = "MOODLAKE__" + key.upper().replace(".", "__")
        call, source = {"environ": {var: "256"}}, f"environment variable {var}"
    with pytest.raises(ConfigError, match=rf"^{source}: {key}: not a keyword of the zhu_multibranch model "
                                          r"\(did you mean 'gru_units'\?\); accepted: backbone, "):
        load_config(**call)


def test_model_keywords_the_trainer_sets_and_unknown_models_are_refused(conf):
    with pytest.raises(ConfigError, match=r"training\.recipes\.stpierre_char\.model\.num_classes: set by the trainer"):
        load_config(environ={}, overrides={"training.recipes.stpierre_char.model.num_classes": "3"})
    with pytest.raises(ConfigError, match=r"^override training\.recipes\.multitsak\.lr: training\.recipes\.multitsak: "
                                          r"no model of that name \(did you mean 'multitask'\?\)"):
        load_config(environ={}, overrides={"training.recipes.multitsak.lr": "0.01"})


def test_model_keywords_given_as_text_are_read_as_yaml(conf):
    cfg = load_config(environ={"MOODLAKE__TRAINING__RECIPES__MULTITASK__MODEL__DROPOUT": "0.3"},
                      overrides={"training.recipes.multitask.model.pretrained": "false"})
    assert dict(cfg.recipe("multitask").model) == {"dropout": 0.3, "pretrained": False}


def test_the_model_keyword_table_matches_the_builders():
    """MODEL_KEYWORDS spares the configuration an import of torch; it must say what the builders take."""
    from moodlake.models import list_models
    from moodlake.models.registry import _REGISTRY
    from moodlake.train.adapters import ADAPTERS

    assert sorted(MODEL_KEYWORDS) == list_models()
    for name in list_models():
        params = inspect.signature(_REGISTRY[name]).parameters.values()
        # a builder passing **kwargs on would need its table entry to follow them to where they go
        assert all(p.kind is p.KEYWORD_ONLY for p in params), name
        assert MODEL_KEYWORDS[name] == tuple(p.name for p in params), name
    assert SET_BY_TRAINER <= {k for keys in MODEL_KEYWORDS.values() for k in keys}
    assert set(ADAPTERS) <= set(MODEL_KEYWORDS)


def test_loading_the_configuration_does_not_import_torch():
    code = "import sys; from moodlake.config import load_config; load_config(environ={}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_float_written_without_a_point_in_a_file_is_a_number(conf):
    """``lr: 1e-4`` in a YAML file (YAML 1.1 reads it as the string '1e-4') is the number 0.0001, as
    ``--set ...lr=1e-4`` is; text that is no number still fails naming file and key."""
    (conf / "local" / "me.yaml").write_text("training: {recipes: {multitask: {lr: 1e-4, weight_decay: 5E-3}}}\n")
    recipe = load_config(environ={}).training.recipes["multitask"]
    assert (recipe.lr, recipe.weight_decay) == (0.0001, 0.005)
    (conf / "local" / "me.yaml").write_text("training: {recipes: {multitask: {lr: fast}}}\n")
    with pytest.raises(ConfigError, match=r"me\.yaml: training\.recipes\.multitask\.lr: expected a number"):
        load_config(environ={})
