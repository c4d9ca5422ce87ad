"""The torchrun entry point: ``torchrun --nproc_per_node=N -m moodlake.train.entry SPEC.json``.

Every process trains (:func:`moodlake.train.loop.train_worker`); rank 0 writes ``result.json``
beside the spec for the launcher to read.
"""
import json
import os
import sys

from moodlake import storage
from moodlake.train.loop import train_worker


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun ... -m moodlake.train.entry SPEC.json", file=sys.stderr)
        return 2
    spec_path = args[0]  # a path or a filesystem URI (moodlake.storage)
    result = train_worker(json.loads(storage.read_text(spec_path)))
    if int(os.environ.get("RANK", 0)) == 0:
        storage.write_text(storage.join(storage.parent(spec_path), "result.json"), json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
