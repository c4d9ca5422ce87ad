"""Scoring video segments (issue #20): every labelled segment once per model version, aligned as the
model's dataset was, failures with reasons, selected = scored + failed, a changed video scored again
and only it, a run broken after a chunk resumed to the tables of a clean run, the analysts' view, and
production scoped by task (a model of video segments never displaces the model of posts)."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from moodlake.config import SplitSpec, load_config
from moodlake.data.align import build_segments
from moodlake.data.segments import build_segment_dataset
from moodlake.inference import SegmentPredictor
from moodlake.scoring import Scorer, ScoringError
from moodlake.segment_scoring import SegmentScorer, score_segments
from moodlake.sources.csd import read_csd, write_csd
from moodlake.sources.synthetic_video import (EMOTIONS, LABELS_ROOT, ROOTS, SyntheticVideoSpec, make_video,
                                              write_synthetic_videos)
from moodlake.train import registry
from moodlake.train.launch import train
from moodlake.video_ingest import CsdIngestor

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SOURCE = "segscore-videos"
SPEC = SyntheticVideoSpec(videos=12, segments=4, segment_s=(1.0, 2.0), pause_s=(0.1, 0.3), seed=11)
MAXLEN = 6
# the videos that cannot be scored (ingested after the dataset was built), and why
EXPECTED_FAILURES = {"ghost[0]": "video_has_no_text_features", "ghost[1]": "video_has_no_text_features",
                     "mute[0]": "video_has_no_audio_features", "mute[1]": "video_has_no_audio_features",
                     "odd[0]": "feature_dims_mismatch", "gappy[1]": "no_reference_step_in_segment"}
SCORABLE = SPEC.videos * SPEC.segments + 1  # every synthetic segment and gappy[0]


def _extra_videos(folder):
    """Videos of the same source that cannot be scored (or only in part), in files of their own: the
    first synthetic video's streams under other ids. Returns (feature files, labels file)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = make_video(SPEC, 0).sequences
    words = base["text"][0]
    first = (words[0, 0], words[2, 1])  # the first three words
    features = {
        "audio": {"gappy": base["audio"], "odd": base["audio"]},                # mute: no audio
        "visual": {"gappy": base["visual"], "mute": base["visual"]},
        "text": {"gappy": base["text"], "mute": base["text"], "odd": base["text"]},
    }
    files = [write_csd(folder / f"extra_{m}.csd", ROOTS[m], videos) for m, videos in features.items()]
    iv, f = base["visual"]
    files.append(write_csd(folder / "odd_visual.csd", ROOTS["visual"], {"odd": (iv, f[:, :20])}))  # 20 of 35 dims
    ones = np.ones((2, len(EMOTIONS)), np.float32)
    labels = write_csd(folder / "extra_labels.csd", LABELS_ROOT, {
        "gappy": (np.array([first, (0.0, words[0, 0] - 0.05)]), ones),  # [1]: before the first word
        "ghost": (np.array([(0.0, 1.0), (1.0, 2.0)]), ones),            # no features at all
        "mute": (np.array([first, first]), ones),
        "odd": (np.array([first]), ones[:1]),
    }, {"dimension names": list(EMOTIONS)})
    return files, labels


@pytest.fixture(scope="module")
def sscfg(spark, cfg, tmp_path_factory):
    """Synthetic videos ingested, a segment dataset built from them, a Williams model trained on it for
    one epoch (promoted) and a second version of it; then videos that cannot be scored ingested."""
    root = tmp_path_factory.mktemp("segscore")
    d = dataclasses.replace(load_config(environ={}).dataset("synthetic-video"), sources=(SOURCE,),
                            split=SplitSpec(scheme="hash", train=0.5, val=0.25, test=0.25, seed=3))
    d = dataclasses.replace(d, segments=dataclasses.replace(d.segments, maxlen=MAXLEN))
    c = dataclasses.replace(
        cfg, lakehouse=dataclasses.replace(cfg.lakehouse, database="moodlake_segscore_test"),
        mlflow=dataclasses.replace(cfg.mlflow, enabled=False),  # tests/test_tracking.py scopes MLflow's alias
        datasets=dataclasses.replace(cfg.datasets, root=str(root / "datasets"),
                                     definitions={**cfg.datasets.definitions, "segscore": d}),
        training=dataclasses.replace(cfg.training, launcher="inline", root=str(root / "runs"),
                                     models_root=str(root / "models")),
        scoring=dataclasses.replace(cfg.scoring, chunk_size=30, progress_interval_s=1.0))
    files = write_synthetic_videos(root / "csd", SPEC)
    CsdIngestor(spark, c).run_csd(SOURCE, files.features, [files.labels])
    build_segment_dataset(spark, c, "segscore")
    first = train(spark, c, "segscore", "williams_blstm", epochs=1, batch_size=8, promote=True)
    second = _another_version(spark, c, first.path)
    extra, labels = _extra_videos(root / "extra")
    CsdIngestor(spark, c).run_csd(SOURCE, extra, [labels])
    return c, first, second, files, root


