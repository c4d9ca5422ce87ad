"""DDP is the same training as one process: the training loop's own step (``loop.train_step``, the
adapter's loss, the recipe's optimizer) run for three steps by two gloo processes, each on half of
every global batch, ends with the parameters one process reaches on the whole batches (float32
tolerance), and both ranks hold the same parameters.

This holds when each rank's half has the same number of rows in every term of the loss (DDP averages
the ranks' mean losses' gradients; one process takes the mean over all rows): here every post has
every modality and a label. It also needs no layer that depends on the rank's rows beyond its own:
dropout is off here (each process draws its own masks), and the multitask network's image backbone is
frozen (``image_trainable_stages: 0``, whose BatchNorm layers stay in eval mode). With trainable
BatchNorm layers each rank normalises by its own half's statistics: on CPUs (gloo) that is what DDP
does (``SyncBatchNorm`` runs on GPUs only); on GPUs the training loop converts them to SyncBatchNorm.
No Spark, no dataset: batches as the loader collates them."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moodlake.data.vocab import Vocab
from moodlake.train.adapters import adapter_for
from moodlake.train.distributed import init_process_group
from moodlake.train.loop import _optimizer, train_step

STEPS, GLOBAL_BATCH, LABELS = 3, 8, ("negative", "positive")
VOCAB = Vocab(words=("<PAD>", "<UNK>", *(f"w{i}" for i in range(40))), tags=("<PAD>", "<UNK>", *(f"t{i}" for i in range(20))),
              chars=("<PAD>", "<UNK>", *"abcdefghijklmnopqrstuvwxyz "))
# SGD with momentum: its step is linear in the gradient, so float32 noise stays float32 noise (Adam's
# m / sqrt(v) turns a gradient of 1e-9 and one of -1e-9 into full steps of opposite sign)
RECIPE = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9}

CASES = {
    # a character CNN (St. Pierre): one input, one loss over every labelled row
    "stpierre_char": {"channels": 8, "embedding_dim": 8},
    # the multitask network: seven heads' losses; a random-init image backbone (64 px), frozen, as in the
    # small-image recipe; dropout off
    "multitask": {"pretrained": False, "image_trainable_stages": 0, "dropout": 0.0},
}


def _batches(seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        n = GLOBAL_BATCH
        out.append({"image": torch.randn(n, 3, 64, 64, generator=g),
                    "text": torch.randint(2, len(VOCAB.words), (n, 12), generator=g),
                    "tags": torch.randint(2, len(VOCAB.tags), (n, 4), generator=g),
                    "chars": torch.randint(2, len(VOCAB.chars), (n, 30), generator=g),
                    "mask": torch.ones(n, 3, dtype=torch.bool),
                    "label": torch.randint(0, len(LABELS), (n,), generator=g),
                    "post_id": [f"p{i}" for i in range(n)]})
    return out


def _half(batch: dict, rank: int, world: int) -> dict:
    per = GLOBAL_BATCH // world
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


def _train(name: str, rank: int, world: int) -> dict:
    """The model after STEPS steps of this rank's halves (the whole batches in one process)."""
    adapter = adapter_for(name)
    torch.manual_seed(0)
    model, _ = adapter.build(name, CASES[name], LABELS, VOCAB, multi_label=False, glove=False)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    ddp.train()
    phase = adapter.phases(model)[-1]
    adapter.enter_phase(model, phase)
    optimizer = _optimizer(adapter.param_groups(model, RECIPE["lr"], phase), RECIPE)
    for batch in _batches():
        train_step(ddp, model, adapter, _half(batch, rank, world), optimizer, None, phase)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank_main(rank: int, world: int, name: str, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                       timeout=dt.timedelta(seconds=120))
    try:
        torch.save(_train(name, rank, world), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_take_the_same_steps_as_one(name, tmp_path):
    torch.set_num_threads(1)
    one = _train(name, 0, 1)
    mp.spawn(_rank_main, args=(2, name, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    start, trainable = _initial(name)
    moved = [k for k in trainable if not torch.equal(one[k], start[k])]
    assert len(moved) > len(trainable) // 2, "the steps changed too little of the model to compare"
    for key, expected in one.items():
        for r, got in enumerate(ranks):
            # float32 sums in another order; a rank that normalised its half alone (BatchNorm) or drew
            # its own dropout masks differs by far more (measured: 0.18 and 9e-4)
            assert torch.allclose(got[key].double(), expected.double(), rtol=1e-5, atol=1e-6), (
                name, key, r, float((got[key].double() - expected.double()).abs().max()))
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in one)  # DDP keeps the ranks identical


def _initial(name: str) -> tuple[dict, list[str]]:
    """The model's initial state, and the names of its trainable parameters."""
    torch.manual_seed(0)
    model, _ = adapter_for(name).build(name, CASES[name], LABELS, VOCAB, multi_label=False, glove=False)
    return model.state_dict(), [k for k, p in model.named_parameters() if p.requires_grad]
