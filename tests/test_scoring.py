"""Nightly scoring: exactly once per (post, model version), the right head, failures with reasons, the
same probabilities as evaluation, views for analysts."""
from __future__ import annotations

import dataclasses
import datetime as dt
import io

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from moodlake.config import DatasetDefinition, SplitSpec
from moodlake.data.build import build_dataset
from moodlake.evaluation.job import predict_split
from moodlake.features import run_features
from moodlake.inference import Predictor, sentiment_of
from moodlake.ingest import Ingestor
from moodlake.models.multitask import HEADS
from moodlake.scoring import Scorer, ScoringError, score
from moodlake.sources.synthetic import SyntheticSource, SyntheticSpec
from moodlake.tables import POST_FEATURES
from moodlake.train.launch import train
from tests.helpers import fast_recipe, training_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

LABELS = ("negative", "positive")
SOURCE = "score-synthetic"
N_POSTS = 240


@pytest.fixture(scope="module")
def scfg(spark, cfg, tmp_path_factory):
    """Synthetic posts, their features, a dataset, and two small trained models (the first promoted)."""
    root = tmp_path_factory.mktemp("scoring")
    # a database of its own: scoring selects every feature row, and other modules' posts are not this test's
    cfg = dataclasses.replace(cfg, lakehouse=dataclasses.replace(cfg.lakehouse, database="moodlake_scoring_test"))
    spec = SyntheticSpec(labels=LABELS, seed=5, p_text_missing=0.3, p_tags_missing=0.3)
    Ingestor(spark, cfg).run(SyntheticSource(n=N_POSTS, spec=spec, label_set_name="sentiment2", name=SOURCE))
    run_features(spark, cfg)
    d = DatasetDefinition(sources=(SOURCE,), label_set="sentiment2", split=SplitSpec(train=0.5, val=0.2, test=0.3, seed=1))
    c = training_config(cfg, root, {"score-synth": d}, fast_recipe(max_epochs=1))
    c = dataclasses.replace(c, scoring=dataclasses.replace(cfg.scoring, chunk_size=100, progress_interval_s=1.0))
    build_dataset(spark, c, "score-synth")
    first = train(spark, c, "score-synth", "multitask", promote=True)
    second = _another_version(spark, c, first)
    return c, first, second


def _another_version(spark, c, first):
    """A second registered version (the first one's weights with its classifiers perturbed), for shadow
    scoring: registering it is what matters here, not how it was trained."""
    import json
    from types import SimpleNamespace

    import torch

    from moodlake.train import registry

    model, config = registry.load_registered(first.path)
    generator = torch.Generator().manual_seed(0)
    state = {k: (v + 0.3 * torch.randn(v.shape, generator=generator) if k.startswith("heads.") else v)
             for k, v in model.state_dict().items()}
    config = {k: v for k, v in config.items() if k != "version"}
    config["metrics"] = {**config.get("metrics", {}), "note": "perturbed copy for tests"}
    version, folder = registry.save_model(state, config, first.path / "vocab.json", c.models_root)
    registry.register(spark, c, version, folder, {**config, "version": version})
    assert version != first.version and json.loads((folder / "config.json").read_text())["version"] == version
    return SimpleNamespace(version=version, path=folder)


def _scores(spark, c, version):
    return spark.table(c.table("emotion_scores")).where(F.col("model_version") == version)


def _features_of(spark, c, source=SOURCE):
    return spark.table(c.table("post_features")).where(F.col("source") == source)


