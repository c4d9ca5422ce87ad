"""Two real DDP processes (gloo) read the uneven split with a collective after every batch."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moodlake.data.loader import PostLoader
from moodlake.train.distributed import init_process_group
from tests.data.conftest import K

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]


def _rank_main(rank: int, world: int, init_file: str, url: str, out: str, drop_last: bool) -> None:
    init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                       timeout=dt.timedelta(seconds=60))
    try:
        loader = PostLoader(url, batch_size=16, num_labels=K, drop_last=drop_last)  # rank and world from dist
        epochs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            ids = []
            for batch in loader:
                rows = torch.tensor([len(batch["post_id"])])
                dist.all_reduce(rows)  # a rank with fewer batches would leave the others waiting here
                ids += batch["post_id"]
            epochs.append(ids)
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"rank": loader.rank, "world": loader.world_size, "len": len(loader), "epochs": epochs}))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_ranks_take_equal_batches_from_uneven_shards(uneven_split, tmp_path, drop_last):
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), uneven_split.url, str(tmp_path), drop_last), nprocs=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in results] == [(0, 2), (1, 2)]
    assert results[0]["len"] == results[1]["len"] == (3 if drop_last else 9)  # shards of 130 and 55 rows
    for epoch in (0, 1):
        shards = [r["epochs"][epoch] for r in results]
        assert not set(shards[0]) & set(shards[1])
        if drop_last:
            assert [len(s) for s in shards] == [48, 48]
        else:
            assert sorted(shards[0] + shards[1]) == sorted(uneven_split.posts)
    assert results[0]["epochs"][0] != results[0]["epochs"][1]  # reshuffled by set_epoch
