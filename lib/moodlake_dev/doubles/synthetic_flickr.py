"""The local Flickr test server filled with synthetic posts, built lazily from (seed, index).

    python -m moodlake_dev.doubles.synthetic_flickr --n 5000 [--seed 7] [--port 0] [--key K --secret S]

prints the REST URL and serves until interrupted; used by ``make bench`` and ``make demo`` to
drive the real flickrapi client over HTTP with no Internet access.
"""
from __future__ import annotations

import argparse
import functools
import sys

from moodlake.sources.synthetic import SyntheticSpec, render_image, synthetic_post
from moodlake_dev.doubles.fake_flickr import FakeCorpus, FakeFlickrServer, FakePhoto, serve_forever

BASE_ID = 5_000_000_000


def photo_id(index: int) -> str:
    return str(BASE_ID + index)


def synthetic_photo(index: int, spec: SyntheticSpec, image_pool: list[bytes] | None = None) -> FakePhoto:
    """Post ``index`` as a fake Flickr photo; its JPEG is rendered only when downloaded (or taken
    from ``image_pool``, which keeps a benchmark's server from spending its CPU on drawing)."""
    p = synthetic_post(index, spec, with_image=False)
    image = None
    if p.shown["image"] is not None:
        if image_pool:
            image = image_pool[index % len(image_pool)]
        else:
            image = functools.partial(render_image, index, spec, spec.labels.index(p.shown["image"]))
    return FakePhoto(
        id=photo_id(index), secret=f"{index:010x}", owner_nsid=p.owner, owner_username=f"user{index % 997}",
        title=p.title or "", description=p.description or "", tags=list(p.tags),
        date_taken=p.taken_at.strftime("%Y-%m-%d %H:%M:%S"), date_uploaded=int(p.uploaded_at.timestamp()),
        width=spec.width, height=spec.height, image=image,
    )


def synthetic_corpus(n: int, spec: SyntheticSpec, image_pool: int = 0) -> FakeCorpus:
    """Photos ``photo_id(0) .. photo_id(n-1)``, built on first request (``image_pool`` > 0:
    that many distinct images rendered up front and shared round-robin)."""
    pool = [render_image(i, spec, i % len(spec.labels)) for i in range(image_pool)] or None

    @functools.lru_cache(maxsize=8192)
    def provider(pid: str) -> FakePhoto | None:
        if not pid.isdigit():
            return None
        i = int(pid) - BASE_ID
        return synthetic_photo(i, spec, pool) if 0 <= i < n else None

    return FakeCorpus(provider=provider, ids_for_search=[photo_id(i) for i in range(n)])


def main(argv: list[str] | None = None) -> int:
    from moodlake.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label-set", default="mikels8")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--key", default="demo-key")
    ap.add_argument("--secret", default="demo-secret")
    ap.add_argument("--image-pool", type=int, default=0, help="render this many images up front and reuse them")
    args = ap.parse_args(argv)
    spec = SyntheticSpec(labels=load_config().label_set(args.label_set), seed=args.seed)
    server = FakeFlickrServer(synthetic_corpus(args.n, spec, args.image_pool), valid_keys={args.key: args.secret}, port=args.port)
    serve_forever(server)  # prints the REST URL, serves until SIGINT / SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