def test_scoring_twice_scores_each_post_once_and_reconciles(spark, scfg):
    c, first, _ = scfg
    result = score(spark, c)
    n_features = _features_of(spark, c).count()
    rows = _scores(spark, c, first.version).where(F.col("source") == SOURCE)
    assert rows.count() == n_features == rows.select("post_id").distinct().count()
    assert result.reconciles() and result.selected >= n_features
    run = spark.table(c.table("scoring_runs")).where(F.col("run_id") == result.run_id).first()
    assert run.status == "succeeded" and run.production and run.model_version == first.version
    assert run.selected == run.scored + run.failed == result.selected and run.posts_per_s > 0
    # the model is loaded once per Python worker, not once per batch (chunks of 100: several batches each)
    assert 1 <= result.model_loads == result.workers <= 2
    detail = spark.sql(f"DESCRIBE DETAIL {c.table('emotion_scores')}").first()
    assert list(detail.clusteringColumns) == ["model_version", "uploaded_at"]

    again = score(spark, c)
    assert again.selected == 0 and again.skipped >= n_features
    assert "0 new posts" in again.summary()
    assert _scores(spark, c, first.version).where(F.col("source") == SOURCE).count() == n_features


def test_scoring_and_evaluation_give_the_same_probabilities(spark, scfg):
    c, first, _ = scfg
    score(spark, c)
    predictor = Predictor.load(first.path)
    pred = predict_split(predictor, predictor.config["dataset"]["path"] + "/test")
    assert len(pred.post_ids) >= 40
    stored = {r.post_id: [r.probabilities[lab] for lab in LABELS] for r in
              _scores(spark, c, first.version).where(F.col("post_id").isin(pred.post_ids)).collect()}
    assert set(stored) == set(pred.post_ids)
    got = np.array([stored[p] for p in pred.post_ids])
    off = [(p, got[i].tolist(), pred.probs[i].tolist()) for i, p in enumerate(pred.post_ids)
           if np.abs(got[i] - pred.probs[i]).max() > 1e-5]
    assert not off, off


def test_a_second_version_adds_its_own_rows_and_the_views_compare_them(spark, scfg):
    c, first, second = scfg
    score(spark, c)
    shadow = score(spark, c, version=second.version)
    n = _features_of(spark, c).count()
    assert shadow.selected >= n
    run = spark.table(c.table("scoring_runs")).where(F.col("run_id") == shadow.run_id).first()
    assert run.production is False
    assert _scores(spark, c, second.version).where(F.col("source") == SOURCE).count() == n
    assert _scores(spark, c, first.version).where(F.col("source") == SOURCE).count() == n  # untouched
    db = c.lakehouse.database
    agree = spark.sql(f"SELECT * FROM {db}.model_agreement WHERE version_a = '{first.version}' "
                      f"AND version_b = '{second.version}'").first()
    a = _scores(spark, c, first.version).alias("a").join(_scores(spark, c, second.version).alias("b"), "post_id")
    expected = a.select(F.avg((F.col("a.top_label") == F.col("b.top_label")).cast("double"))).first()[0]
    assert agree.posts == a.count() and agree.agreement == pytest.approx(expected)
    confusion = spark.sql(f"SELECT sum(posts) FROM {db}.model_confusion WHERE version_a = '{first.version}' "
                          f"AND version_b = '{second.version}'").first()[0]
    assert confusion == a.count()
    # the analysts' view shows the production model only, with a column per label
    view = spark.table(f"{db}.emotions").where(F.col("source") == SOURCE)
    assert view.count() == n and {r[0] for r in view.select("model_version").distinct().collect()} == {first.version}
    comments = {r.col_name: r.comment for r in spark.sql(f"DESCRIBE {db}.emotions").collect()}
    assert comments["top_emotion"] == "the most probable emotion (label)" and comments["positive"] == "probability of positive"
    row = view.first()
    assert row.negative + row.positive == pytest.approx(1.0, abs=1e-6)
    assert row.top_emotion == max(LABELS, key=lambda lab: row[lab])


