"""Reading the columns of a baseline or a target chunk: frames, values, quantile edges, categories.

The helpers the drift profile uses to fit its bins and to count a chunk on them. A numeric
column becomes sorted finite floats (NaN and +-inf count as missing) cut at the bin edges; a
categorical column becomes its distinct values as JSON scalars with their counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from sluice.errors import SluiceError

Frame = Any  # pandas.DataFrame, pyarrow.Table / RecordBatch, or a mapping of column -> array


def as_frame(data: Frame) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas") and hasattr(data, "schema"):  # pyarrow Table / RecordBatch
        return data.to_pandas()
    if isinstance(data, Mapping):
        return pd.DataFrame(dict(data))
    raise SluiceError(
        f"expected a pandas DataFrame, a pyarrow Table or RecordBatch, or a mapping of columns; "
        f"got {type(data).__name__}"
    )


def numeric_values(series: pd.Series, name: str) -> np.ndarray:
    try:
        if pd.api.types.is_bool_dtype(series.dtype):
            raise TypeError
        values: np.ndarray = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values
    except (TypeError, ValueError):
        raise SluiceError(
            f"feature {name!r} is numeric in the baseline profile but the target column holds "
            f"{series.dtype} values"
        ) from None


def finite_sorted(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values sorted (a fresh array), and how many were missing (NaN or +-inf)."""
    finite = np.isfinite(values)
    n_valid = int(np.count_nonzero(finite))
    kept = values.copy() if n_valid == values.size else values[finite]
    kept.sort()
    return kept, values.size - n_valid


def bin_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and sums per bin ``[edge[i-1], edge[i])``, open-ended at both ends.

    Sorting the chunk and cutting it at the edges is faster than ``searchsorted`` of every value
    into the edges with numpy's vectorised sort.
    """
    bounds = np.concatenate(([0], np.searchsorted(sorted_values, edges, side="left"), [sorted_values.size]))
    counts = np.diff(bounds).astype(np.float64)
    running = np.concatenate(([0.0], np.cumsum(sorted_values)))
    return counts, np.diff(running[bounds])


def quantile_edges(sorted_values: np.ndarray, n_bins: int) -> np.ndarray:
    """Baseline quantiles (inverted-CDF) splitting into ``n_bins``; heavy values isolated.

    A value holding at least one bin's worth of mass gets the bin ``[v, nextafter(v))`` of its
    own, so a constant column still has bins below, at and above its value.
    """
    n = sorted_values.size
    if n == 0:
        return np.empty(0)
    j = np.arange(1, n_bins, dtype=np.int64)
    positions = (j * n + n_bins - 1) // n_bins - 1
    candidates = np.unique(sorted_values[np.clip(positions, 0, n - 1)])
    mass = np.searchsorted(sorted_values, candidates, side="right") - np.searchsorted(
        sorted_values, candidates, side="left"
    )
    heavy = candidates[mass >= max(1.0, n / n_bins)]
    return np.unique(np.concatenate((candidates, np.nextafter(heavy, np.inf))))


def json_scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


def category_counts(series: pd.Series) -> tuple[pd.Index, np.ndarray, int]:
    """Distinct non-missing values (as JSON scalars), their counts, and the missing count."""
    found = series.value_counts(dropna=True, sort=False)
    counts = found.to_numpy(dtype=np.float64)
    index = found.index
    typed = index.dtype != object and (
        pd.api.types.is_string_dtype(index.dtype) or pd.api.types.is_numeric_dtype(index.dtype)
    )
    if not typed:
        index = pd.Index([json_scalar(v) for v in index], dtype=object)
    return index, counts, len(series) - int(counts.sum())


def is_categorical_dtype(dtype: Any) -> bool:
    """Strings, objects, booleans, pandas categoricals and anything else not numeric."""
    return pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype)
