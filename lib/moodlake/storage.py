"""Files that every executor can read: datasets, the model registry, training runs and checkpoints.

Locations are plain local paths or Hadoop-compatible filesystem URIs, as Spark writes them:
``file:///data/lake``, ``hdfs://namenode:8020/lake``, ``s3a://bucket/lake``, ``abfss://c@acct.dfs.core.windows.net/lake``.
This module opens them with pyarrow's filesystems (``s3a://`` and ``s3n://`` map to pyarrow's S3,
``hdfs://`` and ``viewfs://`` to its HDFS (libhdfs), ``file://`` and plain paths to the local one) and, for any
other scheme, fsspec's (``abfss://`` with adlfs installed, ``gs://`` with gcsfs, ...).

URIs are written raw, as Hadoop takes them: ``file:///tmp/my lake`` is the folder ``/tmp/my lake``
(no percent-encoding). A plain path stays a plain path everywhere (:func:`join`, :func:`parent`),
so a local lakehouse behaves exactly as before; :func:`spark_url` gives the ``file://`` form for
Spark and petastorm.

What is written here must be visible to every host: a plain local path only is on a single machine
(or with a shared POSIX mount); genuinely driver-local state (the lakehouse home's run ledgers, pid
files, the Derby metastore) does not go through this module.

S3-compatible services (MinIO, Ceph, a local moto server): the endpoint is configured once, where
Spark's s3a takes it, in the configuration's ``spark.conf``::

    spark.hadoop.fs.s3a.endpoint: http://minio.internal:9000    # or a bare host[:port] ...
    spark.hadoop.fs.s3a.connection.ssl.enabled: "false"        # ... which is then http (default: https)
    spark.hadoop.fs.s3a.endpoint.region: eu-west-1               # optional (default: us-east-1)

This module reads it from the environment, because it also runs where no configuration is loaded
(Spark's Python workers scoring on executors, TorchDistributor and torchrun training processes):
``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (the names the AWS SDKs and CLI honour; a full
URL, its scheme choosing http or https) and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. MoodLake
carries the s3a settings there itself (:func:`s3a_environment`): :func:`moodlake.spark.spark_conf`
adds them to every executor's environment (``spark.executorEnv.*``) and
:func:`moodlake.spark.build_spark` sets them in the driver's (processes it starts inherit them), so
Spark and this module always talk to the same service; a process started without MoodLake's Spark
session (a script, a test) is pointed at a service by setting the variables. Without an endpoint,
``s3a://`` is AWS S3 itself, the bucket's region resolved by pyarrow.

Buckets on a configured endpoint are addressed path-style (``http://host:port/bucket/key``, which
every S3-compatible service serves; pyarrow 14 has no other choice with an endpoint, so
``fs.s3a.path.style.access`` is not consulted), virtual-hosted on AWS. Credentials come only from
the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``~/.aws``, instance or pod roles), never from the configuration, and are never logged. One
filesystem is built per (scheme, bucket, endpoint, region): changing the variables takes effect
on the next call.
"""
from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Mapping

LOCAL_SCHEMES = ("", "file")
_S3 = ("s3a", "s3n", "s3")
_HDFS = ("hdfs", "viewfs")
# where S3 requests go: the AWS SDKs' variables, most specific first (see the module's docstring)
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
_S3A = "spark.hadoop.fs.s3a."


def _split(uri: str | Path) -> tuple[str, str, str]:
    """(scheme, authority, path) of ``uri``; a plain path has scheme ''. No percent-decoding."""
    text = str(uri)
    if "://" not in text:
        return "", "", text
    scheme, rest = text.split("://", 1)
    if "/" in rest:
        authority, path = rest.split("/", 1)
        return scheme.lower(), authority, "/" + path
    return scheme.lower(), rest, "/"


def scheme(uri: str | Path) -> str:
    return _split(uri)[0]


def is_local(uri: str | Path) -> bool:
    """True for plain paths and ``file://`` URIs."""
    return scheme(uri) in LOCAL_SCHEMES


def local_path(uri: str | Path) -> Path:
    """The local path of a plain path or ``file://`` URI (ValueError for other schemes)."""
    s, authority, path = _split(uri)
    if s not in LOCAL_SCHEMES:
        raise ValueError(f"{uri} is not on the local filesystem")
    if s == "file" and authority not in ("", "localhost"):
        raise ValueError(f"{uri}: a file:// URI names no host (file:///abs/path)")
    return Path(path)


