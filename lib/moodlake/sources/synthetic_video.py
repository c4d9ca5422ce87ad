"""Seeded synthetic videos written as real CMU-MultimodalSDK computational sequences (``.csd``).

One labels file and three feature files, in the layout :mod:`moodlake.sources.csd` reads, shaped like
CMU-MOSEI's: segment labels (the 6 emotion intensities in [0, 3] of ``models/williams.py``), audio
at ~100 Hz (74-d, COVAREP-like), visual at ~30 Hz (35-d, FACET-like) and text per word (300-d,
GloVe-like, words of ~0.3 s). Video ``i`` of seed ``s`` is a pure function of ``(s, i)``.

The signal: each segment's intensity of each emotion is split at random into three parts (a
Dirichlet share each), and each modality shows only its own part, ``part @ W_modality`` (a fixed
projection) plus a per-video offset and per-step noise. One modality alone recovers a third of the
intensity on average, so a model that fuses the three (early fusion: Williams et al.) can recover it
whole and beats every unimodal one. Steps outside segments (audio and visual run through the pauses)
are offset and noise only.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlake.sources.csd import write_csd
from moodlake.tables import SEGMENT_EMOTIONS

# models/williams.py EMOTIONS, the columns of moodlake.segment_emotion_scores (tests/test_csd.py checks
# they stay equal; importing the model would import torch to write a few files)
EMOTIONS = SEGMENT_EMOTIONS
MAX_INTENSITY = 3.0
LABELS_ROOT = "Emotion Labels"
# modality -> root name of its sequence (CMU-MOSEI's names for the feature sets they imitate)
ROOTS = {"audio": "COVAREP", "visual": "FACET 4.2", "text": "glove_vectors"}
MODALITIES = tuple(ROOTS)


@dataclass(frozen=True)
class SyntheticVideoSpec:
    videos: int = 30
    segments: int = 5                               # per video
    segment_s: tuple[float, float] = (2.0, 4.0)     # segment length, uniform
    pause_s: tuple[float, float] = (0.2, 0.8)       # before each segment
    word_s: tuple[float, float] = (0.2, 0.4)        # word length, uniform (~0.3 s)
    audio_hz: float = 100.0
    visual_hz: float = 30.0
    audio_dim: int = 74
    visual_dim: int = 35
    text_dim: int = 300
    p_present: float = 0.5                          # chance an emotion is present in a segment
    share_alpha: float = 2.0                        # Dirichlet concentration of the split across modalities
    noise: float = 0.5                              # per-step noise, in units of the signal's scale
    video_offset: float = 0.2                       # per-video offset (the speaker), same units
    seed: int = 7
    prefix: str = "SYNTH"                           # file names: <prefix>_<labels|audio|visual|text>.csd

    def dims(self, modality: str) -> int:
        return {"audio": self.audio_dim, "visual": self.visual_dim, "text": self.text_dim}[modality]


@dataclass(frozen=True)
class SyntheticVideoFiles:
    labels: Path
    audio: Path
    visual: Path
    text: Path

    @property
    def features(self) -> list[Path]:
        return [self.audio, self.visual, self.text]


@dataclass(frozen=True)
class SyntheticVideo:
    video_id: str
    segments: np.ndarray            # [S, 2] start, end (s)
    intensities: np.ndarray         # [S, 6] in [0, 3]
    parts: dict[str, np.ndarray]    # modality -> [S, 6]: its share of the intensities (they sum to them)
    sequences: dict[str, tuple[np.ndarray, np.ndarray]]  # modality -> (intervals [n, 2], features [n, d])


def video_id(i: int) -> str:
    return f"synth{i:04d}"


def _projection(spec: SyntheticVideoSpec, modality: str) -> np.ndarray:
    """[6, d]: how a modality shows its part of the intensities (fixed per seed)."""
    rng = np.random.default_rng([spec.seed, 1_000_003, MODALITIES.index(modality)])
    return rng.standard_normal((len(EMOTIONS), spec.dims(modality))) / np.sqrt(len(EMOTIONS))


def _steps(end: float, hz: float) -> np.ndarray:
    n = max(1, int(np.ceil(end * hz)))
    starts = np.arange(n, dtype=np.float64) / hz
    return np.stack([starts, starts + 1.0 / hz], 1)


def _words(rng: np.random.Generator, segments: np.ndarray, word_s: tuple[float, float]) -> np.ndarray:
    out = []
    for start, end in segments:
        t = start
        while t < end - 1e-9:
            w = min(rng.uniform(*word_s), end - t)
            out.append((t, t + w))
            t += w
    return np.asarray(out, dtype=np.float64)


def make_video(spec: SyntheticVideoSpec, i: int) -> SyntheticVideo:
    """Video ``i``: its segments, intensities, each modality's share and feature sequences."""
    rng = np.random.default_rng([spec.seed, i])
    seg, t = [], 0.0
    for _ in range(spec.segments):
        t += rng.uniform(*spec.pause_s)
        length = rng.uniform(*spec.segment_s)
        seg.append((t, t + length))
        t += length
    segments = np.asarray(seg, dtype=np.float64)
    end = t + rng.uniform(*spec.pause_s)
    shape = (spec.segments, len(EMOTIONS))
    # MOSEI-like: the mean of three annotators' 0-3 ratings, a multiple of 1/3; absent emotions 0
    present = rng.random(shape) < spec.p_present
    intensities = np.where(present, rng.integers(1, 10, shape) / 3.0, 0.0)
    shares = rng.dirichlet([spec.share_alpha] * len(MODALITIES), shape)  # [S, 6, 3]
    parts = {m: intensities * shares[..., k] for k, m in enumerate(MODALITIES)}
    words = _words(rng, segments, spec.word_s)
    steps = {"audio": _steps(end, spec.audio_hz), "visual": _steps(end, spec.visual_hz), "text": words}
    sequences = {}
    for m in MODALITIES:
        intervals = steps[m]
        mid = intervals.mean(1)
        # the segment each step lies in (-1: a pause)
        which = np.searchsorted(segments[:, 0], mid, side="right") - 1
        inside = (which >= 0) & (mid < segments[np.clip(which, 0, None), 1])
        signal = np.zeros((len(intervals), len(EMOTIONS)))
        signal[inside] = parts[m][which[inside]]
        proj = _projection(spec, m)
        offset = spec.video_offset * rng.standard_normal(spec.dims(m))
        noise = spec.noise * rng.standard_normal((len(intervals), spec.dims(m)))
        sequences[m] = (intervals, (signal @ proj + offset + noise).astype(np.float32))
    return SyntheticVideo(video_id(i), segments, intensities, parts, sequences)


