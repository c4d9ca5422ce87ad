"""moodlake.storage on ``s3a://`` URIs against a local S3-compatible server (moto's, on 127.0.0.1):
the endpoint from the environment and from Spark's s3a settings, every operation the registry,
datasets and training runs use (keys with spaces), and those callers themselves. No Spark session.

What is written is also checked with boto3, which talks to the server on its own, so a test
cannot pass by reading back something that never reached it."""
from __future__ import annotations

import json
import uuid

import pytest
import torch

from moodlake import storage

pytest.importorskip("moto.server", reason="moto[server] (requirements.txt) is not installed")
boto3 = pytest.importorskip("boto3")


@pytest.fixture
def aws_env(monkeypatch, s3_endpoint, tmp_path):
    """Fake credentials and the endpoint, only through the standard AWS variables; nothing from ~/.aws."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3(aws_env):
    """A boto3 client of the server (the independent observer)."""
    return boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    """A new, empty bucket per test."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object (key: content) in ``bucket`` under ``prefix``, folder markers left out."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if not k.endswith("/")}


def test_s3a_settings_become_the_environment_storage_reads():
    assert storage.s3a_environment({}) == {}
    assert storage.s3a_environment({"spark.hadoop.fs.s3a.endpoint": "https://s3.internal/"}) == {
        "AWS_ENDPOINT_URL_S3": "https://s3.internal"}
    # Hadoop's bare host: the scheme follows connection.ssl.enabled (default true)
    assert storage.s3a_environment({"spark.hadoop.fs.s3a.endpoint": "minio:9000"}) == {
        "AWS_ENDPOINT_URL_S3": "https://minio:9000"}
    assert storage.s3a_environment({"spark.hadoop.fs.s3a.endpoint": "minio:9000",
                                    "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                                    "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}) == {
        "AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_REGION": "eu-west-1"}


def test_spark_conf_gives_executors_the_s3a_endpoint(monkeypatch):
    """The committed k8s configuration's s3a endpoint reaches executors' moodlake.storage (no session)."""
    from moodlake.config import load_config
    from moodlake.spark import spark_conf

    monkeypatch.setattr("moodlake.spark.delta_jars", lambda: ["delta-spark.jar"])
    conf = spark_conf(load_config("k8s", environ={}))
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://s3.internal"
    assert conf["spark.executorEnv.AWS_ENDPOINT_URL_S3"] == "https://s3.internal"
    mine = {"spark.conf": {"spark.executorEnv.AWS_ENDPOINT_URL_S3": "http://mine:1"}}
    conf = spark_conf(load_config("k8s", overrides=mine, environ={}))
    assert conf["spark.executorEnv.AWS_ENDPOINT_URL_S3"] == "http://mine:1"  # an explicit setting wins


def test_one_filesystem_per_bucket_and_endpoint(aws_env, bucket, monkeypatch):
    from pyarrow import fs

    first, path = storage.filesystem(f"s3a://{bucket}/a/b.json")
    assert isinstance(first, fs.S3FileSystem) and path == f"{bucket}/a/b.json"
    assert storage.filesystem(f"s3a://{bucket}/other")[0] is first  # cached
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env + "/")  # another endpoint string: another filesystem
    assert storage.filesystem(f"s3a://{bucket}/other")[0] is not first
    # the generic variable serves when the S3-specific one is unset
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    storage.write_text(f"s3a://{bucket}/generic.txt", "via AWS_ENDPOINT_URL")
    assert storage.read_text(f"s3a://{bucket}/generic.txt") == "via AWS_ENDPOINT_URL"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://nowhere")
    with pytest.raises(ValueError, match="not an http"):
        storage.exists(f"s3a://{bucket}/generic.txt")


def test_read_write_list_rename_delete(bucket, s3):
    base = f"s3a://{bucket}/lake"
    f = storage.join(base, "sub dir", "manifest.json")
    assert not storage.exists(f)
    with pytest.raises(FileNotFoundError):
        storage.read_text(f)
    storage.write_text(f, '{"a": 1}')
    assert objects(s3, bucket) == {"lake/sub dir/manifest.json": b'{"a": 1}'}  # really there, with the space
    assert storage.exists(f) and storage.read_text(f) == '{"a": 1}' and not storage.is_dir(f)
    assert storage.is_dir(storage.join(base, "sub dir"))
    assert storage.listdir(storage.join(base, "sub dir")) == ["manifest.json"]  # no temporary left
    assert storage.listdir(base) == ["sub dir"]
    assert storage.listdir(storage.join(base, "missing")) == []
    storage.makedirs(storage.join(base, "empty", "inner"))
    assert storage.is_dir(storage.join(base, "empty", "inner"))
    assert storage.listdir(storage.join(base, "empty")) == ["inner"]
    storage.append_text(storage.join(base, "m.jsonl"), "1\n")
    storage.append_text(storage.join(base, "m.jsonl"), "2\n")
    assert storage.read_text(storage.join(base, "m.jsonl")).splitlines() == ["1", "2"]
    storage.write_bytes(storage.join(base, "sub dir", "deeper", "w.bin"), bytes(range(256)))
    storage.rename(storage.join(base, "sub dir"), storage.join(base, "moved"))  # a folder: copied, then deleted
    assert storage.is_dir(storage.join(base, "moved")) and not storage.exists(storage.join(base, "sub dir"))
    assert {k: v for k, v in objects(s3, bucket).items() if "m.jsonl" not in k} == {
        "lake/moved/manifest.json": b'{"a": 1}', "lake/moved/deeper/w.bin": bytes(range(256))}
    storage.rename(storage.join(base, "moved", "manifest.json"), storage.join(base, "top.json"))  # a file
    assert storage.read_text(storage.join(base, "top.json")) == '{"a": 1}'
    assert not storage.exists(storage.join(base, "moved", "manifest.json"))
    storage.delete(storage.join(base, "moved"))
    assert not any(k.startswith("lake/moved") for k in objects(s3, bucket))
    assert not storage.exists(storage.join(base, "moved"))
    storage.delete(storage.join(base, "moved"))  # missing_ok
    with pytest.raises(FileNotFoundError):
        storage.delete(storage.join(base, "moved"), missing_ok=False)
    storage.delete(storage.join(base, "top.json"))
    assert "lake/top.json" not in objects(s3, bucket)


