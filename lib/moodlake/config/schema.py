"""The configuration's schema: one frozen dataclass per section, each validating its own values.

A ``__post_init__`` raises :class:`ConfigError` with the key relative to its section
(``"burst: must be >= 1"``); the loader (:mod:`moodlake.config.loader`) prefixes the file (or
variable) and the section. A key that names a nested mapping's entry is dotted
(``"recipes.multitask.model.dropout: ..."``).

New sections (features, training, scoring, ...) are added by declaring a dataclass and a field
of :class:`Config`; the loader needs no change.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

DEFAULT_ENV = "demo"


class ConfigError(ValueError):
    """A configuration file or variable is wrong; the message names where and which key."""


class Secret:
    """A string that does not show itself in ``repr``, ``str``, logs or exceptions."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value:
            raise TypeError("a Secret holds a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __getstate__(self):
        return self._value

    def __setstate__(self, state):
        self._value = state


def _frozen_map(d: Mapping | None = None) -> Mapping:
    return types.MappingProxyType(dict(d or {}))


def to_plain(obj: Any) -> Any:
    """A config object as plain JSON-able data (dicts, lists, scalars); secrets masked."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Secret):
        return repr(obj)
    return obj


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "moodlake"
    shuffle_partitions: int = 8
    driver_memory: str = "2g"
    ui_enabled: bool = False
    log_level: str = "WARN"
    # any further spark.* settings, passed through unchanged
    conf: Mapping[str, str] = field(default_factory=_frozen_map)


@dataclass(frozen=True)
class LakehouseSettings:
    # Root of the embedded lakehouse: warehouse, Derby metastore, staging and state.
    home: str = "./lakehouse"
    database: str = "moodlake"
    # Empty: the embedded Derby metastore under `home`. Otherwise a Hive metastore URI
    # (thrift://host:9083) shared by a cluster.
    metastore_uri: str = ""
    # The embedded default serves its Derby metastore on 127.0.0.1 (moodlake.metastore) on this
    # port; 0: a free one (the last one again where it is free).
    metastore_port: int = 0
    # Empty: <home>/warehouse. Otherwise any Hadoop path (hdfs://, s3a://, abfss://).
    warehouse_dir: str = ""

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def warehouse(self) -> str:
        return self.warehouse_dir or str(self.home_path / "warehouse")

    @property
    def staging(self) -> Path:
        return self.home_path / "staging"

    @property
    def state(self) -> Path:
        return self.home_path / "state"


@dataclass(frozen=True)
class TableNames:
    """Unqualified table names inside ``lakehouse.database``."""

    posts: str = "posts"
    ingest_failures: str = "ingest_failures"
    ingest_runs: str = "ingest_runs"
    post_features: str = "post_features"
    feature_failures: str = "feature_failures"
    datasets: str = "datasets"
    training_runs: str = "training_runs"
    models: str = "models"
    evaluations: str = "evaluations"
    emotion_scores: str = "emotion_scores"
    scoring_failures: str = "scoring_failures"
    scoring_runs: str = "scoring_runs"
    video_features: str = "video_features"
    segment_labels: str = "segment_labels"
    segment_emotion_scores: str = "segment_emotion_scores"
    segment_scoring_failures: str = "segment_scoring_failures"


@dataclass(frozen=True)
class FlickrSettings:
    api_key: Secret | None = None
    api_secret: Secret | None = None
    rest_url: str = "https://api.flickr.com/services/rest/"
    # The global call budget shared by every executor; 0 lifts it (test servers only).
    calls_per_hour: int = 3600
    # Calls that may go out at once before the steady rate applies.
    burst: int = 10
    timeout_s: float = 20.0
    max_retries: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    image_size: str = "Medium 640"
    search_per_page: int = 500
    # Concurrent fetches inside one Spark task (the work is I/O bound).
    threads_per_task: int = 4

    def __post_init__(self):
        if self.calls_per_hour < 0:
            raise ConfigError("calls_per_hour: must be >= 0 (0 lifts the budget)")
        if self.burst < 1:
            raise ConfigError("burst: must be >= 1")
        if self.threads_per_task < 1:
            raise ConfigError("threads_per_task: must be >= 1")
        if not 1 <= self.search_per_page <= 500:
            raise ConfigError("search_per_page: Flickr allows 1 to 500")
        if not self.timeout_s > 0:
            raise ConfigError("timeout_s: must be > 0 (every Flickr request needs a timeout)")
        if self.max_retries < 0 or self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("max_retries, backoff_initial_s: must be >= 0; backoff_max_s: >= backoff_initial_s")


@dataclass(frozen=True)
class IngestSettings:
    # Posts committed per MERGE: what a killed job can lose and must redo.
    chunk_size: int = 2000
    # Spark partitions per chunk; 0 means the session's default parallelism.
    partitions: int = 0
    # Images larger than this are not stored (the post lands with the image marked).
    max_image_bytes: int = 20_000_000
    # Images declaring more pixels are not decoded (decompression bombs): the post lands with the
    # image marked too_large. The default is moodlake.content.MAX_IMAGE_PIXELS (Pillow's figure).
    max_image_pixels: int = 89_478_485
    progress_interval_s: float = 5.0

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ConfigError("chunk_size: must be >= 1")
        if self.max_image_pixels < 1:
            raise ConfigError("max_image_pixels: must be >= 1")
        if self.partitions < 0:
            raise ConfigError("partitions: must be >= 0")


@dataclass(frozen=True)
class FeatureSettings:
    """The silver feature job (moodlake.post_features)."""

    # Bump to recompute every row (a change of the cleaning rules below).
    version: int = 2  # 2: clean_text idempotent, "# #tag" loses its "#" (issue #18)
    text_max_chars: int = 4096
    # Pagé Fortin: keep only English texts of 5-150 words (others count as 'no text').
    english_filter: bool = False
    english_min_words: int = 5
    english_max_words: int = 150
    max_tags: int = 10
    image_resize: int = 256
    image_crop: int = 224
    jpeg_quality: int = 90
    # images declaring more pixels are refused from their header, before decoding (decompression
    # bombs); the figure of moodlake.content.MAX_IMAGE_PIXELS, like ingest.max_image_pixels
    max_image_pixels: int = 89_478_485
    # emotion -> positive / negative, for binary sentiment derived from emotion labels
    sentiment_map: Mapping[str, str] = field(default_factory=_frozen_map)

    def __post_init__(self):
        if self.image_crop > self.image_resize:
            raise ConfigError("image_crop: must not exceed image_resize")
        if self.max_image_pixels < 1:
            raise ConfigError("max_image_pixels: must be >= 1")
        bad = {v for v in self.sentiment_map.values() if v not in ("positive", "negative")}
        if bad:
            raise ConfigError(f"sentiment_map: values must be positive or negative, got {sorted(bad)}")


@dataclass(frozen=True)
class SplitSpec:
    """How posts are assigned to train / val / test (stable: by a hash of the post id).

    - ``hash``: fractions ``train``/``val``/``test``, stratified by label, and ``drop``: a fraction
      left out (split ``sampled_out``, counted as excluded; e.g. a sample of a large source that
      only adds training posts to another's dataset);
    - ``folds``: the source's own folds (``source_split``, e.g. VSO's partition1..5): the fold
      ``test_fold`` is the test set, ``val_fraction`` of the others the validation set;
    - ``source``: the source's own splits mapped by ``source_map`` (e.g. GoEmotions train -> train,
      dev -> test); ``val_fraction`` of what maps to train becomes validation.
    """

    scheme: str = "hash"
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    drop: float = 0.0
    seed: int = 0
    test_fold: str = ""
    val_fraction: float = 0.1
    source_map: Mapping[str, str] = field(default_factory=_frozen_map)

    def __post_init__(self):
        if self.scheme not in ("hash", "folds", "source"):
            raise ConfigError("scheme: must be hash, folds or source")
        if min(self.train, self.val, self.test, self.drop) < 0:
            raise ConfigError("train, val, test and drop must not be negative")
        if self.scheme == "hash" and abs(self.train + self.val + self.test + self.drop - 1.0) > 1e-6:
            raise ConfigError("train: train + val + test + drop must be 1")
        if self.scheme != "hash" and self.drop:
            raise ConfigError("drop: only the hash scheme samples posts out")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction: must be in [0, 1)")
        if any(v not in ("train", "val", "test", "drop") for v in self.source_map.values()):
            raise ConfigError("source_map: values must be train, val, test or drop")


@dataclass(frozen=True)
class SegmentSpec:
    """A segment dataset (issue #20): labelled video segments of one ``csd`` source, each modality
    aligned to the reference's steps (:mod:`moodlake.data.segments`)."""

    labels: str = "Emotion Labels"          # the labels sequence (segment_labels.sequence)
    # model modality -> root name of its feature sequence (video_features.modality)
    modalities: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType(
        {"audio": "COVAREP", "visual": "FACET 4.2", "text": "glove_vectors"}))
    reference: str = "text"                 # the modality whose steps (the words) the others align to
    maxlen: int = 20
    keep: str = "last"                      # which steps a longer segment keeps: last or first

    def __post_init__(self):
        if set(self.modalities) != {"audio", "visual", "text"}:
            raise ConfigError("modalities: must name the roots of exactly audio, visual and text")
        if self.reference not in self.modalities:
            raise ConfigError(f"reference: must be one of {sorted(self.modalities)}")
        if self.maxlen < 1:
            raise ConfigError("maxlen: must be >= 1")
        if self.keep not in ("last", "first"):
            raise ConfigError("keep: must be last or first")