def _another_version(spark, c, folder):
    """Another registered version of the segment model in ``folder``: its output layer perturbed, so
    another version with other predictions (for shadow scoring and promotions). Returns (version, folder)."""
    import torch

    model, config = registry.load_registered(folder)
    g = torch.Generator().manual_seed(0)
    state = {k: (v + 0.3 * torch.randn(v.shape, generator=g) if k.startswith("out.") else v)
             for k, v in model.state_dict().items()}
    config = {k: v for k, v in config.items() if k != "version"}
    config["metrics"] = {**config.get("metrics", {}), "note": "output layer perturbed for tests"}
    version, path = registry.save_model(state, config, None, c.models_root)  # a segment model: no vocabulary
    registry.register(spark, c, version, path, {**config, "version": version})
    return version, path


@pytest.fixture(scope="module")
def scored(spark, sscfg):
    """The first run of the production model of video segments (the other tests start from its tables)."""
    return score_segments(spark, sscfg[0])


def _scores(spark, c, version):
    return spark.table(c.table("segment_emotion_scores")).where(F.col("model_version") == version)


def _failures(spark, c, version):
    return spark.table(c.table("segment_scoring_failures")).where(F.col("model_version") == version)


def _run(spark, c, run_id):
    return spark.table(c.table("scoring_runs")).where(F.col("run_id") == run_id).first()


def test_scoring_once_scores_every_segment_with_a_step_and_fails_the_others_with_reasons(spark, sscfg, scored):
    c, first, _, _, _ = sscfg
    result = scored
    assert (result.selected, result.scored, result.failed) == (SCORABLE + len(EXPECTED_FAILURES), SCORABLE,
                                                               len(EXPECTED_FAILURES))
    # the model loaded once per Python worker, not once per video (model_loads counts a worker's loads of
    # every model so far: other modules' scoring tests may have used the same workers)
    assert result.model_version == first.version and 1 <= result.workers <= result.model_loads < SPEC.videos
    rows = _scores(spark, c, first.version)
    assert rows.count() == rows.select("segment_id").distinct().count() == SCORABLE
    assert {r.segment_id: r.reason_code for r in _failures(spark, c, first.version).collect()} == EXPECTED_FAILURES
    assert all(f.reason for f in _failures(spark, c, first.version).collect())
    for r in rows.collect():
        values = [r[e] for e in EMOTIONS]
        assert all(0.0 <= v <= 3.0 for v in values) and r.dominant_intensity == max(values)
        assert r.dominant_emotion == EMOTIONS[int(np.argmax(values))] and r.run_id == result.run_id
        assert r.sequence == LABELS_ROOT and r.end_s > r.start_s and r.steps >= 1
    run = _run(spark, c, result.run_id)
    assert (run.status, run.target, run.production, run.model_version) == ("succeeded", "segments", True,
                                                                          first.version)
    assert run.selected == run.scored + run.failed == result.selected and run.posts_per_s > 0
    assert "segments selected = " in result.summary() and "segments/s" in result.summary()

    again = score_segments(spark, c)
    assert (again.selected, again.skipped) == (0, SCORABLE + len(EXPECTED_FAILURES))
    assert f"score segments {first.version} run {again.run_id}: 0 new segments" in again.summary()
    assert _scores(spark, c, first.version).count() == SCORABLE

    # the analysts' view: the production model's rows, a readable column per emotion
    db = c.lakehouse.database
    view = spark.table(f"{db}.segment_emotions")
    assert view.count() == SCORABLE and {r[0] for r in view.select("model_version").distinct().collect()} == {
        first.version}
    comments = {r.col_name: r.comment for r in spark.sql(f"DESCRIBE {db}.segment_emotions").collect()}
    assert comments["fear"] == "intensity of fear: 0 (absent) to 3 (strong)"
    row = view.where(F.col("segment_id") == "synth0000[0]").first()
    assert row.duration_s == pytest.approx(row.end_s - row.start_s) and row.video_id == "synth0000"