def _metadata(spec: SyntheticVideoSpec, description: str, names: list[str]) -> dict:
    return {
        "computational sequence description": description,
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": "MoodLake synthetic video",
        "dataset version": "1.0",
        "creator": "moodlake.sources.synthetic_video",
        "contact": "",
        "dataset bib citation": "",
        "featureset bib citation": "",
        "md5": None,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"moodlake:synthetic-video:{spec.seed}:{description}")),
        "dimension names": names,
        "seed": spec.seed,
    }


def write_synthetic_videos(folder: str | Path, spec: SyntheticVideoSpec = SyntheticVideoSpec()) -> SyntheticVideoFiles:
    """Write the labels and the three feature sequences of ``spec.videos`` videos into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    videos = [make_video(spec, i) for i in range(spec.videos)]
    paths = {"labels": write_csd(
        folder / f"{spec.prefix}_labels.csd", LABELS_ROOT,
        {v.video_id: (v.segments, v.intensities) for v in videos},
        _metadata(spec, "Emotion intensities (0-3) of each segment", list(EMOTIONS)))}
    for m in MODALITIES:
        what = {"audio": f"COVAREP-like acoustic features at {spec.audio_hz:g} Hz",
                "visual": f"FACET-like facial features at {spec.visual_hz:g} Hz",
                "text": "GloVe-like word vectors, one per word"}[m]
        paths[m] = write_csd(folder / f"{spec.prefix}_{m}.csd", ROOTS[m], {v.video_id: v.sequences[m] for v in videos},
                             _metadata(spec, what, [f"{m}_{k:03d}" for k in range(spec.dims(m))]))
    return SyntheticVideoFiles(**paths)
