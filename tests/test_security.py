"""Security (issue #18, item 5), each against the real component:

- the Flickr key and secret never show: a real ``moodlake ingest flickr`` process (its key from
  FLICKR_API_KEY, its secret from the git-ignored conf/local/) against the local Flickr server, with
  Spark's event log and UI on; its output, every file of its lakehouse (Delta data and logs, the
  metastore, logs, state), every row of its tables, the event log and the UI's REST pages are
  searched for both values; so are the exception, output and tables of an ingest with a bad key;
- models, registry folders, checkpoints, ImageNet weights and petastorm dataset schemas are read
  without unpickling code: a pickle whose ``__reduce__`` creates a marker file is planted in each,
  loading fails with a clear error and the marker never appears;
- the JDBC server refuses a non-loopback bind address unless authentication is configured (the
  read-only and loopback checks of a running server are in tests/test_sql_server.py, which shares
  its server).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch

from moodlake import services, sql_server
from moodlake.config import Secret, conf_dir

# --------------------------------------------------------------------------- unpickling


class _Payload:
    """Unpickled, it runs code: ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _ExecPayload(_Payload):
    """The same through ``builtins.exec`` (which petastorm's own restricted unpickler admits)."""

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a planted pickle ran its code"


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """The control: plain ``pickle.loads`` of the planted payloads does run them."""
    for payload in (_Payload, _ExecPayload):
        m = tmp_path / f"control-{payload.__name__}"
        pickle.loads(pickle.dumps(payload(m)))
        assert m.exists()


def test_checkpoints_and_weights_are_loaded_without_unpickling_code(tmp_path, marker):
    from moodlake.models.weights import load_state_dict_file
    from moodlake.train import loop

    run = tmp_path / "run"
    (run / loop.CHECKPOINTS).mkdir(parents=True)
    ckpt = run / loop.CHECKPOINTS / "epoch-0001.pt"
    torch.save({"model": _Payload(marker), "state": "{}", "rng": torch.get_rng_state()}, ckpt)
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": _Payload(marker)}, run / "best.pt")
    weights = tmp_path / "efficientnet-lite0.pth"
    torch.save(_Payload(marker), weights)

    assert Path(loop.latest_checkpoint(run)) == ckpt  # a resumed run would read this one
    for path, load in ((ckpt, lambda p: loop._load(p, "cpu")), (run / "best.pt", lambda p: loop._load(p, "cpu")),
                       (weights, load_state_dict_file)):
        with pytest.raises(pickle.UnpicklingError, match="(?s)Weights only load failed.*GLOBAL posix.system"):
            load(path)
    assert not marker.exists()


def test_a_registered_model_is_loaded_without_unpickling_code(tmp_path, marker):
    """A registry folder whose model file is a pickle (torch's zip or a bare pickle) fails to load."""
    from moodlake.inference import Predictor
    from moodlake.train import registry

    folder = tmp_path / "models" / "v-evil"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "stpierre_char", "version": "v-evil", "labels": ["a", "b"],
                                                    "build_kwargs": {"num_classes": 2, "channels": 8, "embedding_dim": 8}}))
    (folder / "vocab.json").write_text('{"words": [], "tags": [], "chars": []}')
    for write in (lambda f: torch.save(_Payload(marker), f), lambda f: f.write_bytes(pickle.dumps(_Payload(marker)))):
        write(folder / "model.safetensors")
        for load in (registry.load_registered, Predictor.load):
            with pytest.raises(Exception, match="(?i)header|deserializ") as err:
                load(folder)
            assert not isinstance(err.value, (AssertionError, NameError)), err.value
    assert not marker.exists()


