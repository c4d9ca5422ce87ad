"""Configuration: YAML layers validated into frozen dataclasses.

Layers, later ones win:

1. ``conf/base/*.yaml``   committed defaults
2. ``conf/<env>/*.yaml``  the environment chosen by ``--env`` or ``MOODLAKE_ENV`` (default ``demo``)
3. ``conf/local/*.yaml``  git-ignored: a user's own settings and secrets
   (then ``load_config(layers=...)``: further mappings as committed files, e.g. the ``config`` of an
   experiment file in ``conf/experiments/``, which is not an environment: ``moodlake_dev.experiments``)
4. environment variables: ``MOODLAKE_HOME``, ``FLICKR_API_KEY``, ``FLICKR_API_SECRET`` and, for
   any key, ``MOODLAKE__<SECTION>__<KEY>=value`` (the value is read as YAML: ``3600`` is an int)
5. explicit overrides (``moodlake --set section.key=value``)

Every file's top-level keys are section names. A key that no dataclass declares, or a value of
the wrong type, fails at load time with the file (or variable) and the dotted key named; so does
a training recipe's ``model`` keyword that its model's builder does not take.
Secrets are :class:`Secret` objects whose ``repr`` never shows the value, and they may only come
from ``conf/local`` or the environment, never from a committed file.

The dataclasses and their validation live in :mod:`moodlake.config.schema`, the layers, the
provenance of every key and :func:`load_config` in :mod:`moodlake.config.loader`; both are
re-exported here. New sections (features, training, scoring, ...) are added by declaring a
dataclass and a field of :class:`Config`; the loader needs no change.
"""
from moodlake.config.loader import LOCAL_ENV, conf_dir, load_config, repo_root
from moodlake.config.schema import (
    DEFAULT_ENV,
    MODEL_KEYWORDS,
    SET_BY_TRAINER,
    Config,
    ConfigError,
    DataSettings,
    DatasetDefinition,
    SegmentSpec,
    DatasetSettings,
    FeatureSettings,
    FlickrSettings,
    IngestSettings,
    LakehouseSettings,
    MaintenanceSettings,
    MlflowSettings,
    NightlySettings,
    Recipe,
    ScoringSettings,
    Secret,
    SparkSettings,
    SplitSpec,
    SqlServerSettings,
    TableNames,
    TrainingSettings,
    _frozen_map,  # private, but imported by name elsewhere: kept importable from here
    to_plain,
)

__all__ = [
    "DEFAULT_ENV", "LOCAL_ENV", "MODEL_KEYWORDS", "SET_BY_TRAINER", "Config", "ConfigError", "DataSettings",
    "DatasetDefinition", "SegmentSpec", "DatasetSettings", "FeatureSettings", "FlickrSettings", "IngestSettings",
    "LakehouseSettings", "MaintenanceSettings", "MlflowSettings", "NightlySettings", "Recipe", "ScoringSettings", "Secret",
    "SparkSettings", "SplitSpec", "SqlServerSettings", "TableNames", "TrainingSettings", "conf_dir",
    "load_config", "repo_root", "to_plain",
]