@dataclass(frozen=True)
class DatasetDefinition:
    """A training dataset: which posts, which label set, which split."""

    sources: tuple[str, ...] = ()
    label_set: str = "mikels8"
    # 'label': the source's label; 'dist_argmax': the argmax of its vote distribution (Emotion6)
    label_from: str = "label"
    # multi-label targets (GoEmotions): rows need at least one label, `label` may be -1
    multi_label: bool = False
    # FI votes: agreeing workers needed for a training row / a validation or test row
    min_agree_train: int = 0
    min_agree_eval: int = 0
    split: SplitSpec = field(default_factory=SplitSpec)
    # per-source splits for datasets that join several sources (each as its own dataset splits it,
    # so a joint model is tested on exactly the posts the single-source models are); others: `split`
    source_splits: Mapping[str, SplitSpec] = field(default_factory=_frozen_map)
    # source -> how many times each of its training rows is written (oversampling a small source of
    # a joint dataset, so that its modality is in most batches); validation and test rows once
    train_repeat: Mapping[str, int] = field(default_factory=_frozen_map)
    # set: a dataset of video segments (moodlake.data.segments) of the one source in `sources`, split
    # by video with `split` (scheme hash); the post-only keys above do not apply
    segments: Optional[SegmentSpec] = None

    def __post_init__(self):
        if self.segments is not None:
            if len(self.sources) != 1:
                raise ConfigError("sources: a segment dataset reads exactly one source")
            if self.split.scheme != "hash":
                raise ConfigError("split.scheme: segment datasets are split by a hash of the video id")
            if self.source_splits or self.train_repeat or self.multi_label:
                raise ConfigError("segments: source_splits, train_repeat and multi_label do not apply")
        if self.label_from not in ("label", "dist_argmax"):
            raise ConfigError("label_from: must be label or dist_argmax")
        for key, given in (("source_splits", self.source_splits), ("train_repeat", self.train_repeat)):
            unknown = sorted(set(given) - set(self.sources))
            if unknown:
                raise ConfigError(f"{key}: {', '.join(unknown)} not among the sources {list(self.sources)}")
        if any(not isinstance(n, int) or n < 1 for n in self.train_repeat.values()):
            raise ConfigError("train_repeat: repeats must be whole numbers >= 1")


