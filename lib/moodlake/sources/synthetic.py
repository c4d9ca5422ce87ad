"""Seeded synthetic posts whose image, text and tags carry a learnable emotion signal.

Post ``i`` of seed ``s`` is a pure function of ``(s, i)``: any process can rebuild it (the
local Flickr test server serves the same posts lazily), and a re-run lands identical rows.

The signal: each label has a colour and a shape family (image), a lexicon (text) and a pool
of scene tags (tags). Each modality independently shows the post's true label with
probability ``*_signal`` and another label otherwise, so every single modality is an imperfect
predictor and a model that fuses modalities does better than any one alone. Posts lack text,
tags or (rarely) the image at realistic rates: on Flickr many photos have no description or
no tags.
"""
from __future__ import annotations

import colorsys
import datetime as dt
import io
from dataclasses import dataclass, field

import numpy as np

from moodlake import records
from moodlake.ingest import ExecContext, Source, WorkItem

# Words that evoke each emotion (the union of the label sets in conf/base/labels.yaml).
LEXICON = {
    "amusement": "funny hilarious laugh lol silly joke giggle goofy playful comic prank grin",
    "awe": "majestic breathtaking vast stunning magnificent sublime towering epic infinite grand wondrous",
    "contentment": "calm peaceful cozy relaxed serene gentle quiet warm comfy mellow tranquil",
    "excitement": "thrilling wow amazing adrenaline rush wild party hyped electric fireworks victory",
    "anger": "furious outraged angry rage unfair disgusting protest livid hostile betrayed fuming",
    "disgust": "gross nasty revolting filthy rotten vile slimy stench putrid mold sickening",
    "fear": "scary terrifying creepy haunted dark panic dread nightmare eerie threat danger",
    "sadness": "sad lonely grief tears mourning loss goodbye gloomy heartbroken miss sorrow",
    "joy": "happy joyful delighted cheerful smile love wonderful bright celebrate blessed glad",
    "surprise": "unexpected suddenly shocked astonished whoa unbelievable twist stunned surprising",
    "neutral": "today photo picture another taken shot view some around stuff thing",
    "positive": "happy wonderful love beautiful great smile bright amazing glad proud",
    "negative": "sad awful terrible angry hate broken gloomy scary nasty lonely",
}
SCENES = {
    "amusement": "clown circus dog costume cartoon puppy meme fun",
    "awe": "mountain aurora canyon galaxy waterfall cathedral glacier skyline",
    "contentment": "garden tea beach hammock sunset cat blanket lake",
    "excitement": "concert rollercoaster stadium race festival skydiving surf party",
    "anger": "protest riot traffic fight police strike crowd graffiti",
    "disgust": "garbage rot insects mold trash sewer dump spill",
    "fear": "storm spider graveyard fog abandoned shadow snake cliff",
    "sadness": "rain funeral empty tears ruins alone winter hospital",
    "joy": "wedding birthday baby friends picnic balloons dance summer",
    "surprise": "gift magic reveal fireworks lottery prank sudden confetti",
    "neutral": "street building car table window road chair wall",
    "positive": "sunshine flowers friends holiday beach smile puppy wedding",
    "negative": "storm ruins trash funeral rain riot fog abandoned",
}
FILLER = ("the a this my our at on in with and of from to we it was is just so very after before "
          "morning evening weekend trip city park home walk day night old new little big first last "
          "camera lens light colors time people family friend place moment look").split()
GENERIC_TAGS = "nikon canon iphone 2013 2014 photography travel nature street city explore flickr".split()


def _words(label: str, table: dict) -> list[str]:
    return table.get(label, "").split() or [f"{label}{k}" for k in range(8)]


@dataclass(frozen=True)
class SyntheticSpec:
    labels: tuple[str, ...]
    seed: int = 7
    image_signal: float = 0.7
    text_signal: float = 0.7
    tags_signal: float = 0.7
    p_text_missing: float = 0.35
    p_tags_missing: float = 0.30
    p_image_missing: float = 0.02
    width: int = 320
    height: int = 240


@dataclass(frozen=True)
class SyntheticPost:
    index: int
    label: str
    owner: str
    title: str | None
    description: str | None
    tags: tuple[str, ...]
    image: bytes | None
    taken_at: dt.datetime
    uploaded_at: dt.datetime
    shown: dict = field(default_factory=dict)  # the label each modality actually shows


