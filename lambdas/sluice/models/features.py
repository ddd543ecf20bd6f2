"""Preprocessing with its learned state as plain JSON: imputation, normalisation, encoders.

The state is stored in the registry as three named artifacts (``imputation``, ``normalisation``,
``encoders``) so that a reviewer can read them, drift monitoring can reuse them, and scoring can
apply them with numpy alone (no scikit-learn transformer on the request path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError

if TYPE_CHECKING:  # pandas is not installed in the zip scoring flavour
    import pandas as pd

ARTIFACT_NAMES = ("imputation", "normalisation", "encoders")


class Preprocessor:
    """Median imputation and standardisation of numerics, one-hot encoding of categoricals.

    Parameters
    ----------
    numeric, categorical
        Feature names, in the order the model sees them (numerics first, then one-hot blocks).
    """

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)

    # -- learning ---------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        missing = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if missing:
            raise SluiceError(f"training data lacks feature column(s): {', '.join(missing)}")
        numbers = frame[self.numeric].to_numpy(dtype=float) if self.numeric else np.empty((len(frame), 0))
        medians = np.nanmedian(numbers, axis=0) if len(frame) else np.zeros(len(self.numeric))
        self.medians_ = np.where(np.isnan(medians), 0.0, medians)
        filled = np.where(np.isnan(numbers), self.medians_, numbers)
        self.means_ = filled.mean(axis=0) if len(frame) else np.zeros(len(self.numeric))
        scales = filled.std(axis=0) if len(frame) else np.ones(len(self.numeric))
        self.scales_ = np.where(scales > 0, scales, 1.0)
        self.categories_ = {c: sorted(str(v) for v in frame[c].dropna().unique()) for c in self.categorical}
        self._index()
        return self

    def _index(self) -> None:
        self._lookup = {c: {v: i for i, v in enumerate(cats)} for c, cats in self.categories_.items()}
        self.n_features_out_ = len(self.numeric) + sum(len(v) for v in self.categories_.values())

    @property
    def feature_names_out(self) -> list[str]:
        names = list(self.numeric)
        for c in self.categorical:
            names += [f"{c}={v}" for v in self.categories_[c]]
        return names

    # -- applying ---------------------------------------------------------------------------
    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Matrix for the estimator from a DataFrame (training, batch scoring)."""
        numbers = frame[self.numeric].to_numpy(dtype=float) if self.numeric else np.empty((len(frame), 0))
        codes = {c: frame[c].astype("string").fillna("").to_numpy(dtype=object) for c in self.categorical}
        return self._assemble(numbers, codes)

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Matrix from already-validated JSON records, without building a DataFrame (hot path)."""
        numbers = np.array([[_number(r.get(c)) for c in self.numeric] for r in records], dtype=float).reshape(
            len(records), len(self.numeric)
        )
        codes = {c: [r.get(c) for r in records] for c in self.categorical}
        return self._assemble(numbers, codes)

    def transform_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Matrix from validated columns, one array per feature (the scoring hot path).

        ``columns`` is what :meth:`sluice.models.schema.FeatureSchema.validate` returns with
        ``as_frame=False``: float arrays for numerics (NaN where missing), object arrays for
        categoricals (``None`` where missing). No per-cell Python work for numerics.
        """
        if self.numeric:
            numbers = np.column_stack([np.asarray(columns[c], dtype=float) for c in self.numeric])
        else:
            first = next(iter(columns.values()), ())
            numbers = np.empty((len(first), 0))
        return self._assemble(numbers, {c: columns[c] for c in self.categorical})

    def _assemble(self, numbers: np.ndarray, codes: Mapping[str, Sequence[Any]]) -> np.ndarray:
        rows = numbers.shape[0]
        out = np.zeros((rows, self.n_features_out_), dtype=float)
        filled = np.where(np.isnan(numbers), self.medians_, numbers)
        out[:, : len(self.numeric)] = (filled - self.means_) / self.scales_
        offset = len(self.numeric)
        for c in self.categorical:
            lookup = self._lookup[c]
            # Unknown or missing categories encode as all zeros (the schema decides whether they are allowed).
            index = _category_indices(lookup, codes[c], rows)
            hit = np.flatnonzero(index >= 0)
            out[hit, offset + index[hit]] = 1.0
            offset += len(lookup)
        return out

    # -- persistence ------------------------------------------------------------------------
    def to_artifacts(self) -> dict[str, dict[str, Any]]:
        """The learned state as the registry's named preprocessing artifacts (JSON-able)."""
        return {
            "imputation": {
                "strategy": "median",
                "numeric": dict(zip(self.numeric, self.medians_.tolist(), strict=True)),
            },
            "normalisation": {
                "strategy": "standard",
                "mean": dict(zip(self.numeric, self.means_.tolist(), strict=True)),
                "scale": dict(zip(self.numeric, self.scales_.tolist(), strict=True)),
            },
            "encoders": {"strategy": "one-hot", "categories": self.categories_},
        }

    @classmethod
    def from_artifacts(cls, artifacts: Mapping[str, Mapping[str, Any]]) -> Preprocessor:
        try:
            imputation = artifacts["imputation"]["numeric"]
            normalisation = artifacts["normalisation"]
            categories = artifacts["encoders"]["categories"]
        except (KeyError, TypeError) as err:
            raise SluiceError(f"preprocessing artifacts are incomplete: missing {err}") from None
        self = cls(numeric=list(imputation), categorical=list(categories))
        self.medians_ = np.array([imputation[c] for c in self.numeric], dtype=float)
        self.means_ = np.array([normalisation["mean"][c] for c in self.numeric], dtype=float)
        self.scales_ = np.array([normalisation["scale"][c] for c in self.numeric], dtype=float)
        self.categories_ = {c: list(v) for c, v in categories.items()}
        self._index()
        return self


def _category_indices(lookup: Mapping[str, int], values: Sequence[Any], rows: int) -> np.ndarray:
    """Position of each value in ``lookup`` (-1 for unknown or missing), as an integer array.

    Strings, the usual case, are looked up in one C-level pass (``map``); only the misses are
    looked at again in Python, so that a non-string value such as ``3`` still finds category ``"3"``.
    """
    misses: np.ndarray | range
    try:
        index = np.fromiter(map(lookup.get, values, repeat(-1)), dtype=np.intp, count=rows)
        misses = np.flatnonzero(index < 0)
    except TypeError:  # an unhashable value (validation normally rejects these first): go row by row
        index, misses = np.full(rows, -1, dtype=np.intp), range(rows)
    for row in misses:
        value = values[int(row)]
        if value is not None:
            index[row] = lookup.get(value if isinstance(value, str) else str(value), -1)
    return index


def _number(value: Any) -> float:
    if value is None:
        return np.nan
    return float(value)