@dataclass(frozen=True)
class DatasetSettings:
    # Empty: <lakehouse.home>/datasets. Petastorm datasets and their vocabularies live here.
    root: str = ""
    min_word_count: int = 5
    min_tag_count: int = 5
    min_char_count: int = 1
    definitions: Mapping[str, DatasetDefinition] = field(default_factory=_frozen_map)


# The keyword arguments of every model builder registered in moodlake.models (``get_model(family,
# **kwargs)``), in signature order: a recipe's ``model`` may set any of them but SET_BY_TRAINER. A
# table rather than the builders themselves, so that loading the configuration does not import
# torch (seconds); tests/test_config.py fails when it drifts from the builders' signatures.
MODEL_KEYWORDS: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "campos_alexnet": ("variant", "num_classes", "pretrained", "dropout"),
    "multitask": ("labels", "num_classes", "vocab_size", "tag_vocab_size", "word_dim", "word_vectors",
                  "freeze_word_vectors", "image_backbone", "pretrained", "image_trainable_stages", "max_words",
                  "max_tags", "dropout", "multi_label", "text_encoder", "char_alphabet", "text_trainable_layers",
                  "text_encoder_lr_scale", "image_backbone_lr_scale", "image_dropout", "head_dropout"),
    "stpierre_char": ("num_classes", "alphabet_size", "embedding_dim", "channels"),
    "stpierre_fused": ("num_classes", "units", "image_model", "char_model", "pretrained", "alphabet_size"),
    "stpierre_image": ("num_classes", "pretrained", "dropout"),
    "williams_blstm": ("audio_dim", "visual_dim", "text_dim", "hidden", "dense", "dropout", "num_outputs",
                       "maxlen", "modalities"),
    "zhu_multibranch": ("num_classes", "backbone", "pretrained", "branch_dim", "branch_pool", "gru_units",
                        "margin", "contrastive_weight"),
})

