"""Type checks on request cells: which cells are numbers, categories of a kind, or missing.

Each check runs over the distinct Python types of a column (one C-level pass over the cells)
rather than cell by cell, so well-typed columns cost almost nothing.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

_NONE_TYPE = type(None)
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)
_INTEGER_TYPES = (int, np.integer)
# Python ints beyond this do not fit a float64 (JSON allows arbitrarily long integers).
_MAX_FLOAT_INT = int(np.finfo(np.float64).max)


def is_number_or_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return -_MAX_FLOAT_INT <= v <= _MAX_FLOAT_INT
    return isinstance(v, _NUMBER_TYPES) and not isinstance(v, _BOOL_TYPES)


def cell_types(values: np.ndarray) -> set[type]:
    # One C-level pass over the cells; the loops below run over the few distinct types only.
    found = set(map(type, values.ravel()))
    found.discard(_NONE_TYPE)
    return found


def as_float_matrix(block: np.ndarray) -> np.ndarray | None:
    """``block`` (object cells) as floats when every cell is a number or null, else ``None``."""
    if not all(issubclass(t, _NUMBER_TYPES) and not issubclass(t, _BOOL_TYPES) for t in cell_types(block)):
        return None
    try:
        return block.astype(float)
    except OverflowError:  # an integer too large for a float: the slow path names it
        return None


def only_category_type(values: np.ndarray, kind: str) -> bool:
    types = cell_types(values)
    if kind == "string":
        return all(issubclass(t, str) for t in types)
    if kind == "boolean":
        return all(issubclass(t, _BOOL_TYPES) for t in types)
    return all(issubclass(t, _INTEGER_TYPES) and not issubclass(t, _BOOL_TYPES) for t in types)


def is_missing(values: np.ndarray) -> np.ndarray:
    missing: np.ndarray
    if values.dtype == np.float64:
        missing = np.isnan(values)
        return missing
    pd = sys.modules.get("pandas")
    if pd is not None:  # also knows pd.NA and NaT, which only arrive from DataFrames
        missing = pd.isna(values)
        return missing
    with np.errstate(invalid="ignore"):
        # Element-wise on object cells: None, or a float NaN (the only value unequal to itself).
        return np.asarray((values == None) | (values != values), dtype=bool)  # noqa: E711


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool | np.bool_)


def is_int(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return False
    if isinstance(v, int | np.integer):
        return True
    return isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer()


#: The per-cell check of each categorical kind (the slow path, for columns with mixed types).
CATEGORY_CHECKS: dict[str, Callable[[Any], bool]] = {"string": is_str, "integer": is_int, "boolean": is_bool}
