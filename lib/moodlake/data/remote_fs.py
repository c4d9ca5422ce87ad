"""Petastorm on remote storage (``s3a://``, ``hdfs://``) through :mod:`moodlake.storage`'s pyarrow
filesystems: the same endpoint and credentials as the registry and training runs, and no ``s3fs``.

Petastorm 0.13 with pyarrow 14 opens a dataset with the legacy ``ParquetDataset`` (it passes
``validate_schema``), which only the legacy filesystem API (``pyarrow.filesystem.FileSystem``) takes;
an fsspec filesystem such as s3fs sends pyarrow down its newer dataset path, which refuses that
keyword. :class:`LegacyFileSystem` is that legacy API over a ``pyarrow.fs`` filesystem: what
``ParquetDataset`` and petastorm call (exists, isdir, isfile, ls, walk, open, mkdir, delete).

Petastorm also strips a URL's scheme with fsspec (``fsspec.core.strip_protocol``), which needs a
filesystem class registered for the scheme; :func:`register_schemes` registers a pyarrow-backed one
for ``s3``/``s3a`` where s3fs is not installed (it only strips the scheme: reading goes through
:class:`LegacyFileSystem`)."""
from __future__ import annotations

import posixpath
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # pyarrow.filesystem is deprecated; petastorm needs it
    from pyarrow import filesystem as legacy
from pyarrow import fs as pafs


class LegacyFileSystem(legacy.FileSystem):
    """``pyarrow.filesystem.FileSystem`` (the legacy API petastorm 0.13 needs) over a ``pyarrow.fs``
    filesystem; paths are that filesystem's (``bucket/key`` on S3)."""

    pathsep = "/"

    def __init__(self, filesystem: pafs.FileSystem):
        self.fs = filesystem

    def _type(self, path: str) -> pafs.FileType:
        return self.fs.get_file_info(self._norm(path)).type

    @staticmethod
    def _norm(path) -> str:
        return str(path).rstrip("/")

    def exists(self, path) -> bool:
        return self._type(path) != pafs.FileType.NotFound

    def isdir(self, path) -> bool:
        return self._type(path) == pafs.FileType.Directory

    def isfile(self, path) -> bool:
        return self._type(path) == pafs.FileType.File

    def _isfilestore(self) -> bool:
        return False  # an object store: no empty directories to honour

    def ls(self, path, detail: bool = False) -> list:
        infos = self.fs.get_file_info(pafs.FileSelector(self._norm(path)))
        return sorted(i.path for i in infos)

    def walk(self, top_path):
        """(directory, sub-directory names, file names), top down, as ``os.walk``."""
        top = self._norm(top_path)
        infos = self.fs.get_file_info(pafs.FileSelector(top))
        dirs = sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
        files = sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(posixpath.join(top, d))

    def open(self, path, mode: str = "rb"):
        if mode in ("rb", "r"):
            return self.fs.open_input_file(self._norm(path))
        if mode == "wb":
            return self.fs.open_output_stream(self._norm(path))
        raise ValueError(f"mode {mode!r}: only rb and wb")

    def cat(self, path) -> bytes:
        with self.open(path) as f:
            return f.read()

    def mkdir(self, path, create_parents: bool = True) -> None:
        self.fs.create_dir(self._norm(path), recursive=create_parents)

    def delete(self, path, recursive: bool = False) -> None:
        if self.isdir(path):
            if not recursive:
                raise OSError(f"{path} is a directory")
            self.fs.delete_dir(self._norm(path))
        else:
            self.fs.delete_file(self._norm(path))

    rm = delete

    def stat(self, path) -> dict:
        info = self.fs.get_file_info(self._norm(path))
        return {"size": info.size, "kind": "directory" if info.type == pafs.FileType.Directory else "file"}


def for_url(url: str | Path) -> LegacyFileSystem | None:
    """The filesystem petastorm should use for ``url``: None (petastorm's own) for a local path,
    else a :class:`LegacyFileSystem` over :func:`moodlake.storage.filesystem`."""
    from moodlake import storage

    if storage.is_local(url):
        return None
    register_schemes()
    return LegacyFileSystem(storage.filesystem(url)[0])


def factory(url: str | Path):
    """A picklable no-argument callable giving :func:`for_url` (petastorm's ``filesystem_factory``),
    or None for a local path."""
    from moodlake import storage

    if storage.is_local(url):
        return None
    register_schemes()  # petastorm strips the URL's scheme before it calls the factory
    return _Factory(str(url))


class _Factory:
    def __init__(self, url: str):
        self.url = url

    def __call__(self):
        return for_url(self.url)


_REGISTERED = False


def register_schemes() -> None:
    """Let fsspec strip ``s3``/``s3a`` URLs without s3fs (petastorm calls ``strip_protocol``)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import fsspec
    from fsspec.implementations.arrow import ArrowFSWrapper

    try:
        fsspec.get_filesystem_class("s3a")  # s3fs is installed: it serves
    except ImportError:
        class _S3Schemes(ArrowFSWrapper):
            protocol = ("s3a", "s3")

        for scheme in ("s3a", "s3"):
            fsspec.register_implementation(scheme, _S3Schemes, clobber=True)
    _REGISTERED = True


