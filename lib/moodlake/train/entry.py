"""The torchrun entry point: ``torchrun --nproc_per_node=N -m moodlake.train.entry SPEC.json``.

Every process trains (:func:`moodlake.train.loop.train_worker`); rank 0 writes ``result.json``
beside the spec for the launcher to read.
"""
import json
import os
import sys
from pathlib import Path

from moodlake.train.loop import train_worker


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun ... -m moodlake.train.entry SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(args[0])
    result = train_worker(json.loads(spec_path.read_text()))
    if int(os.environ.get("RANK", 0)) == 0:
        (spec_path.parent / "result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
