"""Loading the configuration: YAML layers, environment variables and overrides, merged with the
provenance of every key, then validated into the frozen dataclasses of :mod:`moodlake.config.schema`.
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from moodlake.config.schema import DEFAULT_ENV, Config, ConfigError, Secret, _frozen_map

LOCAL_ENV = "local"
# conf/experiments holds the experiment files of moodlake_dev.experiments (each a `run` selection and
# a `config` overlay for load_config's ``layers``), not an environment
EXPERIMENTS_DIR = "experiments"


_SECRET_KEYS = {("flickr", "api_key"), ("flickr", "api_secret")}
_ENV_SHORTCUTS = {
    "MOODLAKE_HOME": ("lakehouse", "home"),
    "FLICKR_API_KEY": ("flickr", "api_key"),
    "FLICKR_API_SECRET": ("flickr", "api_secret"),
}
_ENV_PREFIX = "MOODLAKE__"


def repo_root() -> Path:
    """The project checkout (where conf/ lives); MOODLAKE_CONF_DIR overrides conf/ itself."""
    return Path(__file__).resolve().parents[3]


def conf_dir() -> Path:
    return Path(os.environ.get("MOODLAKE_CONF_DIR") or repo_root() / "conf")


def _deep_merge(base: dict, overlay: dict, origin: str, prov: dict, prefix: tuple = ()) -> None:
    for key, value in overlay.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, origin, prov, path)
        else:
            base[key] = value
            prov[path] = origin
            if isinstance(value, dict):
                for sub in _walk_keys(value, path):
                    prov[sub] = origin


def _walk_keys(d: dict, prefix: tuple):
    for k, v in d.items():
        yield prefix + (str(k),)
        if isinstance(v, dict):
            yield from _walk_keys(v, prefix + (str(k),))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _layer_files(env: str) -> list[tuple[Path, bool]]:
    """(file, committed) for every layer in order."""
    root = conf_dir()
    if env == EXPERIMENTS_DIR:
        raise ConfigError(f"{root / env} holds experiment files (python -m moodlake_dev.experiments FILE), "
                          f"not an environment")
    layers = ["base", env] + ([LOCAL_ENV] if env != LOCAL_ENV else [])
    files: list[tuple[Path, bool]] = []
    for layer in layers:
        d = root / layer
        if not d.is_dir():
            if layer == env and layer != "base":
                known = sorted(p.name for p in root.iterdir()
                               if p.is_dir() and p.name != EXPERIMENTS_DIR) if root.is_dir() else []
                raise ConfigError(f"environment {env!r} has no folder {d}; available: {', '.join(known)}")
            continue
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            files.append((f, layer != LOCAL_ENV))
    return files


def load_config(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    layers: Sequence[tuple[str, Mapping]] = (),
) -> Config:
    """Read every layer for ``env`` and return the validated, frozen :class:`Config`.

    ``layers``: further (origin, mapping of sections) pairs, merged after conf/'s files (conf/local
    included) and before the environment variables and ``overrides``, each as a committed file whose
    name is ``origin`` (an experiment file's ``config``: :mod:`moodlake_dev.experiments`)."""
    environ = os.environ if environ is None else environ
    env = env or environ.get("MOODLAKE_ENV") or DEFAULT_ENV
    merged: dict = {}
    prov: dict[tuple, str] = {}
    sources = [(str(path), _read_yaml(path), committed) for path, committed in _layer_files(env)]
    for origin, data in layers:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: the configuration must be a mapping of sections")
        sources.append((origin, copy.deepcopy(dict(data)), True))
    for path, data, committed in sources:
        if committed:
            for section, key in _SECRET_KEYS:
                if isinstance(data.get(section), dict) and data[section].get(key):
                    raise ConfigError(
                        f"{path}: {section}.{key}: secrets may not be committed; put them in "
                        f"conf/local/ (git-ignored) or the environment "
                        f"({'FLICKR_API_KEY' if key == 'api_key' else 'FLICKR_API_SECRET'})"
                    )
        _deep_merge(merged, data, path, prov)

    for var, (section, key) in _ENV_SHORTCUTS.items():
        if environ.get(var):
            _deep_merge(merged, {section: {key: environ[var]}}, f"environment variable {var}", prov)
    for var, raw in environ.items():
        if var.startswith(_ENV_PREFIX) and raw != "":
            parts = [p.lower() for p in var[len(_ENV_PREFIX):].split("__") if p]
            if len(parts) < 2:
                raise ConfigError(f"environment variable {var}: expected MOODLAKE__SECTION__KEY")
            value = _parse_scalar(raw)
            nested: dict = {}
            cur = nested
            for p in parts[:-1]:
                cur = cur.setdefault(p, {})
            cur[parts[-1]] = value
            _deep_merge(merged, nested, f"environment variable {var}", prov)
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        nested = {}
        cur = nested
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = _parse_scalar(value) if isinstance(value, str) else value
        _deep_merge(merged, nested, f"override {dotted}", prov)

    merged["env"] = env
    prov[("env",)] = "--env / MOODLAKE_ENV"
    cfg = _build(Config, merged, (), prov)
    return _resolve_paths(cfg)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class _Text:
    """A value given as text (``--set``, an environment variable): string keys take the text
    exactly as given (``--set spark.app_name=0x1F`` is the name '0x1F', not 31); other keys take
    its YAML reading (``3600`` an int, ``true`` a bool, ``[a, b]`` a list)."""

    raw: str
    parsed: Any


def _parse_scalar(raw: str) -> Any:
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # a mapping merges into the section it names, as a YAML file's would
    return parsed if isinstance(parsed, dict) else _Text(raw, parsed)


def build_section(cls, data: Mapping, key: tuple[str, ...], origins: Mapping[tuple, str]):
    """``data`` validated into the dataclass ``cls`` as :func:`load_config` validates a section: an
    unknown key, a wrong type or a refused value raises :class:`ConfigError` naming where the value
    came from (``origins``: key tuple -> file or override; the longest prefix of the key applies) and
    the dotted key under ``key``. Values given as text (``--set``) are read with :func:`parse_text`."""
    return _build(cls, dict(data), tuple(key), dict(origins))


def parse_text(raw: str) -> Any:
    """A value given as text on a command line (``--set KEY=VALUE``), as :func:`load_config` reads one."""
    return _parse_scalar(raw)


def _untyped(value: Any) -> Any:
    """A value no dataclass types (a recipe's model argument): text given as text is read as YAML
    (``--set training.recipes.multitask.model.pretrained=false`` is False)."""
    return value.parsed if isinstance(value, _Text) else value


def _resolve_paths(cfg: Config) -> Config:
    """Relative local paths become absolute (relative to the working directory)."""
    home, shared = cfg.lakehouse.home, cfg.data.shared_dir
    try:
        if "://" not in home:
            home = str(Path(home).expanduser().resolve())
        if "://" not in shared:
            shared = str(Path(shared).expanduser().resolve())
    except (ValueError, OSError) as e:  # an embedded NUL, an unknown ~user
        raise ConfigError(f"lakehouse.home / data.shared_dir: not a usable path: {e}") from None
    return dataclasses.replace(
        cfg,
        lakehouse=dataclasses.replace(cfg.lakehouse, home=home),
        data=dataclasses.replace(cfg.data, shared_dir=shared),
    )


def _where(prov: dict, path: tuple) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in prov:
            return prov[path[:n]]
    return "defaults"


def _err(prov: dict, path: tuple, msg: str) -> ConfigError:
    return ConfigError(f"{_where(prov, path)}: {'.'.join(path)}: {msg}")


def _build(cls, data: Any, path: tuple, prov: dict):
    if isinstance(data, _Text):
        data = data.parsed
    if not isinstance(data, dict):
        raise _err(prov, path, f"expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(str(k), sorted(names), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f"; known keys: {', '.join(sorted(names))}"
        raise _err(prov, path + (str(k),), f"unknown key{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], path + (f.name,), prov)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # __post_init__ names the key relative to its section, dotted where it is nested deeper
        key = str(e).split(":", 1)[0]
        raise _err(prov, path + tuple(key.split(".")), str(e).split(":", 1)[-1].strip()) from None


def _convert(tp, value: Any, path: tuple, prov: dict):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if (value.parsed if isinstance(value, _Text) else value) is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, prov)
    if isinstance(value, _Text):
        if tp is int and value.raw.strip().lstrip("+-").isdecimal():
            value = int(value.raw)  # '010' is ten (YAML 1.1 would read eight)
        elif tp is float and isinstance(value.parsed, str) and _FLOAT.fullmatch(value.raw.strip()):
            value = float(value.raw)  # '1e-4' (YAML 1.1 reads a string without a '.')
        else:
            value = value.raw if tp in (str, Secret) else value.parsed
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, prov)
    if tp is Secret:
        if not isinstance(value, str) or not value:
            raise _err(prov, path, "expected a non-empty string")
        return Secret(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _err(prov, path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _err(prov, path, f"expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # `lr: 1e-4` in a file (YAML 1.1 reads a string without a '.')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _err(prov, path, f"expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _err(prov, path, f"expected a string, got {type(value).__name__} {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _err(prov, path, f"expected a list, got {type(value).__name__} {value!r}")
        return tuple(_convert(args[0], v, path + (str(i),), prov) for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            raise _err(prov, path, f"expected a mapping, got {type(value).__name__} {value!r}")
        ktp, vtp = args if args else (str, Any)
        return _frozen_map({str(k): (_untyped(v) if vtp is Any else _convert(vtp, v, path + (str(k),), prov))
                            for k, v in value.items()})
    raise _err(prov, path, f"unsupported type {tp!r}")  # pragma: no cover - a programming error