def test_scores_equal_the_predictor_on_segments_aligned_from_the_csd_arrays(spark, sscfg, scored):
    c, first, _, files, _ = sscfg
    streams = {m: {rec.video_id: (rec.intervals, rec.features) for rec in read_csd(getattr(files, m))}
               for m in ("audio", "visual", "text")}
    videos = {v: {m: streams[m][v] for m in streams} for v in streams["text"]}
    labels = [rec for rec in read_csd(files.labels)]
    vid = [r.video_id for r in labels for _ in range(len(r.intervals))]
    seg = [i for r in labels for i in range(len(r.intervals))]
    direct = build_segments(videos, vid, seg, np.concatenate([r.intervals for r in labels]),
                            np.concatenate([r.features for r in labels]), reference="text", maxlen=MAXLEN)
    from types import SimpleNamespace

    rows = [SimpleNamespace(segment_id=f"{v}[{s}]", video_id=v, length=int(direct.lengths[i]),
                            **{m: direct.features[m][i] for m in ("audio", "visual", "text")})
            for i, (v, s) in enumerate(zip(vid, seg))]
    expected = SegmentPredictor.load(first.path).predict_rows(rows, batch_size=7)
    stored = {r.segment_id: [r[e] for e in EMOTIONS] for r in _scores(spark, c, first.version).collect()}
    labels_order = SegmentPredictor.load(first.path).labels
    assert len(rows) == SPEC.videos * SPEC.segments
    for row, values in zip(rows, expected):
        got = dict(zip(EMOTIONS, stored[row.segment_id]))
        assert [got[lab] for lab in labels_order] == pytest.approx(values.tolist(), abs=1e-5), row.segment_id


def test_a_changed_video_is_scored_again_and_nothing_else(spark, sscfg, scored):
    c, first, _, _, root = sscfg
    before = {r.segment_id: (r.run_id, r.features_hash) for r in _scores(spark, c, first.version).collect()}
    video = make_video(SPEC, 3)
    iv, f = video.sequences["text"]
    changed = write_csd(root / "changed_text.csd", ROOTS["text"], {video.video_id: (iv, f + 1.0)})
    CsdIngestor(spark, c).run_csd(SOURCE, [changed])  # the video's text features replaced
    result = score_segments(spark, c)
    assert (result.selected, result.scored, result.failed) == (SPEC.segments, SPEC.segments, 0)
    after = {r.segment_id: (r.run_id, r.features_hash) for r in _scores(spark, c, first.version).collect()}
    assert after.keys() == before.keys()
    redone = {k for k in after if after[k] != before[k]}
    assert redone == {f"{video.video_id}[{i}]" for i in range(SPEC.segments)}
    assert {after[k][0] for k in redone} == {result.run_id}


def test_a_run_broken_after_its_first_chunk_resumes_to_the_tables_of_a_clean_run(spark, sscfg, scored, monkeypatch):
    from delta.tables import DeltaTable

    c, first, _, _, _ = sscfg
    version = first.version  # its tables are those of clean runs (the tests above end with one)
    columns = ["segment_id", "video_id", "start_s", "end_s", "dominant_emotion", "steps", "label_content_hash",
               "features_hash", *EMOTIONS]
    clean = sorted(tuple(r[k] for k in columns) for r in _scores(spark, c, version).collect())
    clean_failures = sorted((r.segment_id, r.reason_code) for r in _failures(spark, c, version).collect())
    for table in ("segment_emotion_scores", "segment_scoring_failures"):
        DeltaTable.forName(spark, c.table(table)).delete(F.col("model_version") == version)

    commits = []
    real = SegmentScorer._commit

    def commit_then_break(self, staged, plan, run_id):
        commits.append(real(self, staged, plan, run_id))
        raise RuntimeError("killed after a chunk's commit")

    monkeypatch.setattr(SegmentScorer, "_commit", commit_then_break)
    with pytest.raises(RuntimeError, match="killed after a chunk's commit"):
        score_segments(spark, c)
    monkeypatch.undo()
    broken = spark.table(c.table("scoring_runs")).where(F.col("model_version") == version).orderBy(
        F.desc("started_at")).first()
    assert broken.status == "failed" and "killed after a chunk's commit" in broken.message
    partial = _scores(spark, c, version).count() + _failures(spark, c, version).count()
    assert len(commits) == 1 and partial == sum(commits[0]) and 0 < partial < len(clean) + len(clean_failures)

    resumed = score_segments(spark, c)
    assert resumed.selected == len(clean) + len(clean_failures) - partial == resumed.scored + resumed.failed
    assert resumed.skipped == partial
    again = sorted(tuple(r[k] for k in columns) for r in _scores(spark, c, version).collect())
    assert len(again) == len(clean)
    for a, b in zip(again, clean):
        assert a[:8] == b[:8] and a[8:] == pytest.approx(b[8:], abs=1e-5)
    assert sorted((r.segment_id, r.reason_code) for r in _failures(spark, c, version).collect()) == clean_failures