def test_torch_files_through_local_output_and_copy(bucket, s3):
    uri = f"s3a://{bucket}/run 1/checkpoints/epoch-0001.pt"
    with storage.local_output(uri) as tmp:
        torch.save({"w": torch.arange(3)}, tmp)
    assert list(objects(s3, bucket)) == ["run 1/checkpoints/epoch-0001.pt"]
    with storage.local_copy(uri) as local:
        assert torch.load(local, weights_only=True)["w"].tolist() == [0, 1, 2]
    assert not local.exists()  # the temporary copy is gone afterwards
    with pytest.raises(RuntimeError):
        with storage.local_output(f"s3a://{bucket}/run 1/broken.pt"):
            raise RuntimeError("the writer failed")
    assert not storage.exists(f"s3a://{bucket}/run 1/broken.pt")  # nothing half-written published
    with pytest.raises(FileNotFoundError):
        with storage.local_copy(f"s3a://{bucket}/run 1/missing.pt"):
            pass


def test_upload_copies_folders(bucket, s3, tmp_path):
    src = tmp_path / "src"
    (src / "inner dir").mkdir(parents=True)
    (src / "inner dir" / "x.txt").write_text("x")
    (src / "top.bin").write_bytes(b"\x00\x01")
    storage.upload(src, f"s3a://{bucket}/dest")
    assert objects(s3, bucket) == {"dest/inner dir/x.txt": b"x", "dest/top.bin": b"\x00\x01"}
    storage.upload(src / "top.bin", f"s3a://{bucket}/one.bin")
    assert storage.read_bytes(f"s3a://{bucket}/one.bin") == b"\x00\x01"


