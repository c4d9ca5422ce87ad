"""The one unpickling MoodLake cannot avoid, restricted to data: petastorm's stored dataset schema.

Models, registry folders and checkpoints never unpickle code: registered weights are safetensors,
checkpoints and ImageNet ``.pth`` files are read with ``torch.load(weights_only=True)``. Petastorm,
though, stores a dataset's Unischema as a pickle in the Parquet metadata (``_common_metadata``) and
reads it with its own "restricted" unpickler, which admits every global of ``builtins`` (``exec``,
``eval``), ``numpy`` and ``pyspark``: a dataset folder that someone else can write could run code in
every training process. :func:`install` replaces it with :class:`SchemaUnpickler`, which admits
only the classes a schema is made of (petastorm's Unischema and codecs, numpy scalar types and
dtypes, Spark SQL data types, ``OrderedDict``, ``Decimal``) and refuses anything else with
``pickle.UnpicklingError``.
"""
from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle

_PLAIN = {("collections", "OrderedDict"), ("decimal", "Decimal"), ("builtins", "set"), ("builtins", "frozenset"),
          ("builtins", "bytearray"), ("builtins", "complex"), ("builtins", "slice"), ("builtins", "object"),
          ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"),
          ("copyreg", "_reconstructor"),
          ("petastorm.unischema", "Unischema"), ("petastorm.unischema", "UnischemaField"),
          ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
          ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype")}


def _admitted(module: str, name: str, obj) -> bool:
    if (module, name) in _PLAIN:
        return True
    if not isinstance(obj, type):
        return False
    if module == "petastorm.codecs":
        from petastorm.codecs import DataframeColumnCodec

        return issubclass(obj, DataframeColumnCodec)
    if module in ("numpy", "numpy.dtypes"):
        import numpy as np

        return issubclass(obj, (np.generic, np.dtype))
    if module == "pyspark.sql.types":
        from pyspark.sql.types import DataType

        return issubclass(obj, DataType)
    return False


class SchemaUnpickler(pickle.Unpickler):
    """An unpickler of petastorm schemas that refuses every global but the classes of a schema."""

    def find_class(self, module: str, name: str):
        # Python 2 names in protocols 0-2 (__builtin__, copy_reg), as pickle.Unpickler maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = None
        if "." not in name and not name.startswith("__"):
            try:
                obj = getattr(importlib.import_module(module), name) if module.split(".")[0] in (
                    "collections", "decimal", "builtins", "copyreg", "petastorm", "numpy", "pyspark") else None
            except (ImportError, AttributeError):
                obj = None
        if obj is None or not _admitted(module, name, obj):
            raise pickle.UnpicklingError(
                f"refused to unpickle {module}.{name}: a dataset's stored schema may only hold petastorm's "
                "schema classes (the dataset's _common_metadata was not written by MoodLake, or was tampered with)")
        return obj


def loads_schema(data: bytes):
    """``pickle.loads`` of a petastorm schema through :class:`SchemaUnpickler`."""
    return SchemaUnpickler(io.BytesIO(data)).load()


def install() -> None:
    """Make petastorm (``make_reader``, ``get_schema_from_dataset_url``) unpickle schemas with
    :func:`loads_schema` (petastorm 0.13 looks ``restricted_loads`` up in its module at each call)."""
    from petastorm.etl import legacy

    legacy.restricted_loads = loads_schema