def test_a_changed_post_is_scored_again_and_nothing_else(spark, scfg):
    from delta.tables import DeltaTable

    c, first, _ = scfg
    score(spark, c)
    victim = _features_of(spark, c).where("has_text").orderBy("post_id").first()
    before = _scores(spark, c, first.version).where(F.col("post_id") == victim.post_id).first()
    DeltaTable.forName(spark, c.table("post_features")).update(
        F.col("post_id") == victim.post_id,
        {"post_content_hash": F.lit("changed-" + victim.post_content_hash),
         "text_words": F.array(*[F.lit(w) for w in ["a", "completely", "different", "text"]])})
    result = score(spark, c)
    assert (result.selected, result.scored, result.failed) == (1, 1, 0)
    after = _scores(spark, c, first.version).where(F.col("post_id") == victim.post_id).collect()
    assert len(after) == 1 and after[0].post_content_hash == "changed-" + victim.post_content_hash
    assert after[0].run_id == result.run_id != before.run_id


def _jpeg224(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (224, 224), color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _feature_row(post_id, image=None, words=None, tags=None, has_image=None, source="subset-test"):
    now = dt.datetime.now(dt.timezone.utc)
    text = " ".join(words) if words else None
    return {"post_id": post_id, "source": source, "source_split": None, "post_content_hash": "h-" + post_id,
            "features_version": 1, "text": text, "text_words": list(words or []), "text_english": None,
            "tags": list(tags or []), "image": image, "image_reason": None,
            "has_image": bool(image) if has_image is None else has_image, "has_text": bool(words),
            "has_tags": bool(tags), "label_set": None, "label": None, "labels": [], "label_dist": None,
            "label_agree": None, "sentiment": None, "computed_at": now, "features_run_id": "test"}


def test_every_modality_subset_goes_to_its_head_and_bad_payloads_fail(spark, scfg):
    c, first, _ = scfg
    predictor = Predictor.load(first.path)
    words = [w for w in predictor.vocab.words[2:12]]
    tags = list(predictor.vocab.tags[2:5]) or ["sun"]
    image = _jpeg224((180, 40, 40))
    parts = {"image": {"image": image}, "text": {"words": words}, "tags": {"tags": tags}}
    rows = []
    for head in HEADS:
        kwargs = {}
        for m in head.split("+"):
            kwargs.update(parts[m])
        rows.append(_feature_row(f"subset-test:{head}", **kwargs))
    rows.append(_feature_row("subset-test:corrupt", image=b"\xff\xd8\xff garbage", has_image=True))
    rows.append(_feature_row("subset-test:corrupt-with-text", image=b"not a jpeg", words=words, has_image=True))
    rows.append(_feature_row("subset-test:empty"))
    df = spark.createDataFrame([tuple(r[f] for f in POST_FEATURES.schema.fieldNames()) for r in rows], POST_FEATURES.schema)
    df.write.format("delta").mode("append").saveAsTable(c.table("post_features"))

    result = score(spark, c)
    assert result.selected == len(rows) and (result.scored, result.failed) == (7, 3)
    got = {r.post_id.split(":", 1)[1]: r for r in _scores(spark, c, first.version)
           .where(F.col("source") == "subset-test").collect()}
    assert set(got) == set(HEADS)
    preds, rejected = predictor.predict_rows(rows, batch_size=16)
    heads = {pid: {h: p.heads[h][i] for h in HEADS} for p in preds for i, pid in enumerate(p.post_ids)}
    for head, r in got.items():
        assert r.head == head
        assert (r.has_image, r.has_text, r.has_tags) == tuple(m in head.split("+") for m in ("image", "text", "tags"))
        expected = heads[f"subset-test:{head}"][head]  # that head's own output for the post
        assert [r.probabilities[lab] for lab in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    fails = {r.post_id.split(":", 1)[1]: r for r in spark.table(c.table("scoring_failures"))
             .where(F.col("source") == "subset-test").collect()}
    assert {k: v.reason_code for k, v in fails.items()} == {
        "corrupt": "image_undecodable", "corrupt-with-text": "image_undecodable", "empty": "no_usable_modality"}
    assert all(v.reason and v.model_version == first.version for v in fails.values())
    assert {r.post_id.split(":", 1)[1] for r in rejected} == set(fails)
    # the job's CPU batching (posts with an image apart from the others) gives each post the
    # probabilities it has alone in a batch
    grouped, _ = predictor.predict_rows(rows, batch_size=2, text_batch_size=256)
    alone, _ = predictor.predict_rows(rows, batch_size=1)
    assert [len(p.post_ids) for p in grouped] == [2, 2, 3]  # 4 heads with an image, 3 without
    assert all(len({h.startswith("image") for h in p.head}) == 1 for p in grouped)
    by_post = {pid: p.probs[i] for p in alone for i, pid in enumerate(p.post_ids)}
    for p in grouped:
        for i, pid in enumerate(p.post_ids):
            assert p.probs[i].tolist() == pytest.approx(by_post[pid].tolist(), abs=1e-5)
    # failed posts are not selected again while their features stay the same
    assert score(spark, c).selected == 0


def test_clear_errors_before_anything_runs(spark, scfg):
    c, first, _ = scfg
    with pytest.raises(ScoringError, match="no model version 'multitask-nope'"):
        score(spark, c, version="multitask-nope")
    wrong = dataclasses.replace(c, scoring=dataclasses.replace(c.scoring, label_set="mikels8"))
    with pytest.raises(ScoringError, match="scoring.label_set is mikels8"):
        score(spark, wrong)
    with pytest.raises(ScoringError, match="--since 'yesterday' is not a date"):
        score(spark, c, since="yesterday")


def test_window_and_limit_select_by_upload_time(spark, scfg):
    from delta.tables import DeltaTable

    c, first, _ = scfg
    uploads = sorted(r.uploaded_at for r in spark.table(c.table("posts")).where(F.col("source") == SOURCE)
                     .select("uploaded_at").collect())
    since = dt.datetime.combine(uploads[len(uploads) // 2].date(), dt.time())
    window, todo, _ = Scorer(spark, c).select("multitask-never-scored", since, None)
    expected = (spark.table(c.table("posts")).where(F.col("uploaded_at") >= F.lit(since))
                .join(spark.table(c.table("post_features")), "post_id", "left_semi").count())
    assert 0 < window.count() == todo.count() == expected

    score(spark, c)
    changed = [r.post_id for r in _features_of(spark, c).orderBy("post_id").limit(3).collect()]
    DeltaTable.forName(spark, c.table("post_features")).update(
        F.col("post_id").isin(changed), {"post_content_hash": F.concat(F.lit("v2-"), "post_content_hash")})
    assert score(spark, c, since="2999-01-01").selected == 0  # outside the window
    assert score(spark, c, limit=2).selected == 2
    last = score(spark, c)
    assert (last.selected, last.scored) == (1, 1)


def test_sentiment_from_emotions():
    labels = ["amusement", "anger", "surprise"]
    mapping = {"amusement": "positive", "anger": "negative"}
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    s, p = sentiment_of(labels, probs, "custom", mapping, multi_label=False)
    assert s == ["positive", "negative"] and p == pytest.approx([0.5, 0.2])
    s, p = sentiment_of(["negative", "positive"], np.array([[0.3, 0.7]]), "sentiment2", {}, multi_label=False)
    assert s == ["positive"] and p == pytest.approx([0.7])
    s, p = sentiment_of(["surprise"], np.array([[1.0]]), "custom", mapping, multi_label=False)
    assert s == [None] and np.isnan(p[0])


def _cli_env(c, **extra) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
    env.update({"MOODLAKE_HOME": str(c.lakehouse.home), "MOODLAKE__LAKEHOUSE__DATABASE": c.lakehouse.database,
                "MOODLAKE__SPARK__MASTER": "local[2]", "MOODLAKE__SPARK__SHUFFLE_PARTITIONS": "2",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _lost_and_duplicated(spark, c, version, scored: set, failed: set) -> tuple[int, int]:
    """(posts of a clean run's ``scored`` and ``failed`` ids missing from the tables or landed in the
    wrong one, rows beyond one per post) for ``version``."""
    rows = {"emotion_scores": scored, "scoring_failures": failed}
    lost = duplicated = 0
    for table, expected in rows.items():
        ids = [r.post_id for r in spark.table(c.table(table)).where(F.col("model_version") == version)
               .select("post_id").collect()]
        lost += len(expected - set(ids))
        duplicated += len(ids) - len(set(ids)) + len(set(ids) - expected)
    return lost, duplicated


def test_a_killed_scoring_run_resumes_to_the_table_of_one_clean_run(spark, scfg):
    """SIGKILL `moodlake score` after two committed chunks, run it again: the same rows as a clean run."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from delta.tables import DeltaTable

    c, _, second = scfg
    score(spark, c, version=second.version)  # the clean run (a no-op when an earlier test made it)
    columns = ["post_id", "top_label", "head", "post_content_hash"]
    clean = {r.post_id: (tuple(r[k] for k in columns), r.probabilities) for r in
             _scores(spark, c, second.version).collect()}
    clean_failures = sorted(r.post_id for r in spark.table(c.table("scoring_failures"))
                            .where(F.col("model_version") == second.version).collect())
    for table in ("emotion_scores", "scoring_failures"):
        DeltaTable.forName(spark, c.table(table)).delete(F.col("model_version") == second.version)
    total = len(clean) + len(clean_failures)
    chunk = 40
    args = [sys.executable, "-m", "moodlake.cli", "score", "--version", second.version]
    env = _cli_env(c, MOODLAKE__SCORING__CHUNK_SIZE=str(chunk))
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True).start()
    try:
        deadline = time.time() + 600  # a wait, not a cost: seconds on a quiet machine
        while not any("committed chunk 2/" in ln for ln in seen) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert any("committed chunk 2/" in ln for ln in seen), "".join(seen[-40:])
    finally:  # killed also when the wait failed: a live run would hold the version's lease for the next tests
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    partial = _scores(spark, c, second.version).count()
    partial_failed = spark.table(c.table("scoring_failures")).where(F.col("model_version") == second.version).count()
    assert 2 * chunk - 20 <= partial < len(clean), partial  # killed halfway (chunks are hash buckets of ~40)

    t0 = time.monotonic()
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    recover_s = time.monotonic() - t0
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{total - partial - partial_failed:,} posts selected" in resumed.stdout, resumed.stdout
    again = {r.post_id: (tuple(r[k] for k in columns), r.probabilities) for r in
             _scores(spark, c, second.version).collect()}
    lost, duplicated = _lost_and_duplicated(spark, c, second.version, set(clean), set(clean_failures))
    print(f"\nreliability: driver killed during scoring (SIGKILL after chunk 2): {lost} rows lost, {duplicated} "
          f"duplicated; the next run took {recover_s:.1f} s")
    assert (lost, duplicated) == (0, 0)
    assert _scores(spark, c, second.version).count() == len(again) == len(clean)  # nothing twice, nothing lost
    assert again.keys() == clean.keys()
    for post_id, (row, probs) in clean.items():
        assert again[post_id][0] == row
        assert again[post_id][1] == pytest.approx(probs, abs=1e-5)  # batches differ: float rounding only
    assert sorted(r.post_id for r in spark.table(c.table("scoring_failures"))
                  .where(F.col("model_version") == second.version).collect()) == clean_failures
    runs = spark.table(c.table("scoring_runs")).where(F.col("model_version") == second.version)
    statuses = [r.status for r in runs.orderBy("started_at").collect()]
    assert statuses[-2:] == ["interrupted", "succeeded"], statuses
    last = runs.orderBy(F.desc("started_at")).first()
    assert last.selected == total - partial - partial_failed == last.scored + last.failed


def test_two_scoring_runs_at_once_leave_each_post_scored_once(spark, scfg, caplog):
    """`moodlake score` in another process while this one scores the same posts: a second run of the
    same version refuses to start (one clear line), a run of the other version commits beside it
    (Delta's commit conflicts are retried), and both tables end as after clean runs."""
    import logging
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from delta.tables import DeltaTable

    c, first, second = scfg
    clean = {}
    for v in (first, second):
        score(spark, c, version=v.version)  # the clean runs (no-ops when earlier tests made them)
        clean[v.version] = ({r.post_id for r in _scores(spark, c, v.version).collect()},
                            {r.post_id for r in spark.table(c.table("scoring_failures"))
                             .where(F.col("model_version") == v.version).collect()})
    for table in ("emotion_scores", "scoring_failures"):
        DeltaTable.forName(spark, c.table(table)).delete(F.col("model_version").isin(first.version, second.version))
    chunk = 40  # six chunks a run: both runs commit several times while the other does
    env = _cli_env(c, MOODLAKE__SCORING__CHUNK_SIZE=str(chunk))
    proc = subprocess.Popen([sys.executable, "-m", "moodlake.cli", "score", "--version", first.version], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 600
        while not any("committed chunk 1/" in ln for ln in seen) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert any("committed chunk 1/" in ln for ln in seen), "".join(seen[-40:])
        # the same version: refused while the other process's run lives, before anything is written
        with pytest.raises(ScoringError, match=f"model version {first.version} is being scored by run .* pid {proc.pid}"):
            score(spark, c, version=first.version)
        # the other version, the same posts, at the same time: both commit to the same tables
        small = dataclasses.replace(c, scoring=dataclasses.replace(c.scoring, chunk_size=chunk))
        with caplog.at_level(logging.WARNING, logger="moodlake.runs"):
            mine = score(spark, small, version=second.version)
        proc.wait(timeout=600)
        reader.join(timeout=30)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, "".join(seen[-40:])
    retries = (sum("with a concurrent writer; retrying" in ln for ln in seen)
               + sum("with a concurrent writer; retrying" in r.getMessage() for r in caplog.records))
    for v in (first, second):
        lost, duplicated = _lost_and_duplicated(spark, c, v.version, *clean[v.version])
        print(f"\nreliability: two scoring runs at once ({v.version}): {lost} rows lost, {duplicated} duplicated; "
              f"{retries} commit conflict(s) retried in all")
        assert (lost, duplicated) == (0, 0)
    runs = spark.table(c.table("scoring_runs"))
    theirs = runs.where(F.col("driver_pid") == proc.pid).collect()
    assert [r.status for r in theirs] == ["succeeded"] and f"run {theirs[0].run_id}" in out
    ours = runs.where(F.col("run_id") == mine.run_id).first()
    assert ours.started_at < theirs[0].finished_at and theirs[0].started_at < ours.finished_at, "no overlap shown"
    for r in (theirs[0], ours):
        expected = clean[r.model_version]
        assert r.status == "succeeded" and r.selected == r.scored + r.failed == sum(map(len, expected))
        assert (r.scored, r.failed) == tuple(map(len, expected))


def test_the_score_command_exits_cleanly_with_and_without_work(spark, scfg):
    import subprocess
    import sys

    c, _, _ = scfg
    score(spark, c)
    out = subprocess.run([sys.executable, "-m", "moodlake.cli", "score"], env=_cli_env(c), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "0 new posts" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "moodlake.cli", "score", "--version", "multitask-nope"],
                         env=_cli_env(c), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"moodlake: no model version 'multitask-nope' in {c.lakehouse.database}.models")


def test_the_analysts_notebook_executes_and_renders(spark, scfg):
    from moodlake.config import repo_root
    from moodlake.notebooks import notebook_path, render_notebook

    c, _, second = scfg
    score(spark, c)
    score(spark, c, version=second.version)
    out = repo_root() / "build" / "notebooks" / "emotion_trends.html"
    html = render_notebook(notebook_path(), out, {k: v for k, v in _cli_env(c).items() if k.startswith("MOODLAKE")})
    text = html.read_text()
    assert text.count("data:image/png;base64") >= 4  # mix over time, by source, by tag, two versions
    assert "Traceback" not in text and "Error" not in text.split("</style>")[-1]
    assert f"{second.version}" in text  # the comparison names the shadow version


def test_the_readme_analyst_queries_run(spark, scfg):
    """Every SQL statement of the README's analyst page runs (names pointed at this test's database)."""
    import re

    from moodlake.config import repo_root

    c, first, _ = scfg
    score(spark, c)
    text = (repo_root() / "README.md").read_text()
    page = text[text.index("## For analysts"):text.index("## For operators")]
    pieces = [p for block in re.findall(r"```sql\n(.*?)```", page, re.S) for p in block.split(";")]
    code = ["\n".join(ln for ln in p.splitlines() if not ln.strip().startswith("--")).strip() for p in pieces]
    statements = [s for s in code if s]
    assert len(statements) >= 7
    then = (spark.sql(f"DESCRIBE HISTORY {c.table('emotion_scores')}").where("version = 1").first().timestamp
            .strftime("%Y-%m-%d %H:%M:%S.%f"))
    for sql in statements:
        sql = (sql.replace("moodlake.", f"{c.lakehouse.database}.").replace("multitask-0123abcd4567", first.version)
               .replace("VERSION AS OF 12", "VERSION AS OF 1").replace("'2026-12-05 06:00:00'", f"'{then}'"))
        spark.sql(sql).collect()


def test_beeline_reads_the_emotions_view_while_a_scoring_run_writes(spark, scfg):
    """The JDBC server and a scoring run share the lakehouse: beeline answers during the run, and after it
    sees what the run wrote, by name."""
    import re
    import subprocess
    import threading

    from delta.tables import DeltaTable

    from moodlake import sql_server
    from moodlake.spark import pyspark_jars_dir

    c, first, second = scfg
    score(spark, c)
    c = dataclasses.replace(c, sql_server=dataclasses.replace(c.sql_server, port=0))
    db = c.lakehouse.database
    state, _ = sql_server.start(c)
    try:
        def beeline(sql: str) -> list[str]:
            out = subprocess.run(
                [str(pyspark_jars_dir().parent / "bin" / "beeline"), "-u", f"jdbc:hive2://127.0.0.1:{state['port']}",
                 "--silent=true", "--showHeader=false", "--outputformat=csv2", "-e", sql],
                env=_cli_env(c, SPARK_HOME=str(pyspark_jars_dir().parent), SPARK_LOCAL_IP="127.0.0.1"),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
            lines = [re.sub(r"^\d+: jdbc:hive2://[^>]*>", "", ln).strip() for ln in out.stdout.splitlines()]
            return [ln for ln in lines if ln]

        for table in ("emotion_scores", "scoring_failures"):
            DeltaTable.forName(spark, c.table(table)).delete(F.col("model_version") == second.version)
        slow = dataclasses.replace(c, scoring=dataclasses.replace(c.scoring, chunk_size=30))
        run = threading.Thread(target=score, args=(spark, slow), kwargs={"version": second.version})
        run.start()
        during = beeline(f"SELECT count(*) FROM {db}.emotions")
        overlapped = run.is_alive()
        run.join(timeout=600)
        n = spark.table(f"{db}.emotions").count()
        assert overlapped, "the scoring run ended before beeline answered: no overlap shown"
        assert during == [str(n)]  # the production view, untouched by the shadow run
        after = beeline(f"SELECT count(*) FROM {db}.emotion_scores WHERE model_version = '{second.version}'")
        assert after == [str(_scores(spark, c, second.version).count())] and int(after[0]) > 0
    finally:
        sql_server.stop(c)