# Builder arguments the trainer derives from the dataset and its vocabulary (moodlake.train.adapters);
# a recipe's value would override them and mismatch the data.
SET_BY_TRAINER = frozenset({"labels", "num_classes", "multi_label", "vocab_size", "tag_vocab_size", "word_vectors",
                            "char_alphabet", "alphabet_size", "audio_dim", "visual_dim", "text_dim", "num_outputs",
                            "maxlen"})


def _check_model_keywords(family: str, given: Mapping[str, Any]) -> None:
    """Refuse a recipe ``model`` argument that ``family``'s builder does not take, or that the trainer sets."""
    accepted = sorted(set(MODEL_KEYWORDS[family]) - SET_BY_TRAINER)
    for key in given:
        if key in accepted:
            continue
        if key in SET_BY_TRAINER:
            why = "set by the trainer from the dataset, not by a recipe"
        else:
            near = difflib.get_close_matches(key, accepted, n=1)
            why = f"not a keyword of the {family} model" + (f" (did you mean {near[0]!r}?)" if near else "")
        raise ConfigError(f"recipes.{family}.model.{key}: {why}; accepted: {', '.join(accepted) or 'none'}")


@dataclass(frozen=True)
class Recipe:
    """How one model family trains (the published recipes live in conf/base/training.yaml)."""

    optimizer: str = "adam"             # adam / sgd / rmsprop
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 30
    plateau_patience: int = 3           # halve the learning rate after 3 epochs without val-loss gain
    plateau_factor: float = 0.5
    early_stopping_patience: int = 6
    class_weighting: str = "none"       # none / inverse_frequency
    augment: bool = True                # random crop + flip (St. Pierre)
    glove: bool = True                  # word embeddings start from GloVe (text models)
    frozen_cache_mb: int = 0            # memoise frozen backbone stages per image (CPU, no augmentation)
    select_parts: bool = True           # parts no training post connects keep their own best epoch (multitask)
    model: Mapping[str, Any] = field(default_factory=_frozen_map)  # get_model keyword arguments (MODEL_KEYWORDS)

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd", "rmsprop"):
            raise ConfigError("optimizer: must be adam, sgd or rmsprop")
        if self.class_weighting not in ("none", "inverse_frequency"):
            raise ConfigError("class_weighting: must be none or inverse_frequency")
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1:
            raise ConfigError("lr: lr, batch_size and max_epochs must be positive")


@dataclass(frozen=True)
class TrainingSettings:
    root: str = ""                      # empty: <lakehouse.home>/training (runs, checkpoints)
    models_root: str = ""               # empty: <lakehouse.home>/models (the registry's files)
    launcher: str = "distributor"       # distributor (TorchDistributor) / torchrun / inline
    processes: int = 1                  # DDP processes
    use_gpu: bool = False
    local_mode: bool = True             # TorchDistributor: on the driver (true) or barrier tasks on executors
    torch_threads: int = 0              # per process; 0: the cores divided among the processes
    reader_workers: int = 2
    seed: int = 0
    recipes: Mapping[str, Recipe] = field(default_factory=_frozen_map)

    def __post_init__(self):
        if self.launcher not in ("distributor", "torchrun", "inline"):
            raise ConfigError("launcher: must be distributor, torchrun or inline")
        if self.processes < 1:
            raise ConfigError("processes: must be >= 1")
        for family, recipe in self.recipes.items():
            if family not in MODEL_KEYWORDS:
                near = difflib.get_close_matches(family, list(MODEL_KEYWORDS), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"recipes.{family}: no model of that name{hint}; models: "
                                  f"{', '.join(sorted(MODEL_KEYWORDS))}")
            _check_model_keywords(family, recipe.model)


