"""Starting the process group so that ``destroy_process_group`` really ends it.

``torch.distributed.nn.functional`` (torch 2.14) binds ``group.WORLD`` as the default ``group``
argument of its functions when it is first imported, and ``torch._dynamo`` (which torchvision
imports) imports it. Imported after ``init_process_group``, those defaults hold the process group,
so ``destroy_process_group`` leaves it alive: gloo's worker threads run on into interpreter
shutdown, and one that drops the last reference to a finished collective's tensor needs the GIL
there and aborts the process ("terminate called without an active exception", SIGABRT) after
everything else succeeded (``tests/data/test_ddp.py`` failed so in 3 of 20 runs). Importing the
module first binds ``None`` instead.
"""
from __future__ import annotations

import torch.distributed as dist


def init_process_group(backend: str, **kwargs) -> None:
    """``dist.init_process_group(backend, **kwargs)``, with ``torch.distributed.nn`` imported first."""
    import torch.distributed.nn  # noqa: F401  (before init: see the module docstring)

    dist.init_process_group(backend, **kwargs)
