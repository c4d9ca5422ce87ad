"""moodlake.storage: plain paths and file:// URIs (with spaces) through pyarrow's filesystems; the
dataset, registry and checkpoint code on file:// URIs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moodlake import storage


@pytest.fixture
def root(tmp_path) -> Path:
    d = tmp_path / "a lake with spaces"
    d.mkdir()
    return d


def test_uri_parts_keep_scheme_and_plain_paths(root):
    uri = f"file://{root}/datasets"
    assert storage.join(uri, "ds", "v1") == f"file://{root}/datasets/ds/v1"
    assert storage.parent(storage.join(uri, "ds")) == uri and storage.name(uri + "/ds/") == "ds"
    assert storage.join(str(root), "x") == str(root / "x")  # a plain path stays plain
    assert storage.native(str(root)) == root and storage.native(uri) == uri
    assert storage.join("s3a://bucket/lake", "models") == "s3a://bucket/lake/models"
    assert storage.spark_url(str(root)) == f"file://{root}"  # raw, as Hadoop takes it: no %20
    assert storage.local_path(uri) == root / "datasets"
    with pytest.raises(ValueError):
        storage.local_path("s3a://bucket/lake")
    with pytest.raises(ValueError):
        storage.local_path("file://otherhost/lake")


@pytest.mark.parametrize("form", ["uri", "plain"])
def test_read_write_list_rename_delete(root, form):
    base = f"file://{root}" if form == "uri" else str(root)
    f = storage.join(base, "sub dir", "manifest.json")
    assert not storage.exists(f)
    with pytest.raises(FileNotFoundError):
        storage.read_text(f)
    storage.write_text(f, '{"a": 1}')
    assert (root / "sub dir" / "manifest.json").read_text() == '{"a": 1}'  # really there, with the space
    assert storage.exists(f) and storage.read_text(f) == '{"a": 1}'
    assert storage.listdir(storage.join(base, "sub dir")) == ["manifest.json"]  # no temporary left
    assert storage.listdir(storage.join(base, "missing")) == []
    storage.append_text(storage.join(base, "m.jsonl"), "1\n")
    storage.append_text(storage.join(base, "m.jsonl"), "2\n")
    assert storage.read_text(storage.join(base, "m.jsonl")).splitlines() == ["1", "2"]
    storage.rename(storage.join(base, "sub dir"), storage.join(base, "moved"))
    assert storage.is_dir(storage.join(base, "moved")) and not storage.exists(storage.join(base, "sub dir"))
    storage.delete(storage.join(base, "moved"))
    assert not (root / "moved").exists()
    storage.delete(storage.join(base, "moved"))  # missing_ok
    with pytest.raises(FileNotFoundError):
        storage.delete(storage.join(base, "moved"), missing_ok=False)


def test_torch_files_through_local_output_and_copy(root):
    uri = f"file://{root}/run/checkpoints/epoch-0001.pt"
    with storage.local_output(uri) as tmp:
        torch.save({"w": torch.arange(3)}, tmp)
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["epoch-0001.pt"]
    with storage.local_copy(uri) as local:
        assert torch.load(local, weights_only=True)["w"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError):
        with storage.local_output(storage.join(f"file://{root}", "broken.pt")):
            raise RuntimeError("the writer failed")
    assert not (root / "broken.pt").exists()  # nothing half-written published


def test_upload_copies_folders(root, tmp_path):
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "x.txt").write_text("x")
    storage.upload(src, f"file://{root}/dest")
    assert (root / "dest" / "inner" / "x.txt").read_text() == "x"


def test_registry_and_checkpoints_on_file_uris(root):
    """A model registered under a file:// models root (with spaces) loads back from its URI; a
    training run's checkpoints are found and read through the URI."""
    from torch import nn

    from moodlake.train import loop, registry

    vocab = f"file://{root}/datasets/ds/v1/vocab.json"
    storage.write_text(vocab, '{"words": [], "tags": [], "chars": []}')
    state = nn.Linear(3, 2).state_dict()
    config = {"model": "tiny", "build_kwargs": {}}
    version, folder = registry.save_model(state, config, vocab, f"file://{root}/models")
    assert isinstance(folder, str) and folder == f"file://{root}/models/{version}"
    assert sorted(p.name for p in (root / "models" / version).iterdir()) == ["config.json", "model.safetensors",
                                                                              "vocab.json"]
    assert registry.save_model(state, config, vocab, f"file://{root}/models") == (version, folder)  # idempotent
    run = f"file://{root}/training/run-1"
    assert loop.latest_checkpoint(run) is None
    for epoch in (1, 2):
        loop._save({"epoch": epoch}, storage.join(run, loop.CHECKPOINTS, f"epoch-{epoch:04d}.pt"))
    last = loop.latest_checkpoint(run)
    assert last == f"{run}/checkpoints/epoch-0002.pt" and loop._load(last, "cpu")["epoch"] == 2
    # plain local roots keep returning Paths, as before
    _, plain = registry.save_model(state, config, vocab, str(root / "plain models"))
    assert isinstance(plain, Path) and (plain / "config.json").exists()