@dataclass(frozen=True)
class ScoringSettings:
    """The nightly scoring job (``moodlake score``, :mod:`moodlake.scoring`)."""

    # posts (score segments: about as many segments, a video whole) per committed MERGE: the most a killed
    # run scores again
    chunk_size: int = 50000
    # Spark partitions per chunk; 0 = the default parallelism
    partitions: int = 0
    # rows per Arrow batch into the Python workers (224-px JPEGs of ~20 KB: 256 rows ~5 MB)
    arrow_batch_rows: int = 256
    # posts per forward pass on a CPU (small batches are fastest there: BENCHMARKS.md) and on a GPU
    batch_size: int = 4
    gpu_batch_size: int = 256
    text_batch_size: int = 256
    # torch threads per Spark task (per Python worker); 0 = torch's default
    torch_threads: int = 1
    # bf16 autocast when a task has a GPU (spark.task.resource.gpu.amount)
    gpu_bf16: bool = True
    # the label set scored tables and views expect; empty: the production model's
    label_set: str = ""
    progress_interval_s: float = 5.0

    def __post_init__(self):
        for name in ("chunk_size", "arrow_batch_rows", "batch_size", "gpu_batch_size", "text_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1")
        if self.partitions < 0 or self.torch_threads < 0:
            raise ConfigError(f"{'partitions' if self.partitions < 0 else 'torch_threads'}: must be >= 0")


@dataclass(frozen=True)
class SqlServerSettings:
    """The Spark Thrift (JDBC/ODBC) server of ``moodlake sql-server`` (:mod:`moodlake.sql_server`)."""

    host: str = "127.0.0.1"
    # 0: a free port, chosen at start (``moodlake sql-server status`` prints it)
    port: int = 10000
    # how long ``start`` waits for the port to answer
    start_timeout_s: float = 180.0
    # HiveServer2's hive.server2.authentication: NONE (any local user), or LDAP, KERBEROS, PAM,
    # CUSTOM with their hive.server2.* settings in ``hiveconf``. A host other than a loopback
    # address is refused unless this is set.
    authentication: str = "NONE"
    hiveconf: Mapping[str, str] = field(default_factory=_frozen_map)
    # connections may only query (SELECT, SHOW, DESCRIBE, ...): every write or DDL is refused
    read_only: bool = True

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ConfigError("port: must be 0 to 65535")
        if self.start_timeout_s <= 0:
            raise ConfigError("start_timeout_s: must be > 0")
        if self.authentication.upper() not in ("NONE", "LDAP", "KERBEROS", "PAM", "CUSTOM"):
            raise ConfigError("authentication: one of NONE, LDAP, KERBEROS, PAM, CUSTOM")


@dataclass(frozen=True)
class MlflowSettings:
    """Experiment tracking and the model registry on MLflow (:mod:`moodlake.train.tracking`).

    MLflow is the record of training runs (parameters, per-epoch metrics, artifacts), of model
    versions and of the ``production`` alias; ``moodlake.training_runs`` and ``moodlake.models`` are
    their SQL mirror, written by the same commands right after MLflow."""

    enabled: bool = True
    # Empty: the embedded store, sqlite:///<lakehouse.home>/mlflow/mlflow.db (no server needed).
    # Otherwise a tracking server (http://host:5000) or any MLflow backend store URI.
    tracking_uri: str = ""
    # Empty: the tracking URI.
    registry_uri: str = ""
    # Where new experiments keep their runs' artifacts. Empty: <lakehouse.home>/mlflow/artifacts with
    # the embedded store; the tracking server's own default (its --default-artifact-root) with a server.
    artifact_root: str = ""
    experiment: str = "moodlake"
    # registered models are named <prefix><model family>, e.g. moodlake-multitask
    registered_model_prefix: str = "moodlake-"
    # `moodlake ui`: the MLflow UI on 127.0.0.1 at this port (0: a free one, printed at start)
    ui_port: int = 5000

    def __post_init__(self):
        if not self.experiment.strip():
            raise ConfigError("experiment: must not be empty")
        if not 0 <= self.ui_port <= 65535:
            raise ConfigError("ui_port: must be 0 to 65535")
        if not self.registered_model_prefix or not all(c.isalnum() or c in "-_." for c in self.registered_model_prefix):
            raise ConfigError("registered_model_prefix: letters, digits, '-', '_' and '.' only, not empty")


