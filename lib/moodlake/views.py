"""The analysts' views over the emotion tables, with column comments (``DESCRIBE moodlake.emotions``).

(Re)created by every scoring run of the production model (the per-label columns of
``moodlake.emotions`` follow its label set) and by ``moodlake views``:

- ``emotions``: the production model's scores joined to their posts, one row per post;
- ``daily_emotion_mix``: per upload day and source, the share of posts whose top emotion is each label;
- ``emotion_by_tag``: per (normalised) tag, the share of each top emotion;
- ``top_posts_per_emotion``: for every label, the 100 posts with its highest probability;
- ``model_agreement`` and ``model_confusion``: every two model versions compared on the posts both scored.

and over the emotions of video segments, (re)created by every run of ``moodlake score segments`` with the
production model of video segments and by ``moodlake views``:

- ``segment_emotions``: that model's intensities (0-3) of the six emotions, one row per scored segment,
  with its video and times.

The production models (one of posts, one of video segments) are read from ``moodlake.models`` when a
view is queried, so a promotion changes what the views show at once (the label columns of
``emotions`` follow at the next scoring run).
"""
from __future__ import annotations

from moodlake.config import Config
from moodlake.tables import SEGMENT_EMOTIONS
from moodlake.tables import sql_string as _q

TOP_POSTS = 100
VIEW_NAMES = ("emotions", "daily_emotion_mix", "emotion_by_tag", "top_posts_per_emotion", "model_agreement",
              "model_confusion")
SEGMENT_VIEW_NAMES = ("segment_emotions",)


def _view(name: str, comment: str, columns: list[tuple[str, str, str]], body: str) -> str:
    """CREATE OR REPLACE VIEW with a comment on the view and on each of ``columns`` (name, expression, comment)."""
    cols = ",\n  ".join(f"`{c}` COMMENT {_q(doc)}" for c, _, doc in columns)
    select = ",\n  ".join(f"{expr} AS `{c}`" for c, expr, _ in columns)
    return f"CREATE OR REPLACE VIEW {name} (\n  {cols}\n) COMMENT {_q(comment)} AS\nSELECT\n  {select}\n{body}"


def label_column(label: str, taken: set[str]) -> str:
    """The column of ``label``'s probability in ``emotions``: the label itself unless another column has that name."""
    name = label.lower().replace(" ", "_")
    return f"p_{name}" if name in taken else name