def _render(rng: np.random.Generator, k: int, n_labels: int, width: int, height: int) -> bytes:
    """A JPEG whose hue, brightness and shapes depend on label index ``k`` (plus noise)."""
    from PIL import Image, ImageDraw, ImageFilter

    hue = (k / n_labels + rng.normal(0, 0.03)) % 1.0
    light = 0.35 + 0.3 * ((k * 7) % n_labels) / max(1, n_labels - 1)
    base = np.array(colorsys.hls_to_rgb(hue, light, 0.65)) * 255
    grad = np.linspace(0.75, 1.15, height)[:, None, None]
    img = np.clip(base[None, None, :] * grad + rng.normal(0, 18, (height, width, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    accent = tuple(int(c * 255) for c in colorsys.hls_to_rgb((hue + 0.5) % 1.0, 1 - light, 0.8))
    shape = k % 4
    for _ in range(int(rng.integers(3, 8))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(10, 40))
        if shape == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=accent)
        elif shape == 1:
            draw.rectangle([x - r, y - r // 2, x + r, y + r // 2], fill=accent)
        elif shape == 2:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=accent)
        else:
            draw.line([(x - r, y - r), (x + r, y + r)], fill=accent, width=max(3, r // 4))
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 1.2))))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(70, 92)))
    return buf.getvalue()


def synthetic_post(index: int, spec: SyntheticSpec, with_image: bool = True) -> SyntheticPost:
    """Post ``index`` of ``spec.seed``. The image has its own random stream, so
    ``with_image=False`` (cheap: no rendering) gives exactly the same metadata."""
    rng = np.random.default_rng([spec.seed, index])
    n = len(spec.labels)
    k = int(rng.integers(n))
    label = spec.labels[k]

    def shown(signal: float) -> int:
        return k if rng.random() < signal else int(rng.integers(n))

    ki, kt, kg = shown(spec.image_signal), shown(spec.text_signal), shown(spec.tags_signal)
    has_image = rng.random() >= spec.p_image_missing
    has_text = rng.random() >= spec.p_text_missing
    has_tags = rng.random() >= spec.p_tags_missing

    image = render_image(index, spec, ki) if has_image and with_image else None
    title = description = None
    if has_text:
        lex = _words(spec.labels[kt], LEXICON)
        words = list(rng.choice(FILLER, size=int(rng.integers(6, 24))))
        for _ in range(int(rng.integers(1, 4))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(lex)))
        description = " ".join(words).capitalize() + "."
        if rng.random() < 0.1:
            description += ' <a href="https://example.org/p">more</a>'
        title = " ".join(rng.choice(FILLER, size=int(rng.integers(1, 4)))).title()
        if rng.random() < 0.5:
            title += " " + str(rng.choice(lex))
    tags: tuple[str, ...] = ()
    if has_tags:
        pool = _words(spec.labels[kg], SCENES)
        chosen = list(rng.choice(pool, size=int(rng.integers(1, 5)), replace=False))
        chosen += list(rng.choice(GENERIC_TAGS, size=int(rng.integers(0, 4)), replace=False))
        rng.shuffle(chosen)
        tags = tuple(str(t) for t in chosen)
    uploaded = dt.datetime(2012, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=int(rng.integers(0, 4 * 365 * 86400)))
    taken = uploaded - dt.timedelta(seconds=int(rng.integers(0, 30 * 86400)))
    owner = f"{int(rng.integers(10_000_000, 99_999_999))}@N0{int(rng.integers(0, 9))}"
    return SyntheticPost(index, label, owner, title, description, tags, image, taken, uploaded,
                         {"image": spec.labels[ki] if has_image else None, "text": spec.labels[kt],
                          "tags": spec.labels[kg]})


def render_image(index: int, spec: SyntheticSpec, shown_index: int) -> bytes:
    """The JPEG of post ``index`` showing label ``shown_index`` (its own random stream)."""
    return _render(np.random.default_rng([spec.seed, index, 1]), shown_index, len(spec.labels), spec.width, spec.height)


@dataclass
class SyntheticSource(Source):
    """``moodlake ingest synthetic --n N``: posts 0..N-1 of a seed, generated on the executors."""

    n: int
    spec: SyntheticSpec
    label_set_name: str = "mikels8"
    name: str = "synthetic"

    def describe(self) -> dict:
        return {"source": self.name, "n": self.n, "seed": self.spec.seed, "label_set": self.label_set_name}

    def work_items(self, ctx=None):
        for i in range(self.n):
            yield WorkItem(f"seed={self.spec.seed}/post={i}", f"s{self.spec.seed}-{i:07d}", {"i": i})

    def process(self, item: WorkItem, ctx: ExecContext):
        p = synthetic_post(item.payload["i"], self.spec)
        row = records.post_row(
            source=self.name, source_id=item.source_id, owner=p.owner, title=p.title, description=p.description,
            tags=p.tags, image=p.image, image_source=f"synthetic://{self.spec.seed}/{p.index}.jpg",
            **ctx.image_limits,
            taken_at=p.taken_at, uploaded_at=p.uploaded_at,
            label_set_name=self.label_set_name, label_set=self.spec.labels, label=p.label,
            raw={"format": "synthetic", "seed": self.spec.seed, "index": p.index, "shown": p.shown},
        )
        return [("post", row)]
