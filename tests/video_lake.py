"""The ``video_lake`` fixture (imported by tests/conftest.py): one synthetic video set ingested once,
and its segment dataset built once, for the tests that only read them.

Tests that check idempotency, malformed files or a changed video, or that write to these tables,
ingest their own files under a source of their own instead (tests/test_video_ingest.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from moodlake.config import Config
    from moodlake.data.build import DatasetBuild
    from moodlake.sources.synthetic_video import SyntheticVideoFiles, SyntheticVideoSpec

SOURCE = "test-video-lake"
MAXLEN = 8
# 40 videos of 8 segments of 1-2 s (3-10 words each: some shorter than MAXLEN, some cut to it);
# the split (by video, a hash of "<SOURCE>:<video_id>") puts 26 / 7 / 7 videos, 208 / 56 / 56
# segments, in train / val / test: enough to train the Williams BLSTM on.
VIDEOS, SEGMENTS = 40, 8
SPLIT = dict(scheme="hash", train=0.6, val=0.2, test=0.2, seed=21)


@dataclasses.dataclass(frozen=True)
class VideoLake:
    source: str                  # the source name the files were ingested under
    spec: SyntheticVideoSpec     # what they were written from
    files: SyntheticVideoFiles   # what write_synthetic_videos returned (labels, audio, visual, text; .features)
    ghost: Path                  # an extra labels file: 2 segments of video 'ghost', which has no features
    cfg: Config                  # the session's cfg plus the segment dataset definition "video"
    build: DatasetBuild          # build_segment_dataset(spark, cfg, "video")


@pytest.fixture(scope="session")
def video_lake(spark, cfg, tmp_path_factory) -> VideoLake:
    """``spec.videos`` synthetic videos (and the ghost's labels) ingested as ``source``, and the segment
    dataset ``video`` of ``cfg`` built from them: the ``synthetic-video`` definition of conf/base
    with that source, :data:`SPLIT` and ``maxlen`` :data:`MAXLEN`, under its own datasets root.
    The ghost's 2 segments are excluded (``video_has_no_text_features``); every split is non-empty."""
    from moodlake.config import SplitSpec, load_config
    from moodlake.data.segments import build_segment_dataset
    from moodlake.sources.csd import write_csd
    from moodlake.sources.synthetic_video import EMOTIONS, LABELS_ROOT, SyntheticVideoSpec, write_synthetic_videos
    from moodlake.video_ingest import CsdIngestor

    root = tmp_path_factory.mktemp("video_lake")
    spec = SyntheticVideoSpec(videos=VIDEOS, segments=SEGMENTS, segment_s=(1.0, 2.0), pause_s=(0.1, 0.3), seed=11)
    files = write_synthetic_videos(root / "csd", spec)
    ghost = write_csd(root / "csd" / "ghost_labels.csd", LABELS_ROOT,
                      {"ghost": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.zeros((2, len(EMOTIONS)), np.float32))},
                      {"dimension names": list(EMOTIONS)})
    CsdIngestor(spark, cfg).run_csd(SOURCE, files.features, [files.labels, ghost])

    d = load_config(environ={}).dataset("synthetic-video")
    d = dataclasses.replace(d, sources=(SOURCE,), split=SplitSpec(**SPLIT),
                            segments=dataclasses.replace(d.segments, maxlen=MAXLEN))
    c = dataclasses.replace(cfg, datasets=dataclasses.replace(
        cfg.datasets, root=str(root / "datasets"), definitions={**cfg.datasets.definitions, "video": d}))
    return VideoLake(SOURCE, spec, files, ghost, c, build_segment_dataset(spark, c, "video"))