def _cli_env(c, monkeypatch, spark):
    """`moodlake ...` in this process on this lakehouse and database, with the test's Spark session (which
    the command must not stop)."""
    import os

    from moodlake import spark as spark_module

    for k in [k for k in os.environ if k.startswith(("MOODLAKE", "FLICKR_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MOODLAKE_HOME", str(c.lakehouse.home))
    monkeypatch.setenv("MOODLAKE__LAKEHOUSE__DATABASE", c.lakehouse.database)
    monkeypatch.setenv("MOODLAKE__MLFLOW__ENABLED", "false")
    monkeypatch.setattr(spark_module, "build_spark", lambda cfg, app_name=None: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)


def test_the_score_segments_command_and_the_readme_section(spark, sscfg, scored, monkeypatch, capsys, fresh_logging):
    """The command line (arguments, summary line, exit codes), and the commands and SQL of the README's
    section on scoring video segments, on this lakehouse."""
    import shlex

    from moodlake import cli
    from moodlake.config import repo_root

    c, first, (second, _), _, _ = sscfg
    args = cli.parse_args(["score", "segments", "--version", "williams_blstm-0123", "--source", "a", "--limit", "5"])
    assert (args.target, args.version, args.source, args.limit) == ("segments", "williams_blstm-0123", ["a"], 5)
    assert cli.parse_args(["score"]).target == cli.parse_args(["score", "--since", "2026-12-01"]).target == "posts"
    assert cli.parse_args(["score", "segments"]).version == "production"

    text = (repo_root() / "README.md").read_text()
    page = text[text.index("### Scoring video segments"):text.index("### Configuration")]
    commands = [ln.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", page, re.S)
                for ln in block.splitlines() if ln.strip().startswith("moodlake ")]
    assert "moodlake score segments" in commands and "moodlake views" in commands
    _cli_env(c, monkeypatch, spark)
    out = {}
    for line in commands:
        # promote the production version again; score the other one in the shadow
        version = first.version if line.startswith("moodlake models promote") else second
        argv = [w.replace("williams_blstm-0123abcd4567", version).replace("cmu-mosei", SOURCE)
                for w in shlex.split(line)[1:]]
        assert cli.main(argv) == 0, line
        out[line] = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(rf"score segments {first.version} run \S+: 0 new segments \([\d,]+ already scored with the "
                        r"same features\)", out["moodlake score segments"]), out
    shadow = [ln for ln in out.values() if ln.startswith(f"score segments {second} run ")]
    assert len(shadow) == 1 and re.search(r": \d+ segments selected = \d+ scored \+ 6 failed; ", shadow[0]), out
    assert f"{c.lakehouse.database}.segment_emotions" in out["moodlake views"]
    run = _run(spark, c, shadow[0].split(" run ", 1)[1].split(":", 1)[0])
    assert (run.production, run.target, run.status) == (False, "segments", "succeeded")
    view = spark.table(f"{c.lakehouse.database}.segment_emotions")
    assert view.where(F.col("model_version") == second).count() == 0 < view.count()  # production only

    pieces = [p for block in re.findall(r"```sql\n(.*?)```", page, re.S) for p in block.split(";")]
    code = ["\n".join(ln for ln in p.splitlines() if not ln.strip().startswith("--")).strip() for p in pieces]
    statements = [s for s in code if s]
    assert len(statements) >= 3
    for sql in statements:
        sql = (sql.replace("moodlake.", f"{c.lakehouse.database}.").replace("cmu-mosei", SOURCE)
               .replace("williams_blstm-0123abcd4567", second).replace("'-3g5yACwYnA'", "'synth0000'"))
        assert spark.sql(sql).collect(), sql

    assert cli.main(["score", "segments", "--version", "williams_blstm-nope"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"moodlake: no model version 'williams_blstm-nope' in {c.lakehouse.database}.models")
    assert cli.main(["score", "segments", "--since", "2026-12-01"]) == 2
    assert "--since and --until select posts" in capsys.readouterr().err


def _post_model(spark, c, root, seed):
    """A tiny registered character CNN of posts (sentiment2): (version, folder)."""
    import json

    import torch

    from moodlake.models import get_model

    torch.manual_seed(seed)
    kwargs = {"num_classes": 2, "alphabet_size": 12, "embedding_dim": 4, "channels": 3}
    vocab = root / "vocab.json"
    vocab.write_text(json.dumps({"words": [], "tags": [], "chars": list("abcdefghij")}))
    config = {"model": "stpierre_char", "build_kwargs": kwargs, "labels": ["negative", "positive"],
              "label_set": "sentiment2", "multi_label": False, "task": "classification",
              "dataset": {"name": "posts", "version": "p0", "path": str(root)}, "recipe": {}, "model_kwargs": {},
              "run_id": f"post-run-{seed}", "metrics": {}, "code_revision": "test", "preprocessing": "none"}
    version, folder = registry.save_model(get_model("stpierre_char", **kwargs).state_dict(), config, vocab,
                                          c.models_root)
    registry.register(spark, c, version, folder, {**config, "version": version})
    return version, folder


def _production(spark, c):
    return sorted((r.model, r.version) for r in spark.table(c.table("models")).where("stage = 'production'").collect())


def test_production_is_scoped_by_task(spark, sscfg, tmp_path):
    c, first, (second, second_path), _, _ = sscfg
    post, post_path = _post_model(spark, c, tmp_path, 1)
    other_post, other_post_path = _post_model(spark, c, tmp_path, 2)
    assert registry.promote(spark, c, post) == registry.POSTS
    assert _production(spark, c) == sorted([("stpierre_char", post), ("williams_blstm", first.version)])
    # a model of video segments promoted: the post model stays production, and `moodlake score` uses it
    assert registry.promote(spark, c, second) == registry.SEGMENTS
    assert _production(spark, c) == sorted([("stpierre_char", post), ("williams_blstm", second)])
    assert str(registry.resolve(spark, c, "production")) == str(post_path)
    assert Scorer(spark, c).model("production")[0] == str(post_path)
    assert SegmentScorer(spark, c).model("production")[:1] == (str(second_path),)
    assert str(registry.resolve(spark, c, "production", registry.SEGMENTS)) == str(second_path)
    # and the other way round
    registry.promote(spark, c, other_post)
    assert _production(spark, c) == sorted([("stpierre_char", other_post), ("williams_blstm", second)])
    assert SegmentScorer(spark, c).model("production")[0] == str(second_path)
    assert Scorer(spark, c).model("production")[0] == str(other_post_path)
    # each command scores its own kind of model only
    with pytest.raises(ScoringError, match=f"model {first.version} scores video segments, not posts"):
        Scorer(spark, c).model(first.version)
    with pytest.raises(ScoringError, match=f"model {post} \\(stpierre_char\\) scores posts, not video segments"):
        SegmentScorer(spark, c).model(post)
    registry.promote(spark, c, first.version)  # back as the other tests expect
    assert _production(spark, c) == sorted([("stpierre_char", other_post), ("williams_blstm", first.version)])


def test_a_scoring_runs_table_of_an_older_lakehouse_gains_the_target_column(spark, cfg):
    """ensure_tables adds a column a table was released without (TableSpec.added): old rows hold NULL."""
    from moodlake.tables import SCORING_RUNS, ensure_tables

    c = dataclasses.replace(cfg, lakehouse=dataclasses.replace(cfg.lakehouse, database="moodlake_migrate_test"))
    spark.sql(f"DROP TABLE IF EXISTS {c.table('scoring_runs')}")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {c.lakehouse.database}")
    old = [f for f in SCORING_RUNS.schema.fields if f.name != "target"]
    import datetime as dt

    t = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    row = ("r1", "v1", True, None, None, None, "succeeded", t, t, 1, 1, 0, 0, 1.0, 1.0, None, "h", 1)
    spark.createDataFrame([row], T.StructType(old)).write.format("delta").saveAsTable(c.table("scoring_runs"))
    ensure_tables(spark, c, (SCORING_RUNS,))
    ensure_tables(spark, c, (SCORING_RUNS,))  # again: nothing to add
    table = spark.table(c.table("scoring_runs"))
    assert table.columns == [f.name for f in SCORING_RUNS.schema.fields]
    assert [r.target for r in table.collect()] == [None]
    comments = {r.col_name: r.comment for r in spark.sql(f"DESCRIBE {c.table('scoring_runs')}").collect()}
    assert comments["target"] == SCORING_RUNS.schema["target"].metadata["comment"]
