"""Every MoodLake table: its schema, key and column documentation, in one place.

The comments are stored in the Delta tables themselves, so an analyst sees them with
``DESCRIBE moodlake.posts``; ``moodlake tables`` prints them too. Names come from config
(``cfg.table("posts")``), never literals.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T


def _col(name: str, dtype: T.DataType, comment: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, dtype, nullable, metadata={"comment": comment})


@dataclass(frozen=True)
class TableSpec:
    key: str                  # key of the table name in config.TableNames
    schema: T.StructType
    primary_key: tuple[str, ...]
    comment: str
    # Delta liquid clustering columns (OPTIMIZE clusters by them); empty: none
    cluster_by: tuple[str, ...] = ()
    # nullable columns added after the table was first released: ensure_tables adds those an existing
    # table lacks (at its end; rows written before hold NULL there)
    added: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


STR, LONG, INT, BOOL, DOUBLE, TS, BIN = (
    T.StringType(), T.LongType(), T.IntegerType(), T.BooleanType(), T.DoubleType(),
    T.TimestampType(), T.BinaryType(),
)
STR_ARRAY = T.ArrayType(T.StringType(), containsNull=True)
STR_DOUBLE_MAP = T.MapType(T.StringType(), T.DoubleType(), valueContainsNull=True)

# The content columns of a post, as every source produces them (run metadata excluded).
POST_CONTENT = T.StructType([
    _col("post_id", STR, "source-qualified id: '<source>:<source_id>' (e.g. flickr:5322163, vso-twitter:17)", False),
    _col("source", STR, "where the post came from: flickr, vso-twitter, emotion6, goemotions, synthetic, or an export's name", False),
    _col("source_id", STR, "the id inside its source (Flickr photo id, file stem, comment id)", False),
    _col("source_split", STR, "a split given by the source (VSO partition1..5, GoEmotions train/dev); NULL if none"),
    _col("owner", STR, "author id (Flickr NSID, user name) when known"),
    _col("title", STR, "title or caption as published (HTML kept; cleaning happens in the feature tables)"),
    _col("description", STR, "description or body text as published (HTML and comments kept)"),
    _col("tags", STR_ARRAY, "tags / hashtags as published, empty ones removed, order kept"),
    _col("image", BIN, "image bytes exactly as fetched or read; NULL when absent or unusable as bytes"),
    _col("image_source", STR, "URL or relative path the image came from"),
    _col("image_mime", STR, "MIME type sniffed from the bytes (not from the file name)"),
    _col("image_size", LONG, "image size in bytes"),
    _col("image_sha256", STR, "SHA-256 of the image bytes, hex"),
    _col("image_width", INT, "width in pixels when the image decodes"),
    _col("image_height", INT, "height in pixels when the image decodes"),
    _col("image_status", STR, "ok / missing / empty / not_an_image / truncated / corrupt / too_large", False),
    _col("image_error", STR, "why the image is unusable; NULL when ok"),
    _col("taken_at", TS, "when the photo was taken (UTC; NULL when unknown)"),
    _col("uploaded_at", TS, "when the post was published (UTC)"),
    _col("label_set", STR, "name of the label set (conf/base/labels.yaml) the labels belong to; NULL if unlabelled"),
    _col("label", STR, "the single label, when the source gives one"),
    _col("labels", STR_ARRAY, "all labels of a multi-label source (GoEmotions); else [label] or []"),
    _col("label_dist", STR_DOUBLE_MAP, "vote distribution over labels (Emotion6), when given"),
    _col("label_agree", INT, "workers agreeing with `label` (FI lists), when given"),
    _col("label_disagree", INT, "workers disagreeing with `label` (FI lists), when given"),
    _col("label_scores", STR_DOUBLE_MAP, "continuous annotations: valence, arousal, intensities"),
    _col("quality_flags", STR_ARRAY, "marks of unusable or odd parts, e.g. image:truncated, description:non_utf8, label:unknown"),
    _col("raw", STR, "the raw payload as received (JSON), from which every other column can be rebuilt"),
    _col("content_hash", STR, "SHA-256 over every content column; a re-ingest updates the row only when it changes", False),
])

POSTS = TableSpec(
    key="posts",
    schema=T.StructType(POST_CONTENT.fields + [
        _col("first_ingested_at", TS, "when the post first landed", False),
        _col("ingested_at", TS, "when this version of the post landed", False),
        _col("ingest_run_id", STR, "the ingest run that wrote this version (moodlake.ingest_runs)", False),
    ]),
    primary_key=("post_id",),
    comment="Bronze: one row per post from every source, raw payload kept. MERGE on post_id.",
)

FAILURE_CONTENT = T.StructType([
    _col("failure_id", STR, "stable id: SHA-256 of (source, input_ref)", False),
    _col("source", STR, "the source being ingested", False),
    _col("post_id", STR, "the post it concerns, when an id was known"),
    _col("input_ref", STR, "where the input was: file:line, photo id, path", False),
    _col("stage", STR, "read / parse / fetch / validate", False),
    _col("reason_code", STR, "machine-readable reason: not_found, duplicate_input, invalid_json, no_usable_content, transient_exhausted, ...", False),
    _col("reason", STR, "human-readable reason (secrets redacted)", False),
    _col("permanent", BOOL, "false: a later run retries it; true: skipped until the input changes", False),
    _col("attempts", INT, "calls or reads tried"),
    _col("raw", STR, "the offending input, truncated to 64 KiB"),
])

INGEST_FAILURES = TableSpec(
    key="ingest_failures",
    schema=T.StructType(FAILURE_CONTENT.fields + [
        _col("failed_at", TS, "when it (last) failed", False),
        _col("ingest_run_id", STR, "the run that recorded it", False),
    ]),
    primary_key=("failure_id",),
    comment="Inputs that did not become posts, each with its reason. posts + failures reconcile with the input.",
)

INGEST_RUNS = TableSpec(
    key="ingest_runs",
    schema=T.StructType([
        _col("run_id", STR, "unique id of the run", False),
        _col("source", STR, "what was ingested", False),
        _col("args", STR, "the request (JSON; no secrets); ingest csd adds its files' sequences and the segment "
                          "and step counts: segments = segments_landed + segments_failed"),
        _col("status", STR, "running / succeeded / failed / interrupted", False),
        _col("started_at", TS, "start (UTC)", False),
        _col("finished_at", TS, "end (UTC); NULL while running"),
        _col("input_records", LONG, "records read from the input (ingest csd: videos, a video of one sequence each)"),
        _col("skipped", LONG, "already ingested or permanently failed, not fetched again"),
        _col("posts_new", LONG, "posts (ingest csd: videos) that landed for the first time"),
        _col("posts_updated", LONG, "posts (videos) whose content changed"),
        _col("posts_unchanged", LONG, "posts (videos) re-read with identical content"),
        _col("failures", LONG, "inputs that went to ingest_failures in this run"),
        _col("api_calls", LONG, "remote API calls made (Flickr)"),
        _col("message", STR, "error message of a failed run"),
        _col("driver_host", STR, "host of the driver that ran it"),
        _col("driver_pid", INT, "process id of that driver (to tell a live run from a killed one)"),
    ]),
    primary_key=("run_id",),
    comment="One row per ingest run, with its reconciliation: input_records = skipped + posts_* + failures.",
)

FEATURE_CONTENT = T.StructType([
    _col("post_id", STR, "the post (moodlake.posts)", False),
    _col("source", STR, "its source", False),
    _col("source_split", STR, "the source's own split, if any"),
    _col("post_content_hash", STR, "content_hash of the post these features were computed from", False),
    _col("features_version", INT, "features.version of the rules that computed them", False),
    _col("text", STR, "title and description cleaned (HTML removed, line breaks to spaces, URLs kept), at most 4,096 characters; NULL without text"),
    _col("text_words", STR_ARRAY, "lower-cased word tokens of `text`"),
    _col("text_english", BOOL, "whether `text` reads as English (heuristic); NULL without text"),
    _col("tags", STR_ARRAY, "tags normalised: lower case, '#' stripped, repeats removed, order kept, the first 10"),
    _col("image", BIN, "the image resized to 256 on the shorter side, centre-cropped to 224x224, JPEG; NULL when unusable"),
    _col("image_reason", STR, "why the image is unusable; NULL when usable"),
    _col("has_image", BOOL, "modality mask: a usable image", False),
    _col("has_text", BOOL, "modality mask: usable text (English 5-150 words when features.english_filter is on)", False),
    _col("has_tags", BOOL, "modality mask: at least one tag", False),
    _col("label_set", STR, "the post's label set"),
    _col("label", STR, "the post's single label"),
    _col("labels", STR_ARRAY, "the post's labels (multi-label sources)"),
    _col("label_dist", STR_DOUBLE_MAP, "vote distribution, when given"),
    _col("label_agree", INT, "agreeing votes (FI), when given"),
    _col("sentiment", STR, "positive / negative derived from the labels (features.sentiment_map), when they agree on one"),
])

POST_FEATURES = TableSpec(
    key="post_features",
    schema=T.StructType(FEATURE_CONTENT.fields + [
        _col("computed_at", TS, "when these features were computed", False),
        _col("features_run_id", STR, "the feature run that computed them", False),
    ]),
    primary_key=("post_id",),
    comment="Silver: model-ready features of every usable post. MERGE on post_id, recomputed when the post changes.",
)

FEATURE_FAILURES = TableSpec(
    key="feature_failures",
    schema=T.StructType([
        _col("post_id", STR, "the post", False),
        _col("source", STR, "its source", False),
        _col("post_content_hash", STR, "content_hash of the post that failed", False),
        _col("features_version", INT, "features.version of the rules", False),
        _col("reason_code", STR, "no_usable_modality / feature_error", False),
        _col("reason", STR, "what was unusable, part by part", False),
        _col("failed_at", TS, "when", False),
        _col("features_run_id", STR, "the feature run", False),
    ]),
    primary_key=("post_id",),
    comment="Posts that cannot be used at all, with the reason. posts = post_features + feature_failures.",
)

DATASETS = TableSpec(
    key="datasets",
    schema=T.StructType([
        _col("name", STR, "dataset name (datasets.definitions)", False),
        _col("version", STR, "content version: a hash of the definition, the features and the vocabulary", False),
        _col("path", STR, "folder of the Petastorm datasets, manifest and vocabulary", False),
        _col("label_set", STR, "label set of the labels", False),
        _col("train_rows", LONG, "rows in train"),
        _col("val_rows", LONG, "rows in val"),
        _col("test_rows", LONG, "rows in test"),
        _col("excluded_rows", LONG, "feature rows of the sources left out (reasons in the manifest)"),
        _col("vocab_version", STR, "version of vocab.json"),
        _col("manifest", STR, "the manifest (JSON)"),
        _col("built_at", TS, "when it was built", False),
    ]),
    primary_key=("name", "version"),
    comment="Training datasets built from moodlake.post_features (Petastorm), one row per version.",
)

TRAINING_RUNS = TableSpec(
    key="training_runs",
    schema=T.StructType([
        _col("run_id", STR, "the training run (its folder under training.root)", False),
        _col("epoch", INT, "epoch number, from 1", False),
        _col("model", STR, "registered model family (moodlake.models get_model name)", False),
        _col("dataset", STR, "dataset name (and fold)", False),
        _col("dataset_version", STR, "dataset build version", False),
        _col("phase", STR, "training phase (multi-stage schedules, e.g. Zhu's branches); 'train' otherwise"),
        _col("train_loss", DOUBLE, "mean training loss of the epoch"),
        _col("val_loss", DOUBLE, "mean validation loss"),
        _col("val_accuracy", DOUBLE, "validation accuracy (routed head for the multitask model; macro-F1 at 0.5 when multi-label)"),
        _col("lr", DOUBLE, "learning rate at the end of the epoch"),
        _col("samples_per_s", DOUBLE, "training samples per second, all processes together"),
        _col("seconds", DOUBLE, "wall time of the epoch"),
        _col("processes", INT, "DDP processes"),
        _col("improved", BOOL, "whether the validation loss improved (a new best checkpoint)"),
        _col("recorded_at", TS, "when the row was recorded", False),
    ]),
    primary_key=("run_id", "epoch"),
    comment="Per-epoch metrics of every training run: the SQL mirror of the MLflow experiment (mlflow.experiment), "
            "which is the record of runs (parameters, metrics, artifacts; tag moodlake.run_id = run_id; "
            "`moodlake ui`). Written by `moodlake train` right after MLflow. MERGE on (run_id, epoch): a resumed run "
            "updates, never duplicates.",
)

MODELS = TableSpec(
    key="models",
    schema=T.StructType([
        _col("version", STR, "model version (content hash of the weights)", False),
        _col("model", STR, "model family (get_model name)", False),
        _col("dataset", STR, "dataset it was trained on (and fold)", False),
        _col("dataset_version", STR, "dataset build version", False),
        _col("label_set", STR, "label set of its outputs", False),
        _col("labels", STR_ARRAY, "its classes in output order", False),
        _col("metrics", STR, "validation metrics of the best epoch (JSON)"),
        _col("path", STR, "folder with model.safetensors, config.json, vocab.json", False),
        _col("code_revision", STR, "git commit of the code that trained it"),
        _col("run_id", STR, "the training run", False),
        _col("stage", STR, "'production' for the version scoring uses (the MLflow alias production, mirrored), "
             "one per task: a model of posts (moodlake score) and one of video segments (williams_blstm: "
             "moodlake score segments); NULL otherwise"),
        _col("created_at", TS, "when it was registered", False),
        _col("promoted_at", TS, "when it was last promoted"),
    ]),
    primary_key=("version",),
    comment="Model registry: the SQL mirror of MLflow's, which is the record. Every version is an MLflow model "
            "version of <mlflow.registered_model_prefix><model>, e.g. moodlake-multitask (tag moodlake.version = "
            "version), and the production one of each task (posts; video segments) carries the MLflow alias production. "
            "`moodlake models promote VERSION` "
            "sets both; `moodlake models sync` re-mirrors the alias. Scoring and the views read this table.",
)

EVALUATIONS = TableSpec(
    key="evaluations",
    schema=T.StructType([
        _col("evaluation_id", STR, "hash of (model version, dataset version, split)", False),
        _col("model_version", STR, "the model (moodlake.models)", False),
        _col("dataset", STR, "dataset (and fold)", False),
        _col("dataset_version", STR, "dataset build version", False),
        _col("split", STR, "split evaluated", False),
        _col("n", LONG, "examples evaluated"),
        _col("accuracy", DOUBLE, "accuracy (routed head); NULL for multi-label; for models of video segments the "
                                 "binary accuracy (emotion present or not) averaged over the emotions"),
        _col("macro_f1", DOUBLE, "macro-averaged F1; NULL for models of video segments (their MAE and Pearson r "
                                 "are in metrics)"),
        _col("roc_auc", DOUBLE, "ROC AUC (binary sentiment only)"),
        _col("metrics", STR, "every metric (JSON): per class, averages, confusion, per head and modality subset"),
        _col("report_path", STR, "folder of report.md and its plots"),
        _col("evaluated_at", TS, "when", False),
    ]),
    primary_key=("evaluation_id",),
    comment="Evaluations of model versions on dataset splits; the report folder holds the plots.",
)

EMOTION_SCORES = TableSpec(
    key="emotion_scores",
    schema=T.StructType([
        _col("post_id", STR, "the post (moodlake.posts, moodlake.post_features)", False),
        _col("model_version", STR, "the model that scored it (moodlake.models)", False),
        _col("source", STR, "the post's source", False),
        _col("uploaded_at", TS, "when the post was published (UTC), from moodlake.posts"),
        _col("label_set", STR, "label set of the probabilities", False),
        _col("probabilities", STR_DOUBLE_MAP, "label -> probability (softmax; per-label sigmoid for multi-label models)", False),
        _col("top_label", STR, "the most probable label", False),
        _col("top_probability", DOUBLE, "its probability", False),
        _col("sentiment", STR, "positive / negative: the polarity with more probability (labels mapped by "
             "features.sentiment_map; the label itself for sentiment label sets); NULL when no label maps"),
        _col("sentiment_probability", DOUBLE, "probability of that polarity: the summed probability of its labels "
             "(the largest of them for multi-label models)"),
        _col("head", STR, "the classifier used: the post's usable modalities, e.g. image+text+tags (multitask), "
             "or the one modality a single-modality model reads", False),
        _col("has_image", BOOL, "the post had a usable image", False),
        _col("has_text", BOOL, "the post had usable text", False),
        _col("has_tags", BOOL, "the post had tags", False),
        _col("post_content_hash", STR, "content hash of the post version whose features were scored", False),
        _col("features_version", INT, "features.version of the features scored", False),
        _col("scored_at", TS, "when it was scored", False),
        _col("run_id", STR, "the scoring run (moodlake.scoring_runs)", False),
    ]),
    primary_key=("post_id", "model_version"),
    comment="Gold: the emotions each model version predicts for each post. MERGE on (post_id, model_version); "
            "a post whose features change is scored again.",
    cluster_by=("model_version", "uploaded_at"),
)

SCORING_FAILURES = TableSpec(
    key="scoring_failures",
    schema=T.StructType([
        _col("post_id", STR, "the post", False),
        _col("model_version", STR, "the model that could not score it", False),
        _col("source", STR, "the post's source", False),
        _col("reason_code", STR, "no_usable_modality / image_undecodable / not_scorable_by_model / ...", False),
        _col("reason", STR, "what was wrong", False),
        _col("post_content_hash", STR, "content hash of the post version that failed", False),
        _col("features_version", INT, "features.version of its features", False),
        _col("failed_at", TS, "when", False),
        _col("run_id", STR, "the scoring run", False),
    ]),
    primary_key=("post_id", "model_version"),
    comment="Posts a model version could not score, with the reason; retried when the post's features change.",
)

SCORING_RUNS = TableSpec(
    key="scoring_runs",
    schema=T.StructType([
        _col("run_id", STR, "unique id of the run", False),
        _col("model_version", STR, "the model scored with"),
        _col("production", BOOL, "whether it was the production model of its task (false: shadow scoring of another "
                                 "version)"),
        _col("window_since", TS, "uploaded_at lower bound (inclusive); NULL: none"),
        _col("window_until", TS, "uploaded_at upper bound (exclusive); NULL: none"),
        _col("post_limit", LONG, "--limit, when given"),
        _col("status", STR, "running / succeeded / failed / interrupted", False),
        _col("started_at", TS, "start (UTC)", False),
        _col("finished_at", TS, "end (UTC); NULL while running"),
        _col("selected", LONG, "posts (segments) selected to score: selected = scored + failed"),
        _col("scored", LONG, "posts scored (rows merged into emotion_scores; segments: into segment_emotion_scores)"),
        _col("failed", LONG, "posts that went to scoring_failures (segments: to segment_scoring_failures)"),
        _col("skipped", LONG, "posts of the window (segments) already scored (or failed) by this version with the "
                              "same features"),
        _col("seconds", DOUBLE, "duration of the run"),
        _col("posts_per_s", DOUBLE, "selected posts (segments) per second of the run"),
        _col("message", STR, "error message of a failed run"),
        _col("driver_host", STR, "host of the driver that ran it"),
        _col("driver_pid", INT, "process id of that driver (to tell a live run from a killed one)"),
        _col("target", STR, "what the run scored: posts (moodlake score) or segments (moodlake score segments); "
                            "NULL: posts, a run recorded before the column existed"),
    ]),
    primary_key=("run_id",),
    comment="One row per scoring run (of posts or of video segments: target), reconciled: selected = scored + failed.",
    added=("target",),
)

def _landing_columns() -> list[T.StructField]:
    """When and by which ingest run a video row landed (the video tables)."""
    return [
        _col("first_ingested_at", TS, "when the row first landed", False),
        _col("ingested_at", TS, "when this version of the row landed", False),
        _col("ingest_run_id", STR, "the ingest run that wrote it (moodlake.ingest_runs)", False),
    ]


def _file_columns(what: str) -> list[T.StructField]:
    """Where a video row came from and its hashes (the video tables' content)."""
    return [
        _col("source_file", STR, "the .csd file it was read from", False),
        _col("record_hash", STR, f"SHA-256 over the video's whole {what} and its file: a re-ingest rewrites the "
                                 "video only when it changes", False),
        _col("content_hash", STR, "SHA-256 over this row's content columns", False),
    ]


FLOAT_ARRAY = T.ArrayType(T.FloatType(), containsNull=True)
DOUBLE_ARRAY = T.ArrayType(T.DoubleType(), containsNull=True)

# One row per (source, modality, video, chunk): a video's whole sequence in a row would be as large as
# the video is long (CMU-MOSEI's COVAREP: 74 floats at 100 Hz, ~9 MB for a 5-minute video, tens of MB for
# the longest), and one row per step multiplies rows by 100 a second and every reader must group them
# again. Chunks of consecutive steps of at most ~1 MiB of features (moodlake.video_ingest.CHUNK_BYTES)
# keep rows bounded whatever the video's length and width, and a video's sequence is its chunks in
# order (`ORDER BY chunk`; a single row for most videos of label- or word-rate sequences).
VIDEO_FEATURE_CONTENT = T.StructType([
    _col("source", STR, "the source name given to `moodlake ingest csd --source-name`", False),
    _col("modality", STR, "the computational sequence's root name: the feature set (COVAREP, FACET 4.2, "
                          "glove_vectors, ...)", False),
    _col("video_id", STR, "the video's id in the sequence (its group under data/)", False),
    _col("chunk", INT, "this row's place in the video's sequence, from 0", False),
    _col("chunks", INT, "rows (chunks) the video's sequence has", False),
    _col("step_start", LONG, "index of the chunk's first step in the video's sequence", False),
    _col("steps", INT, "steps (rows of intervals and features) in this chunk", False),
    _col("video_steps", LONG, "steps of the video's whole sequence", False),
    _col("dims", INT, "feature columns per step", False),
    _col("feature_names", STR_ARRAY, "the sequence's dimension names (its metadata), one per column; NULL "
                                     "when not given"),
    _col("intervals", T.ArrayType(DOUBLE_ARRAY, containsNull=True),
         "[steps][2]: start and end of each step, seconds from the video's start", False),
    _col("features", T.ArrayType(FLOAT_ARRAY, containsNull=True), "[steps][dims] feature values (float32)", False),
] + _file_columns("sequence (every chunk)"))

VIDEO_FEATURES = TableSpec(
    key="video_features",
    schema=T.StructType(VIDEO_FEATURE_CONTENT.fields + _landing_columns()),
    primary_key=("source", "modality", "video_id", "chunk"),
    comment="Bronze: per-step feature sequences of videos from CMU-MultimodalSDK computational sequences "
            "(.csd), one row per chunk of consecutive steps of a (source, modality, video). MERGE on the key; a "
            "video whose sequence changed is replaced whole.",
)

SEGMENT_LABEL_CONTENT = T.StructType([
    _col("source", STR, "the source name given to `moodlake ingest csd --source-name`", False),
    _col("sequence", STR, "the labels sequence's root name (Opinion Segment Labels, ...)", False),
    _col("video_id", STR, "the video's id", False),
    _col("segment", INT, "the segment's index in the video's labels, from 0 (the file's order, which is not "
                         "always time order)", False),
    _col("segment_id", STR, "'<video_id>[<segment>]', the CMU-MultimodalSDK's name of an aligned segment", False),
    _col("start_s", DOUBLE, "segment start, seconds from the video's start", False),
    _col("end_s", DOUBLE, "segment end, seconds", False),
    _col("label_values", FLOAT_ARRAY, "the segment's label values, one per label name (float32)", False),
    _col("label_names", STR_ARRAY, "the sequence's dimension names, e.g. [sentiment score]; NULL when not given"),
] + _file_columns("labels (every segment)"))

SEGMENT_LABELS = TableSpec(
    key="segment_labels",
    schema=T.StructType(SEGMENT_LABEL_CONTENT.fields + _landing_columns()),
    primary_key=("source", "sequence", "video_id", "segment"),
    comment="Bronze: labelled segments of videos from a CMU-MultimodalSDK labels sequence (.csd), one row per "
            "segment. MERGE on the key; a video whose labels changed is replaced whole.",
)

# the emotions of segment_emotion_scores' columns: the outputs of models/williams.py (EMOTIONS there;
# tests/test_csd.py checks they stay equal), intensities in [0, 3]
SEGMENT_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


def _segment_table(key: str, columns: list[T.StructField], stamp: tuple[str, str], comment: str,
                   **options) -> TableSpec:
    """A table of what model versions made of segments: the segment, ``columns``, the hashes of what was
    scored, ``stamp`` (name, meaning) and the run; one row per (source, segment_id, model_version)."""
    return TableSpec(
        key=key,
        schema=T.StructType([
            _col("source", STR, "the videos' source (moodlake.segment_labels.source)", False),
            _col("segment_id", STR, "'<video_id>[<segment>]' (moodlake.segment_labels.segment_id)", False),
            _col("model_version", STR, "the model version (moodlake.models; a williams_blstm)", False),
            _col("video_id", STR, "the video", False),
            _col("sequence", STR, "the labels sequence whose intervals define the segments (the model's dataset's)",
                 False),
            _col("segment", INT, "the segment's index in the video's labels, from 0", False),
        ] + columns + [
            _col("label_content_hash", STR, "content_hash of the segment's moodlake.segment_labels row that was "
                                            "scored", False),
            _col("features_hash", STR, "SHA-256 over the content_hash of every moodlake.video_features chunk of the "
                                       "video that the model reads (a video without any: 'none'); either hash "
                                       "changing makes the segment selected again", False),
            _col(stamp[0], TS, stamp[1], False),
            _col("run_id", STR, "the scoring run (moodlake.scoring_runs, target segments)", False),
        ]),
        primary_key=("source", "segment_id", "model_version"), comment=comment, **options)


SEGMENT_EMOTION_SCORES = _segment_table(
    "segment_emotion_scores",
    [_col("start_s", DOUBLE, "segment start, seconds from the video's start", False),
     _col("end_s", DOUBLE, "segment end, seconds", False),
     *[_col(e, DOUBLE, f"predicted intensity of {e}, 0 (absent) to 3 (strong)", False) for e in SEGMENT_EMOTIONS],
     _col("dominant_emotion", STR, "the emotion with the highest intensity", False),
     _col("dominant_intensity", DOUBLE, "its intensity (0-3)", False),
     _col("steps", INT, "the words (reference steps) in the segment; the model read at most maxlen of them", False)],
    ("scored_at", "when it was scored"),
    "Gold: the emotion intensities (0-3) each model version of video segments predicts for each labelled segment, "
    "aligned as the model's dataset was. MERGE on (source, segment_id, model_version); a segment whose label row or "
    "video features change is scored again.",
    cluster_by=("model_version", "video_id"))

SEGMENT_SCORING_FAILURES = _segment_table(
    "segment_scoring_failures",
    [_col("reason_code", STR, "no_reference_step_in_segment / video_has_no_<modality>_features / "
                              "feature_dims_mismatch / non_finite_intensity", False),
     _col("reason", STR, "what was wrong", False)],
    ("failed_at", "when"),
    "Segments a model version could not score, with the reason; retried when the segment or its video's features "
    "change.")

# the tables of posts and everything computed from them (what Ingestor ensures)
CORE_TABLES: tuple[TableSpec, ...] = (POSTS, INGEST_FAILURES, INGEST_RUNS, POST_FEATURES, FEATURE_FAILURES, DATASETS,
                                      TRAINING_RUNS, MODELS, EVALUATIONS, EMOTION_SCORES, SCORING_FAILURES,
                                      SCORING_RUNS)
VIDEO_TABLES: tuple[TableSpec, ...] = (VIDEO_FEATURES, SEGMENT_LABELS, SEGMENT_EMOTION_SCORES, SEGMENT_SCORING_FAILURES)
ALL_TABLES: tuple[TableSpec, ...] = CORE_TABLES + VIDEO_TABLES
SCORING_TABLES: tuple[TableSpec, ...] = (EMOTION_SCORES, SCORING_FAILURES, SCORING_RUNS)
SEGMENT_SCORING_TABLES: tuple[TableSpec, ...] = (SEGMENT_EMOTION_SCORES, SEGMENT_SCORING_FAILURES, SCORING_RUNS)


def ensure_tables(spark, cfg, specs: tuple[TableSpec, ...] = ALL_TABLES) -> None:
    """Create the database and any missing table, and add the :attr:`TableSpec.added` columns an existing
    table lacks (idempotent)."""
    from delta.tables import DeltaTable

    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.lakehouse.database}")
    for spec in specs:
        if spark.catalog.tableExists(cfg.table(spec.key)):
            if spec.added:
                _add_columns(spark, cfg.table(spec.key), spec)
            continue
        builder = (DeltaTable.createIfNotExists(spark)
                   .tableName(cfg.table(spec.key))
                   .addColumns(spec.schema)
                   .comment(spec.comment))
        if spec.cluster_by:
            builder = builder.clusterBy(*spec.cluster_by)
        builder.execute()


def _add_columns(spark, table: str, spec: TableSpec) -> None:
    """ALTER TABLE ADD COLUMNS: the columns of ``spec.added`` that ``table`` lacks, with their comments."""
    have = set(spark.table(table).columns)
    fields = [f for f in spec.schema.fields if f.name in spec.added and f.name not in have]
    if fields:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()} COMMENT {sql_string(f.metadata.get('comment', ''))}"
                         for f in fields)
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({cols})")


def sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def describe(specs: tuple[TableSpec, ...] = ALL_TABLES, cfg=None) -> str:
    """Markdown documentation of the tables (printed by ``moodlake tables``)."""
    out = []
    for spec in specs:
        name = cfg.table(spec.key) if cfg else spec.key
        out.append(f"### {name}\n\n{spec.comment} Key: {', '.join(spec.primary_key)}.\n")
        out.append("| column | type | description |\n|---|---|---|")
        for f in spec.schema.fields:
            out.append(f"| {f.name} | {f.dataType.simpleString()} | {f.metadata.get('comment', '')} |")
        out.append("")
    return "\n".join(out)
