"""``make demo`` (``moodlake demo``, which imports this module only when it runs): the pipeline end to
end on the embedded lakehouse, offline.

Ingests synthetic posts, runs a "nightly" Flickr search through the real flickrapi client
against the local Flickr-compatible server (:mod:`moodlake_dev.doubles.fake_flickr`, filled with
synthetic photos), ingests the VSO
Twitter research set when ../shared/data is there, computes the feature table, builds the
synthetic training dataset (Petastorm), trains a small multitask model on it (DDP through
TorchDistributor, the production recipe for a few epochs), registers and promotes it, evaluates it
on the held-out split (a Markdown report with a confusion-matrix plot), scores every post with it
(``moodlake score``: twice, the second time "0 new posts"), prints the daily emotion mix, renders the
analysts' notebook to HTML, and shows what analysts would query.
Safe to re-run: every step is idempotent, so a second demo lands nothing new.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from moodlake.console import print_rows
from moodlake.config import Config, Secret
from moodlake.ingest import Ingestor
from moodlake.sources.datasets import dataset_source
from moodlake.sources.flickr import FlickrSource
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec

log = logging.getLogger(__name__)

DEMO_POSTS = 600
DEMO_FLICKR_PHOTOS = 400
DEMO_EPOCHS = 3
DEMO_VIDEOS = 30        # synthetic videos of DEMO_SEGMENTS segments each (CMU-MultimodalSDK .csd files)
DEMO_SEGMENTS = 6
DEMO_VIDEO_EPOCHS = 10


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(spark, cfg: Config) -> None:
    from moodlake_dev.doubles.fake_flickr import FakeFlickrServer
    from moodlake_dev.doubles.synthetic_flickr import synthetic_corpus

    ing = Ingestor(spark, cfg)
    labels = cfg.label_set("mikels8")

    _step(f"1. {DEMO_POSTS} synthetic posts (image, text, tags; many lack text or tags)")
    print(ing.run(SyntheticSource(n=DEMO_POSTS, spec=SyntheticSpec(labels=labels, seed=7))).summary())

    _step("2. the nightly Flickr search, through flickrapi, against the local Flickr test server")
    key, secret = "demo-key-0123456789", "demo-secret-abcdef"
    with FakeFlickrServer(synthetic_corpus(DEMO_FLICKR_PHOTOS, SyntheticSpec(labels=labels, seed=8)),
                          valid_keys={key: secret}) as server:
        settings = dataclasses.replace(cfg.flickr, rest_url=server.rest_url, api_key=Secret(key),
                                       api_secret=Secret(secret), calls_per_hour=36_000, burst=20)
        since = int(dt.datetime(2014, 1, 1, tzinfo=dt.timezone.utc).timestamp())
        until = int(dt.datetime(2014, 6, 30, tzinfo=dt.timezone.utc).timestamp())
        src = FlickrSource(settings=settings, search={"min_upload_date": since, "max_upload_date": until})
        print(f"   (budget {settings.calls_per_hour:,} calls/hour shared by all executors; {server.rest_url})")
        print(ing.run(src).summary())

    vso = Path(cfg.data.shared_dir) / "vso_twitter"
    if vso.is_dir():
        _step("3. the VSO Twitter research set (603 tweets: image, text, hashtag; binary sentiment)")
        print(ing.run(dataset_source("vso-twitter", vso, cfg)).summary())
    else:
        _step(f"3. (skipped: no research data at {vso})")

    from moodlake.data.build import build_dataset
    from moodlake.features import run_features

    _step("4. features: cleaned text, normalised tags, 224-px images, modality mask (moodlake.post_features)")
    print(run_features(spark, cfg).summary())

    _step("5. the synthetic training dataset: stable splits, train-only vocabulary, Petastorm")
    build = build_dataset(spark, cfg, "synthetic")
    print(build.summary())

    from moodlake.evaluation.job import evaluate
    from moodlake.train.launch import train

    _step(f"6. train the multitask model on it ({DEMO_EPOCHS} epochs), register it and promote it to production")
    outcome = train(spark, cfg, "synthetic", "multitask", epochs=DEMO_EPOCHS, promote=True)
    print(outcome.summary())

    _step("7. evaluate the production model on the held-out test split")
    result = evaluate(spark, cfg, "production")
    print(result.summary())
    for plot in sorted(Path(result.report).glob("*.png")):
        print(f"   plot:   {plot}")

    from moodlake.scoring import score

    _step("8. nightly scoring: the production model scores every post inside Spark, exactly once")
    print(score(spark, cfg).summary())
    print("   and again, as the next night would with nothing new:")
    print("   " + score(spark, cfg).summary())

    db = cfg.lakehouse.database
    _step(f"9. the daily emotion mix ({db}.daily_emotion_mix; most recent days first)")
    print_rows(spark.sql(f"SELECT day, source, emotion, posts, round(share, 2) AS share FROM {db}.daily_emotion_mix "
                         f"ORDER BY day DESC, source, posts DESC, emotion"), 15)

    from moodlake.notebooks import notebook_path, render_notebook

    _step("10. the analysts' notebook (notebooks/emotion_trends.ipynb), executed on this lakehouse")
    html = render_notebook(notebook_path(), Path(cfg.lakehouse.home) / "reports" / "emotion_trends.html",
                           {"MOODLAKE_HOME": str(cfg.lakehouse.home), "MOODLAKE_ENV": cfg.env})
    print(f"   rendered notebook: {html}")

    video_demo(spark, cfg)

    _step("What analysts see (moodlake sql \"...\"; tables documented by `moodlake tables`)")
    for q in (
        f"SELECT source, count(*) AS posts, count(label) AS labelled, "
        f"round(avg(CASE WHEN coalesce(title, '') = '' AND coalesce(description, '') = '' THEN 1 ELSE 0 END), 2) "
        f"AS share_without_text, "
        f"round(avg(CASE WHEN size(tags) = 0 THEN 1 ELSE 0 END), 2) AS share_without_tags "
        f"FROM {db}.posts GROUP BY source ORDER BY source",
        f"SELECT source, reason_code, count(*) AS n FROM {db}.ingest_failures GROUP BY ALL ORDER BY source, n DESC",
        f"SELECT source, status, input_records, skipped, posts_new, posts_updated, posts_unchanged, failures, api_calls "
        f"FROM {db}.ingest_runs ORDER BY started_at DESC LIMIT 6",
        f"SELECT source, count(*) AS usable, sum(CAST(has_image AS INT)) AS with_image, "
        f"sum(CAST(has_text AS INT)) AS with_text, sum(CAST(has_tags AS INT)) AS with_tags, "
        f"sum(CAST(has_image AND has_text AND has_tags AS INT)) AS all_three FROM {db}.post_features GROUP BY source ORDER BY source",
        f"SELECT source, reason_code, count(*) AS n FROM {db}.feature_failures GROUP BY ALL ORDER BY source",
        f"SELECT name, version, train_rows, val_rows, test_rows, excluded_rows FROM {db}.datasets ORDER BY built_at DESC LIMIT 3",
        f"SELECT epoch, round(train_loss, 3) AS train_loss, round(val_loss, 3) AS val_loss, "
        f"round(val_accuracy, 3) AS val_accuracy, round(samples_per_s, 1) AS samples_per_s "
        f"FROM {db}.training_runs WHERE run_id = '{outcome.run_id}' ORDER BY epoch",
        f"SELECT version, model, label_set, stage, promoted_at FROM {db}.models ORDER BY created_at DESC LIMIT 3",
        f"SELECT model_version, dataset, split, n, round(accuracy, 3) AS accuracy, round(macro_f1, 3) AS macro_f1 "
        f"FROM {db}.evaluations ORDER BY evaluated_at DESC LIMIT 3",
        f"SELECT source, top_emotion, count(*) AS posts, round(avg(probability), 3) AS mean_probability "
        f"FROM {db}.emotions GROUP BY source, top_emotion ORDER BY source, posts DESC LIMIT 12",
        f"SELECT head, count(*) AS posts FROM {db}.emotions GROUP BY head ORDER BY posts DESC",
        f"SELECT model_version, status, selected, scored, failed, skipped, round(posts_per_s, 1) AS posts_per_s "
        f"FROM {db}.scoring_runs ORDER BY started_at DESC LIMIT 3",
    ):
        print(f"\n> {q}")
        print_rows(spark.sql(q), 20)
    print(f"\nLakehouse: {cfg.lakehouse.home}  (run `make demo` again: nothing new lands)")


def video_demo(spark, cfg: Config) -> None:
    """Video segments end to end (issue #20): synthetic ``.csd`` files -> ``moodlake.video_features`` and
    ``moodlake.segment_labels`` -> the aligned segment dataset -> Williams et al.'s BLSTM trained,
    evaluated next to the random baselines and promoted -> every segment scored once into
    ``moodlake.segment_emotion_scores``, read through the analysts' view ``segment_emotions``."""
    from moodlake.data.segments import build_segment_dataset
    from moodlake.evaluation.job import evaluate
    from moodlake.sources.synthetic_video import SyntheticVideoSpec, write_synthetic_videos
    from moodlake.train.launch import train
    from moodlake.video_ingest import CsdIngestor

    _step(f"11. video segments: {DEMO_VIDEOS} synthetic videos as CMU-MultimodalSDK .csd files (audio 100 Hz, "
          "visual 30 Hz, words), ingested")
    files = write_synthetic_videos(Path(cfg.lakehouse.home) / "incoming" / "synthetic-video",
                                   SyntheticVideoSpec(videos=DEMO_VIDEOS, segments=DEMO_SEGMENTS, seed=20))
    print(CsdIngestor(spark, cfg).run_csd("synthetic-video", files.features, [files.labels]).summary())

    _step("12. the segment dataset: every modality aligned to the words (overlap-weighted), split by video")
    build = build_segment_dataset(spark, cfg, "synthetic-video")
    print(build.summary())

    _step(f"13. Williams et al.'s early-fusion BLSTM on it ({DEMO_VIDEO_EPOCHS} epochs), evaluated next to the "
          "random baselines")
    outcome = train(spark, cfg, "synthetic-video", "williams_blstm", epochs=DEMO_VIDEO_EPOCHS, promote=True)
    print(outcome.summary())
    print("   promoted: the production model of video segments (the posts' production model is unchanged)")
    result = evaluate(spark, cfg, outcome.version)
    print(result.summary())
    print((Path(result.report) / "report.md").read_text().split("## ")[1].split("![")[0].strip())
    print(f"   plot:   {Path(result.report) / 'intensity_vs_random.png'}")

    from moodlake.segment_scoring import score_segments

    _step("14. segment scoring (`moodlake score segments`): every segment once, into moodlake.segment_emotion_scores")
    print(score_segments(spark, cfg).summary())
    print("   and again, with nothing new:")
    print("   " + score_segments(spark, cfg).summary())
    db = cfg.lakehouse.database
    q = (f"SELECT video_id, round(start_s, 1) AS start_s, round(end_s, 1) AS end_s, dominant_emotion, "
         f"round(dominant_intensity, 2) AS intensity FROM {db}.segment_emotions ORDER BY video_id, start_s LIMIT 8")
    print(f"\n> {q}")
    print_rows(spark.sql(q), 8)