def view_statements(cfg: Config, labels: list[str]) -> list[str]:
    db = cfg.lakehouse.database
    scores, posts, feats, models = (cfg.table(k) for k in ("emotion_scores", "posts", "post_features", "models"))
    emotions = [
        ("post_id", "s.post_id", "the post (moodlake.posts)"),
        ("source", "s.source", "where it came from"),
        ("owner", "p.owner", "its author, when known"),
        ("uploaded_at", "s.uploaded_at", "when it was published (UTC)"),
        ("title", "p.title", "its title as published"),
        ("tags", "f.tags", "its tags, normalised (lower case, '#' stripped, the first 10)"),
        ("top_emotion", "s.top_label", "the most probable emotion (label)"),
        ("probability", "s.top_probability", "its probability"),
        ("sentiment", "s.sentiment", "positive / negative (moodlake.emotion_scores.sentiment)"),
        ("sentiment_probability", "s.sentiment_probability", "probability of that sentiment"),
        ("head", "s.head", "the classifier used: the post's usable modalities"),
        ("model_version", "s.model_version", "the production model that scored it"),
        ("label_set", "s.label_set", "label set of the probabilities"),
        ("scored_at", "s.scored_at", "when it was scored"),
        ("probabilities", "s.probabilities", "every label's probability as a map"),
    ]
    taken = {c for c, _, _ in emotions}
    for label in labels:
        col = label_column(label, taken)
        taken.add(col)
        emotions.append((col, f"s.probabilities[{_q(label)}]", f"probability of {label}"))
    out = [_view(
        f"{db}.emotions", "The production model's emotion scores joined to their posts: one row per scored post.",
        emotions,
        f"FROM {scores} s\nJOIN {models} m ON m.version = s.model_version AND m.stage = 'production'\n"
        f"JOIN {posts} p ON p.post_id = s.post_id\nLEFT JOIN {feats} f ON f.post_id = s.post_id")]
    out.append(_view(
        f"{db}.daily_emotion_mix", "Per upload day and source: how many posts have each top emotion, and their share.",
        [("day", "to_date(uploaded_at)", "upload day (UTC)"),
         ("source", "source", "source of the posts"),
         ("emotion", "top_emotion", "top emotion"),
         ("posts", "count(*)", "posts of that day and source whose top emotion it is"),
         ("share", "count(*) / sum(count(*)) OVER (PARTITION BY to_date(uploaded_at), source)",
          "their share of the day's posts of that source (0-1)"),
         ("mean_probability", "avg(probability)", "mean probability of that top emotion")],
        f"FROM {db}.emotions\nGROUP BY to_date(uploaded_at), source, top_emotion"))
    out.append(_view(
        f"{db}.emotion_by_tag", "Per normalised tag: how many tagged posts have each top emotion, and their share.",
        [("tag", "tag", "the tag (normalised)"),
         ("emotion", "top_emotion", "top emotion"),
         ("posts", "count(*)", "posts with the tag whose top emotion it is"),
         ("share", "count(*) / sum(count(*)) OVER (PARTITION BY tag)", "their share of the tag's posts (0-1)"),
         ("mean_probability", "avg(probability)", "mean probability of that top emotion")],
        f"FROM {db}.emotions LATERAL VIEW explode(tags) t AS tag\nGROUP BY tag, top_emotion"))
    out.append(_view(
        f"{db}.top_posts_per_emotion", f"For every label, the {TOP_POSTS} posts the production model gives it the "
                                       "highest probability.",
        [("emotion", "emotion", "the label"),
         ("rank", "rank", f"1 = the highest probability (up to {TOP_POSTS})"),
         ("post_id", "post_id", "the post"),
         ("probability", "probability", "its probability of the label"),
         ("source", "source", "its source"),
         ("title", "title", "its title"),
         ("uploaded_at", "uploaded_at", "when it was published")],
        f"FROM (SELECT e.*, pe.key AS emotion, pe.value AS probability,\n"
        f"  row_number() OVER (PARTITION BY pe.key ORDER BY pe.value DESC, e.post_id) AS rank\n"
        f"  FROM (SELECT post_id, source, title, uploaded_at, probabilities FROM {db}.emotions) e\n"
        f"  LATERAL VIEW explode(e.probabilities) pe AS key, value)\nWHERE rank <= {TOP_POSTS}"))
    pairs = (f"FROM {scores} a JOIN {scores} b ON a.post_id = b.post_id AND a.model_version <> b.model_version "
             f"AND a.label_set = b.label_set")
    out.append(_view(
        f"{db}.model_agreement", "Every two model versions on the posts both scored: how often they agree.",
        [("version_a", "a.model_version", "one model version"),
         ("version_b", "b.model_version", "the other"),
         ("posts", "count(*)", "posts both scored"),
         ("agreement", "avg(CASE WHEN a.top_label = b.top_label THEN 1.0D ELSE 0.0D END)",
          "share of those posts with the same top label"),
         ("sentiment_agreement", "avg(CASE WHEN a.sentiment = b.sentiment THEN 1.0D ELSE 0.0D END)",
          "share with the same sentiment"),
         ("mean_abs_probability_diff", "avg(abs(a.top_probability - b.probabilities[a.top_label]))",
          "mean difference of the probability each gives to version_a's top label")],
        pairs + "\nGROUP BY a.model_version, b.model_version"))
    out.append(_view(
        f"{db}.model_confusion", "Every two model versions on the posts both scored: version_a's top label against "
                                 "version_b's.",
        [("version_a", "a.model_version", "one model version"),
         ("version_b", "b.model_version", "the other"),
         ("label_a", "a.top_label", "version_a's top label"),
         ("label_b", "b.top_label", "version_b's top label"),
         ("posts", "count(*)", "posts with that pair of top labels")],
        pairs + "\nGROUP BY a.model_version, b.model_version, a.top_label, b.top_label"))
    return out


def create_views(spark, cfg: Config, labels: list[str]) -> None:
    """(Re)create every analysts' view; ``labels``: the production model's, for ``emotions``' columns."""
    for statement in view_statements(cfg, labels):
        spark.sql(statement)


def segment_view_statements(cfg: Config) -> list[str]:
    db = cfg.lakehouse.database
    scores, models = cfg.table("segment_emotion_scores"), cfg.table("models")
    columns = [
        ("source", "s.source", "the videos' source (moodlake ingest csd --source-name)"),
        ("video_id", "s.video_id", "the video"),
        ("segment", "s.segment", "the segment's index in the video's labels, from 0"),
        ("segment_id", "s.segment_id", "'<video_id>[<segment>]'"),
        ("start_s", "s.start_s", "segment start, seconds from the video's start"),
        ("end_s", "s.end_s", "segment end, seconds"),
        ("duration_s", "s.end_s - s.start_s", "its length, seconds"),
        *[(e, f"s.`{e}`", f"intensity of {e}: 0 (absent) to 3 (strong)") for e in SEGMENT_EMOTIONS],
        ("dominant_emotion", "s.dominant_emotion", "the emotion with the highest intensity"),
        ("dominant_intensity", "s.dominant_intensity", "its intensity (0-3)"),
        ("model_version", "s.model_version", "the production model of video segments that scored it"),
        ("scored_at", "s.scored_at", "when it was scored"),
    ]
    return [_view(
        f"{db}.segment_emotions", "The production model of video segments: the intensity of each emotion in each "
                                  "scored segment, with its video and times; one row per segment.",
        columns, f"FROM {scores} s\nJOIN {models} m ON m.version = s.model_version AND m.stage = 'production'")]


def create_segment_views(spark, cfg: Config) -> None:
    """(Re)create the analysts' views of video segments (their tables must exist)."""
    for statement in segment_view_statements(cfg):
        spark.sql(statement)