def _poisoned_dataset(root: Path, payload) -> Path:
    """A Parquet dataset whose petastorm schema (``_common_metadata``) is ``payload`` pickled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from petastorm.etl.dataset_metadata import UNISCHEMA_KEY

    root.mkdir(parents=True)
    table = pa.table({"post_id": ["a", "b"]})
    pq.write_table(table, root / "part-00000.parquet")
    meta = table.schema.with_metadata({UNISCHEMA_KEY: pickle.dumps(payload)})
    pq.write_metadata(meta, root / "_common_metadata")
    return root


def test_a_dataset_schema_is_unpickled_as_data_only(tmp_path, marker):
    """petastorm unpickles a dataset's schema with an unpickler that admits ``builtins.exec``; the
    readers of MoodLake (``stored_schema``, petastorm's ``make_reader``) use a stricter one."""
    from petastorm import make_reader

    from moodlake.data import petastorm_io
    from moodlake.data.schema import post_schema

    # the control: petastorm 0.13's own "restricted" unpickler runs this payload
    import io

    from petastorm.etl.legacy import RestrictedUnpickler

    control = tmp_path / "control"
    RestrictedUnpickler(io.BytesIO(pickle.dumps(_ExecPayload(control)))).load()
    assert control.exists()

    ds = _poisoned_dataset(tmp_path / "ds", _ExecPayload(marker))
    with pytest.raises(pickle.UnpicklingError, match=r"refused to unpickle builtins\.exec"):
        petastorm_io.stored_schema(ds)
    with pytest.raises(pickle.UnpicklingError, match=r"refused to unpickle builtins\.exec"):
        make_reader(petastorm_io.dataset_url(ds), workers_count=1)
    assert not marker.exists()

    # a schema as MoodLake stores it still loads (every class it is made of is admitted)
    from moodlake import safe_pickle

    schema = petastorm_io.storage_schema(post_schema(8))
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        back = safe_pickle.loads_schema(pickle.dumps(schema, protocol=protocol))
        assert list(back.fields) == list(schema.fields) and back.fields["labels"].shape == (8,)


# --------------------------------------------------------------------------- the JDBC server's address


def test_the_sql_server_refuses_a_public_address_without_authentication(cfg):
    """No Spark is started: the refusal comes first, and leaves no state."""
    assert all(sql_server.is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(sql_server.is_loopback(h) for h in ("0.0.0.0", "", "::", "10.1.2.3", "192.168.0.7"))
    assert cfg.sql_server.host == "127.0.0.1" and cfg.sql_server.authentication == "NONE"
    for host in ("0.0.0.0", "", "10.1.2.3"):
        c = dataclasses.replace(cfg, sql_server=dataclasses.replace(cfg.sql_server, host=host, port=0))
        with pytest.raises(sql_server.SqlServerError, match="not a loopback address.*authentication is NONE"):
            sql_server.start(c)
        with pytest.raises(sql_server.SqlServerError, match="not a loopback address"):
            sql_server.server_command(c, 10000)
    assert services.read_state(cfg.lakehouse.home, sql_server.NAME) is None


def test_the_sql_server_binds_a_public_address_with_authentication_and_stays_read_only(cfg):
    def command(**settings):
        c = dataclasses.replace(cfg, sql_server=dataclasses.replace(cfg.sql_server, **settings))
        cmd = sql_server.server_command(c, 10001)
        hive = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--hiveconf")
        conf = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--conf")
        return cmd, hive, conf

    cmd, hive, conf = command()
    assert hive["hive.server2.thrift.bind.host"] == "127.0.0.1" and hive["hive.server2.authentication"] == "NONE"
    assert conf["spark.sql.extensions"].split(",") == ["io.delta.sql.DeltaSparkSessionExtension", sql_server.READ_ONLY_CLASS]
    assert sql_server.read_only_jar() in cmd[cmd.index("--driver-class-path") + 1].split(":")

    ldap = {"hive.server2.authentication.ldap.url": "ldaps://ldap.example:636",
            "hive.server2.authentication.ldap.baseDN": "ou=people,dc=example"}
    cmd, hive, conf = command(host="0.0.0.0", authentication="LDAP", hiveconf=ldap)
    assert hive == {"hive.server2.thrift.port": "10001", "hive.server2.thrift.bind.host": "0.0.0.0",
                    "hive.server2.authentication": "LDAP", **ldap}
    assert sql_server.READ_ONLY_CLASS in conf["spark.sql.extensions"]

    cmd, hive, conf = command(read_only=False)  # an administrator's writable server: no extension
    assert sql_server.READ_ONLY_CLASS not in conf["spark.sql.extensions"]
    assert not any("read-only-sql" in p for p in cmd[cmd.index("--driver-class-path") + 1].split(":"))


# --------------------------------------------------------------------------- secrets

# distinctive values: any occurrence anywhere is a leak
KEY = "mlkey" + uuid.uuid4().hex[:20]
SECRET = "mlsec" + uuid.uuid4().hex[:20]
BAD_KEY, BAD_SECRET = "mlbadkey" + uuid.uuid4().hex[:16], "mlbadsec" + uuid.uuid4().hex[:16]
N_PHOTOS = 24


def _leaks(data: bytes | str, values) -> list[str]:
    text = data if isinstance(data, str) else data.decode("latin-1")
    return [v for v in values if v in text]


def _table_leaks(df, values) -> list[str]:
    """The values found in any row of ``df`` (each row as its JSON, binary columns base64 as toJSON
    writes them), searched by Spark: a whole table's images are not collected to the driver (the
    session's posts table holds every test's photos: collecting them all lost a task result once)."""
    from pyspark.sql import functions as F

    row = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
    return [v for v in values if df.where(row.contains(v)).limit(1).count()]


def _search_files(roots, values) -> tuple[dict[str, list[str]], int]:
    """{file: the values found in its bytes} over every file under ``roots``; and the files read."""
    found, n = {}, 0
    for root in roots:
        for f in sorted(Path(root).rglob("*")):
            if f.is_file() and not f.is_symlink():
                n += 1
                hits = _leaks(f.read_bytes(), values)
                if hits:
                    found[str(f)] = hits
    return found, n


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode("utf-8", "replace")


def _ui_pages(port: int, server, proc, deadline: float) -> tuple[dict[str, str], bool]:
    """The UI's REST pages of the running application, fetched again and again until it exits (the
    last fetch wins); and whether a fetch came after the ingest had called Flickr."""
    base, pages, during_ingest = f"http://127.0.0.1:{port}", {}, False
    while time.monotonic() < deadline and proc.poll() is None:
        calls = server.count()
        try:
            app = json.loads(_get(f"{base}/api/v1/applications"))[0]["id"]
            pages = {p: _get(f"{base}/api/v1/applications/{app}/{p}")
                     for p in ("environment", "jobs", "stages", "sql?details=true&planDescription=true", "executors")}
            pages["environment (html)"] = _get(f"{base}/environment/")
            during_ingest = during_ingest or calls > 0
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(2)
    return pages, during_ingest


@pytest.fixture(scope="module")
def flickr_server():
    from moodlake.sources.synthetic import SyntheticSpec
    from moodlake_dev.doubles.fake_flickr import FakeFlickrServer
    from moodlake_dev.doubles.synthetic_flickr import photo_id, synthetic_corpus, synthetic_photo

    spec = SyntheticSpec(labels=("negative", "positive"), seed=5)
    corpus = synthetic_corpus(N_PHOTOS, spec)
    # error paths write messages too: a 500 that outlasts the retries, a missing image
    corpus.add(dataclasses.replace(synthetic_photo(0, spec), id="7100000001", fail_times=9, fail_mode="http500"))
    corpus.add(dataclasses.replace(synthetic_photo(1, spec), id="7100000002", image_status=404))
    ids = [photo_id(i) for i in range(N_PHOTOS)] + ["7100000001", "7100000002", "9999999999"]
    with FakeFlickrServer(corpus, valid_keys={KEY: SECRET},
                          global_slow_s=0.02) as server:
        server.ids = ids
        yield server


@pytest.mark.spark
@pytest.mark.slow
def test_flickr_secrets_never_show_in_output_tables_event_log_or_ui(spark, flickr_server, tmp_path):
    """A real ingest process, its key in the environment and its secret in conf/local/."""
    home, events, conf = tmp_path / "lh", tmp_path / "events", tmp_path / "conf"
    events.mkdir()
    shutil.copytree(conf_dir(), conf, ignore=shutil.ignore_patterns("local"))
    ui_port = services.free_port("127.0.0.1")
    (conf / "local").mkdir()
    (conf / "local" / "flickr.yaml").write_text(json.dumps({  # JSON is YAML
        "flickr": {"api_secret": SECRET, "rest_url": flickr_server.rest_url, "calls_per_hour": 0, "max_retries": 2,
                   "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5},
        "ingest": {"chunk_size": 20, "progress_interval_s": 1},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g", "ui_enabled": True,
                  "conf": {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
                           "spark.eventLog.compress": "false", "spark.ui.port": str(ui_port),
                           "spark.ui.port.maxRetries": "0"}},
    }))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(flickr_server.ids) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLAKE", "FLICKR_", "PYSPARK_GATEWAY"))}
    env.update({"MOODLAKE_HOME": str(home), "MOODLAKE_CONF_DIR": str(conf), "FLICKR_API_KEY": KEY,
                "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    out_f, err_f = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_f.open("w") as out, err_f.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "moodlake.cli", "ingest", "flickr", "--ids", str(ids)],
                                env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            pages, during_ingest = _ui_pages(ui_port, flickr_server, proc, time.monotonic() + 900)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    stdout, stderr = out_f.read_text(), err_f.read_text()
    assert rc == 0, stdout[-2000:] + stderr[-4000:]
    # the ingest was real: it used the key and the secret (signed calls), and every id is accounted for
    assert {c.consumer_key for c in flickr_server.calls() if c.method.startswith("flickr.")} == {KEY}
    assert f"{len(flickr_server.ids)} input records" in stdout, stdout
    values = (KEY, SECRET)
    # the search finds what is there (the secret is in the conf file, and nowhere else below)
    assert _search_files([conf / "local"], values)[0] == {str(conf / "local" / "flickr.yaml"): [SECRET]}

    assert _leaks(stdout + stderr, values) == []
    assert pages and during_ingest, "the Spark UI did not answer while the ingest ran"
    assert "spark.eventLog.enabled" in pages["environment"] and "sparkProperties" in pages["environment"]
    assert {p: _leaks(t, values) for p, t in pages.items() if _leaks(t, values)} == {}
    found, n_files = _search_files([home, events], values)
    assert found == {}
    assert n_files > 50 and list(events.iterdir()), n_files  # Delta data and logs, the metastore, the event log
    assert (home / "metastore_db").is_dir() and list(home.rglob("_delta_log/*.json"))

    # every row of every table, decoded (Parquet pages may be compressed)
    tables = [d for d in (home / "warehouse" / "moodlake.db").iterdir() if (d / "_delta_log").is_dir()]
    assert {"posts", "ingest_failures", "ingest_runs"} <= {d.name for d in tables}
    n_rows = 0
    for d in tables:
        table = spark.read.format("delta").load(str(d))
        assert _table_leaks(table, values) == [], d.name
        n_rows += table.count()
    assert n_rows >= N_PHOTOS
    fails = spark.read.format("delta").load(str(home / "warehouse" / "moodlake.db" / "ingest_failures"))
    assert fails.count() >= 2  # the error paths ran (HTTP 500 exhausted, id not found)


@pytest.mark.spark
def test_a_bad_flickr_key_is_named_nowhere(spark, cfg, flickr_server, tmp_path, capfd):
    """Flickr refuses the key: the job stops with a clear error that shows neither the key nor the
    secret; nor do the output and the tables."""
    from moodlake.ingest import Ingestor
    from moodlake.sources.flickr import FlickrAuthError, FlickrSource

    settings = dataclasses.replace(cfg.flickr, rest_url=flickr_server.rest_url, api_key=Secret(BAD_KEY),
                                   api_secret=Secret(BAD_SECRET), calls_per_hour=0, max_retries=1,
                                   backoff_initial_s=0.01, backoff_max_s=0.02, timeout_s=5.0)
    c = dataclasses.replace(cfg, flickr=settings)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(flickr_server.ids[:5]) + "\n")
    src = FlickrSource(settings=settings, ids_path=str(ids), name="flickr-bad-key")
    with pytest.raises(FlickrAuthError, match="rejected the credentials") as err:
        Ingestor(spark, c).run(src)
    text = "".join(traceback.format_exception(err.value)) + repr(err.value) + repr(src) + repr(c)
    values = (BAD_KEY, BAD_SECRET)
    assert _leaks(text, values) == [], text
    out = capfd.readouterr()
    assert _leaks(out.out + out.err, values) == []
    for t in ("posts", "ingest_failures", "ingest_runs"):
        assert _table_leaks(spark.table(c.table(t)), values) == [], t