@dataclass(frozen=True)
class DataSettings:
    # Where the public research sets are read in place (never copied into the project).
    shared_dir: str = "../shared/data"


@dataclass(frozen=True)
class NightlySettings:
    """The night's chain (``moodlake nightly``): ingest, then features, then score."""

    # search Flickr for the previous day's uploads when the API key is configured
    flickr_search: bool = True
    # comma-separated tags (any of them) and free text of that search; both empty: every upload of
    # the day, of which Flickr returns at most 4,000
    flickr_tags: str = ""
    flickr_text: str = ""
    # at most this many posts a night from the search; 0: no limit
    flickr_max: int = 0
    # further ingest steps, each the arguments of `moodlake ingest`, e.g. [dataset, export, --path, /data/incoming]
    sources: tuple[tuple[str, ...], ...] = ()
    # extra arguments of `moodlake score`, e.g. [--limit, 100000]
    score_args: tuple[str, ...] = ()

    def __post_init__(self):
        if self.flickr_max < 0:
            raise ConfigError("flickr_max: must be >= 0 (0: no limit)")
        if any(not src for src in self.sources):
            raise ConfigError("sources: every entry must be a non-empty list of `moodlake ingest` arguments")


@dataclass(frozen=True)
class MaintenanceSettings:
    """Table maintenance (``moodlake maintain``): OPTIMIZE, then VACUUM, every MoodLake Delta table."""

    # days of time travel kept: VACUUM's retention and the tables' delta.deletedFileRetentionDuration
    # and delta.logRetentionDuration
    retention_days: int = 7
    # Spark tasks with which VACUUM lists and compares a table's files
    # (spark.sql.sources.parallelPartitionDiscovery.parallelism, whose default of 10,000 tasks makes
    # VACUUM of a small table take minutes); 0: the larger of the session's default parallelism
    # and spark.sql.shuffle.partitions
    listing_parallelism: int = 0

    def __post_init__(self):
        if self.retention_days < 0:
            raise ConfigError("retention_days: must be >= 0")
        if self.listing_parallelism < 0:
            raise ConfigError("listing_parallelism: must be >= 0 (0: from the session)")


@dataclass(frozen=True)
class Config:
    env: str = DEFAULT_ENV
    spark: SparkSettings = field(default_factory=SparkSettings)
    lakehouse: LakehouseSettings = field(default_factory=LakehouseSettings)
    tables: TableNames = field(default_factory=TableNames)
    flickr: FlickrSettings = field(default_factory=FlickrSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    data: DataSettings = field(default_factory=DataSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    datasets: DatasetSettings = field(default_factory=DatasetSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    sql_server: SqlServerSettings = field(default_factory=SqlServerSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    nightly: NightlySettings = field(default_factory=NightlySettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    # label set name -> its labels, in class-index order
    label_sets: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_map)

    def table(self, name: str) -> str:
        """Qualified name of a table by its key in :class:`TableNames`, e.g. ``moodlake.posts``."""
        return f"{self.lakehouse.database}.{getattr(self.tables, name)}"

    @property
    def training_root(self) -> str:
        return self.training.root or str(Path(self.lakehouse.home) / "training")

    @property
    def models_root(self) -> str:
        return self.training.models_root or str(Path(self.lakehouse.home) / "models")

    def recipe(self, model: str) -> Recipe:
        try:
            return self.training.recipes[model]
        except KeyError:
            raise ConfigError(f"no training recipe for model {model!r}; training.recipes has: "
                              f"{', '.join(sorted(self.training.recipes))}") from None

    @property
    def datasets_root(self) -> str:
        return self.datasets.root or str(Path(self.lakehouse.home) / "datasets")

    def dataset(self, name: str) -> DatasetDefinition:
        try:
            return self.datasets.definitions[name]
        except KeyError:
            raise ConfigError(f"unknown dataset {name!r}; defined in datasets.definitions: "
                              f"{', '.join(sorted(self.datasets.definitions))}") from None

    def label_set(self, name: str) -> tuple[str, ...]:
        try:
            return self.label_sets[name]
        except KeyError:
            raise ConfigError(
                f"unknown label set {name!r}; configured: {', '.join(sorted(self.label_sets))}"
            ) from None
