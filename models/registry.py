"""A small timm-style model registry: ``@register_model`` on builder functions, ``get_model(name, **cfg)``.

Builders live next to their architecture (one module per family); importing ``moodlake.models``
imports every family module, so every builder is registered before ``get_model`` is first called.
A builder's keyword arguments are listed again in ``moodlake.config.schema.MODEL_KEYWORDS``, against
which the configuration checks every training recipe's ``model`` without importing torch; a new or
changed builder updates it (tests/test_config.py fails until it does).
"""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Builder) -> Builder:
    """Register a builder function under its own ``__name__``; a second builder of that name is an error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice ({_REGISTRY[name].__module__} and {fn.__module__})")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def get_model(name: str, **cfg) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments ``cfg``.

    Raises ``ValueError`` naming every registered model when ``name`` is unknown.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    return builder(**cfg)


def accepts(name: str, argument: str) -> bool:
    """Whether the builder of ``name`` takes the keyword ``argument``."""
    import inspect

    return argument in inspect.signature(_REGISTRY[name]).parameters