def join(base: str | Path, *parts: str) -> str:
    """``base`` with ``parts`` appended by '/', keeping its scheme (a plain path stays plain)."""
    s, authority, path = _split(base)
    if not s:
        return str(Path(base).joinpath(*parts))
    joined = posixpath.join(path, *parts)
    return f"{s}://{authority}{joined}"


def name(uri: str | Path) -> str:
    """The last component of ``uri``."""
    return posixpath.basename(_split(uri)[2].rstrip("/"))


def parent(uri: str | Path) -> str:
    s, authority, path = _split(uri)
    if not s:
        return str(Path(uri).parent)
    return f"{s}://{authority}{posixpath.dirname(path.rstrip('/')) or '/'}"


def native(uri: str | Path) -> Path | str:
    """A ``Path`` for a plain local path (what callers got before URIs), the URI string otherwise."""
    return Path(uri) if not scheme(uri) else str(uri)


def spark_url(uri: str | Path) -> str:
    """A URI Spark, Hadoop and petastorm accept: plain paths become absolute ``file://`` URIs (raw)."""
    if scheme(uri):
        return str(uri)
    return "file://" + str(Path(uri).expanduser().resolve())


def s3a_environment(conf: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that point this module where the Hadoop s3a settings of a Spark
    ``conf`` point Spark (``spark.hadoop.fs.s3a.endpoint``, ``.connection.ssl.enabled``,
    ``.endpoint.region``); {} when it sets no endpoint (AWS S3 itself)."""
    endpoint = str(conf.get(_S3A + "endpoint", "")).strip()
    if not endpoint:
        return {}
    if "://" not in endpoint:  # Hadoop's bare host[:port]: the scheme follows connection.ssl.enabled
        ssl = str(conf.get(_S3A + "connection.ssl.enabled", "true")).strip().lower() != "false"
        endpoint = ("https://" if ssl else "http://") + endpoint
    env = {ENDPOINT_VARIABLES[0]: endpoint.rstrip("/")}
    region = str(conf.get(_S3A + "endpoint.region", "")).strip()
    if region:
        env[REGION_VARIABLES[0]] = region
    return env


def _s3_target() -> tuple[str, str]:
    """(endpoint URL, region) from the environment; ('', '') for AWS S3 itself."""
    endpoint = next((os.environ[v].strip() for v in ENDPOINT_VARIABLES if os.environ.get(v, "").strip()), "")
    region = next((os.environ[v].strip() for v in REGION_VARIABLES if os.environ.get(v, "").strip()), "")
    return endpoint, region


@functools.lru_cache(maxsize=None)
def _remote(s: str, authority: str, endpoint: str = "", region: str = ""):
    """One pyarrow filesystem per (scheme, bucket or namenode, and for S3 its endpoint and region):
    built, and connected, once."""
    from pyarrow import fs

    if s in _S3:
        # the bucket is the authority; credentials come from the standard AWS chain (never passed here)
        if not endpoint:
            return fs.FileSystem.from_uri(f"s3://{authority}/")[0]  # AWS: the bucket's region, resolved
        transport, _, host = endpoint.partition("://") if "://" in endpoint else ("https", "", endpoint)
        if transport.lower() not in ("http", "https") or not host.strip("/"):
            raise ValueError(f"S3 endpoint {endpoint!r} is not an http(s)://host[:port] URL")
        return fs.S3FileSystem(endpoint_override=host.rstrip("/"), scheme=transport.lower(),
                               region=region or "us-east-1")
    if s in _HDFS:
        return fs.FileSystem.from_uri(f"hdfs://{authority}/")[0]
    import fsspec

    return fs.PyFileSystem(fs.FSSpecHandler(fsspec.filesystem(s)))


def filesystem(uri: str | Path):
    """(a ``pyarrow.fs.FileSystem``, the path on it) for ``uri``."""
    from pyarrow import fs

    s, authority, path = _split(uri)
    if s in LOCAL_SCHEMES:
        return fs.LocalFileSystem(), str(local_path(uri))
    remote = _remote(s, authority, *_s3_target()) if s in _S3 else _remote(s, authority)
    return remote, (path if s in _HDFS else f"{authority}{path}".rstrip("/"))


def exists(uri: str | Path) -> bool:
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    return filesystem_.get_file_info(path).type != fs.FileType.NotFound


def is_dir(uri: str | Path) -> bool:
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    return filesystem_.get_file_info(path).type == fs.FileType.Directory


def listdir(uri: str | Path) -> list[str]:
    """The names of the entries of folder ``uri`` (sorted); [] when it does not exist."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    if filesystem_.get_file_info(path).type != fs.FileType.Directory:
        return []
    return sorted(posixpath.basename(i.path.rstrip("/"))
                  for i in filesystem_.get_file_info(fs.FileSelector(path, allow_not_found=True)))


def makedirs(uri: str | Path) -> None:
    filesystem_, path = filesystem(uri)
    filesystem_.create_dir(path, recursive=True)


def read_bytes(uri: str | Path) -> bytes:
    filesystem_, path = filesystem(uri)
    try:
        with filesystem_.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if not exists(uri):
            raise FileNotFoundError(f"{uri} does not exist") from None
        raise e


def read_text(uri: str | Path, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write ``data`` to ``uri``, whole: through a temporary name and a rename where the filesystem
    renames atomically (local, HDFS); object stores publish an object only once it is complete."""
    filesystem_, path = filesystem(uri)
    filesystem_.create_dir(posixpath.dirname(path) if not is_local(uri) else str(Path(path).parent), recursive=True)
    if scheme(uri) in _S3:
        with filesystem_.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with filesystem_.open_output_stream(tmp) as f:
        f.write(data)
    filesystem_.move(tmp, path)


def write_text(uri: str | Path, text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def append_text(uri: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Append ``text`` to ``uri`` (a small log such as a run's metrics.jsonl): read, extend, rewrite
    whole, since object stores cannot append."""
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding=encoding) as f:
            f.write(text)
        return
    before = read_bytes(uri) if exists(uri) else b""
    write_bytes(uri, before + text.encode(encoding))


def delete(uri: str | Path, missing_ok: bool = True) -> None:
    """Delete a file or a whole folder."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    kind = filesystem_.get_file_info(path).type
    if kind == fs.FileType.Directory:
        filesystem_.delete_dir(path)
    elif kind == fs.FileType.NotFound:
        if not missing_ok:
            raise FileNotFoundError(f"{uri} does not exist")
    else:
        filesystem_.delete_file(path)


def renames_atomically(uri: str | Path) -> bool:
    """Whether :func:`rename` of a folder under ``uri`` is one atomic step (local filesystems, HDFS)."""
    return scheme(uri) in LOCAL_SCHEMES + _HDFS


def rename(src: str | Path, dst: str | Path) -> None:
    """Move a file or folder (atomic on local filesystems and HDFS; a copy on object stores)."""
    from pyarrow import fs

    filesystem_, a = filesystem(src)
    _, b = filesystem(dst)
    if scheme(src) in _S3 and filesystem_.get_file_info(a).type == fs.FileType.Directory:
        # S3 has no folders to move (pyarrow's move refuses them): copy every object under the
        # prefix, then delete it
        filesystem_.create_dir(b, recursive=True)
        for info in filesystem_.get_file_info(fs.FileSelector(a, recursive=True)):
            target = b + info.path[len(a):]
            if info.type == fs.FileType.Directory:
                filesystem_.create_dir(target, recursive=True)
            else:
                filesystem_.copy_file(info.path, target)
        filesystem_.delete_dir(a)
        return
    filesystem_.move(a, b)


def upload(local: str | Path, uri: str | Path) -> None:
    """Copy a local file or folder to ``uri`` (replacing a file there)."""
    local = Path(local)
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            shutil.copy2(local, target)
        return
    if local.is_dir():
        for child in sorted(local.iterdir()):
            upload(child, join(uri, child.name))
        return
    write_bytes(uri, local.read_bytes())


@contextlib.contextmanager
def local_copy(uri: str | Path) -> Iterator[Path]:
    """A local path holding the file at ``uri`` while the block runs (for torch.load, safetensors and
    other readers that want a path): the file itself where it is local, a temporary copy otherwise."""
    if is_local(uri):
        path = local_path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{uri} does not exist")
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix="moodlake-", suffix="-" + name(uri))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(read_bytes(uri))
        yield Path(tmp)
    finally:
        os.unlink(tmp)


@contextlib.contextmanager
def local_output(uri: str | Path) -> Iterator[Path]:
    """A local path to write a file to; on leaving the block (without an error) it is put at ``uri``
    whole (see :func:`write_bytes`)."""
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix="moodlake-", suffix="-" + name(uri))
    os.close(fd)
    try:
        yield Path(tmp)
        write_bytes(uri, Path(tmp).read_bytes())
    finally:
        os.unlink(tmp)