def test_registry_save_and_load_on_s3a(bucket, s3):
    """A model registered under an s3a:// models root loads back (weights, config, vocabulary)
    through the registry and the Predictor that scoring uses."""
    from moodlake.inference import Predictor
    from moodlake.models import get_model
    from moodlake.train import registry

    vocab = f"s3a://{bucket}/datasets/ds/v1/vocab.json"
    storage.write_text(vocab, json.dumps({"words": ["<PAD>", "<UNK>", "sun"], "tags": ["<PAD>", "<UNK>"],
                                          "chars": ["<PAD>", "<UNK>", "a", "b"]}))
    build_kwargs = {"num_classes": 2, "channels": 8, "embedding_dim": 8}
    torch.manual_seed(0)
    model = get_model("stpierre_char", **build_kwargs)
    config = {"model": "stpierre_char", "build_kwargs": build_kwargs, "labels": ["neg", "pos"]}
    models = f"s3a://{bucket}/models root"
    version, folder = registry.save_model(model.state_dict(), config, vocab, models)
    assert folder == f"{models}/{version}" and isinstance(folder, str)
    assert storage.listdir(models) == [version]  # no temporary folder left
    stored = objects(s3, bucket, "models root/")
    assert sorted(stored) == [f"models root/{version}/{n}" for n in ("config.json", "model.safetensors", "vocab.json")]
    assert json.loads(stored[f"models root/{version}/config.json"])["version"] == version
    assert registry.save_model(model.state_dict(), config, vocab, models) == (version, folder)  # idempotent

    loaded, loaded_config = registry.load_registered(folder)
    assert loaded_config == {**config, "version": version}
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    predictor = Predictor.load(folder)
    assert predictor.version == version and predictor.labels == ["neg", "pos"]
    assert predictor.vocab.words == ("<PAD>", "<UNK>", "sun") and predictor.vocab.chars[2:] == ("a", "b")
    assert all(torch.equal(predictor.model.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(FileNotFoundError):
        registry.load_registered(f"{models}/missing-version")


def test_registry_ignores_an_unfinished_folder_on_s3a(bucket):
    """An object store cannot rename a folder whole: a folder without config.json (a writer that died)
    is not a registered model, and saving the version again completes it."""
    from moodlake.train import registry

    vocab = f"s3a://{bucket}/vocab.json"
    storage.write_text(vocab, '{"words": [], "tags": [], "chars": []}')
    state = torch.nn.Linear(3, 2).state_dict()
    version, folder = registry.save_model(state, {"model": "tiny", "build_kwargs": {}}, vocab, f"s3a://{bucket}/models")
    storage.delete(storage.join(folder, "config.json"))
    storage.write_bytes(storage.join(folder, "model.safetensors"), b"half")
    with pytest.raises(FileNotFoundError):
        registry.load_registered(folder)
    assert registry.save_model(state, {"model": "tiny", "build_kwargs": {}}, vocab, f"s3a://{bucket}/models") == (
        version, folder)
    assert storage.read_bytes(storage.join(folder, "model.safetensors")) != b"half"
    assert storage.exists(storage.join(folder, "config.json"))


def test_training_checkpoints_and_history_on_s3a(bucket, s3):
    """A training run's checkpoints are saved, found (the last epoch) and read back through s3a://;
    its metrics log is appended and read as the driver does."""
    from moodlake.train import launch, loop

    run = f"s3a://{bucket}/training/run 1"
    assert loop.latest_checkpoint(run) is None
    for epoch in (1, 2, 10):
        loop._save({"epoch": epoch, "w": torch.full((2,), float(epoch))},
                   storage.join(run, loop.CHECKPOINTS, f"epoch-{epoch:04d}.pt"))
        storage.append_text(storage.join(run, "metrics.jsonl"), json.dumps({"epoch": epoch, "loss": 1 / epoch}) + "\n")
    assert sorted(objects(s3, bucket, "training/run 1/checkpoints/")) == [
        f"training/run 1/checkpoints/epoch-{e:04d}.pt" for e in (1, 2, 10)]
    last = loop.latest_checkpoint(run)
    assert last == f"{run}/checkpoints/epoch-0010.pt"
    state = loop._load(last, "cpu")
    assert state["epoch"] == 10 and state["w"].tolist() == [10.0, 10.0]
    assert [r["epoch"] for r in launch.read_history(run)] == [1, 2, 10]


def test_class_weights_read_parquet_on_s3a(bucket):
    """The training loop's class weights come from the dataset's Parquet files through the s3a filesystem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moodlake.train import loop

    dataset = f"s3a://{bucket}/datasets/ds/v1"
    filesystem, path = storage.filesystem(storage.join(dataset, "train", "part-0.parquet"))
    pq.write_table(pa.table({"label": [0, 0, 0, 1]}), path, filesystem=filesystem)
    spec = {"recipe": {"class_weighting": "inverse_frequency"}, "labels": ["a", "b"], "multi_label": False,
            "dataset": {"path": dataset}}
    weights = loop.class_weights(spec)
    assert weights is not None and torch.allclose(weights, torch.tensor([0.5, 1.5]))


def test_petastorms_legacy_filesystem_over_s3(bucket, s3):
    """What petastorm 0.13 and pyarrow's legacy ParquetDataset call on a filesystem, on S3 keys with
    spaces; a Parquet file written through it is read back by pyarrow through it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moodlake.data import remote_fs

    root = f"s3a://{bucket}/data set/train"
    fs = remote_fs.for_url(root)
    assert remote_fs.for_url("/tmp/local") is None and remote_fs.for_url("file:///tmp/x") is None
    base = f"{bucket}/data set/train"
    with fs.open(f"{base}/part 0.parquet", "wb") as f:
        pq.write_table(pa.table({"x": [1, 2, 3]}), f)
    storage.write_text(f"{root}/sub/_common_metadata", "m")
    assert fs.exists(base) and fs.isdir(base) and not fs.isfile(base)
    assert fs.isfile(f"{base}/part 0.parquet") and not fs.exists(f"{base}/missing")
    assert fs.ls(base) == [f"{base}/part 0.parquet", f"{base}/sub"]
    assert list(fs.walk(base)) == [(base, ["sub"], ["part 0.parquet"]), (f"{base}/sub", [], ["_common_metadata"])]
    assert objects(s3, bucket, "data set/")["data set/train/sub/_common_metadata"] == b"m"
    with fs.open(f"{base}/part 0.parquet") as f:
        assert pq.read_table(f).column("x").to_pylist() == [1, 2, 3]
    fs.delete(f"{base}/sub", recursive=True)
    assert not fs.exists(f"{base}/sub")
    # petastorm strips the scheme with fsspec, which knows s3a:// only through s3fs unless registered
    import fsspec.core

    assert fsspec.core.strip_protocol(root) == base
    # the factory petastorm ships to executors pickles and rebuilds the filesystem there
    import pickle

    rebuilt = pickle.loads(pickle.dumps(remote_fs.factory(root)))()
    assert rebuilt.isfile(f"{base}/part 0.parquet")
