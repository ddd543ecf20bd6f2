"""Validation of scoring requests against a model's features, vectorised per column.

Request shape::

    {"instances": [{"age": 42, "plan": "gold", ...}, ...]}

Records become one array per feature; type, null, category and range checks run on whole
columns (numeric features as one float matrix). Python only loops over records to find missing
keys and over offending cells to name them in the error messages. A required feature's key
must be present (``instances[3].age: required``), and only a nullable feature may be null
(``instances[3].age: may not be null``); an absent optional feature counts as null.

pandas is imported lazily: validation with ``as_frame=False`` (the scoring path) works with
numpy alone, because the zip endpoint flavour ships numpy and ONNX Runtime only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from sluice.errors import SluiceError
from sluice.models.cells import (
    CATEGORY_CHECKS,
    as_float_matrix,
    is_missing,
    is_number_or_null,
    only_category_type,
)
from sluice.models.inputs import Feature

if TYPE_CHECKING:
    import pandas as pd

# Cells quoted in an error message, so one bad batch cannot produce a megabyte of text.
_EXAMPLES = 3
_ARTICLE = {"string": "a", "integer": "an", "boolean": "a"}


class FeatureError(SluiceError):
    """A request does not match the schema.

    Attributes
    ----------
    feature
        The offending feature (``""`` when the record itself is wrong, e.g. not an object).
    code
        ``"missing"``, ``"type"``, ``"null"``, ``"unknown_category"``, ``"out_of_range"`` or
        ``"record"``.
    rows
        Positions (0-based, in request order) of the offending instances.
    """

    def __init__(self, message: str, *, feature: str, code: str, rows: Sequence[int] | np.ndarray) -> None:
        super().__init__(message)
        self.feature = feature
        self.code = code
        self.rows = tuple(int(r) for r in rows)


class Validation(NamedTuple):
    """Result of :meth:`FeatureSchema.validate`; unpacks as ``frame, errors``.

    ``frame`` has one column per feature in schema order and one row per instance; cells
    that failed validation are missing (NaN). ``frame.attrs["out_of_range"]`` maps each
    numeric feature with values outside the training range to the offending row positions
    (these are not errors unless ``out_of_range="reject"``).
    """

    frame: pd.DataFrame | dict[str, np.ndarray]
    errors: list[FeatureError]


class RequestValidator:
    """Checks and shapes scoring instances for the features of one schema.

    Built once per schema (see :meth:`sluice.models.schema.FeatureSchema.validate`), so the
    per-request work is the vectorised checks only.
    """

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        self.names = [f.name for f in self.features]
        self._position = {f.name: i for i, f in enumerate(self.features)}
        self._required = frozenset(f.name for f in self.features if f.required)
        self._numeric = tuple(f for f in self.features if f.kind == "numeric")
        self._lows = np.array([-np.inf if f.min is None else f.min for f in self._numeric], dtype=float)
        self._highs = np.array([np.inf if f.max is None else f.max for f in self._numeric], dtype=float)
        self._nullable = np.array([f.nullable for f in self._numeric], dtype=bool)
        self._category_sets = {
            f.name: frozenset(f.categories or ()) for f in self.features if f.kind == "categorical"
        }

    def validate(
        self,
        records: Sequence[Mapping[str, Any]] | pd.DataFrame,
        *,
        out_of_range: Literal["flag", "reject"] = "flag",
        as_frame: bool = True,
    ) -> Validation:
        """See :meth:`sluice.models.schema.FeatureSchema.validate`."""
        if out_of_range not in ("flag", "reject"):
            raise SluiceError(f"out_of_range must be 'flag' or 'reject', got {out_of_range!r}")
        errors: list[FeatureError] = []
        columns, absent, n = self._columns(records, errors)
        out: dict[str, Any] = {}
        out_of_range_rows: dict[str, list[int]] = {}
        if self._numeric:
            matrix, nan = self._validate_numeric(columns, absent, n, errors)
            self._check_range(matrix, errors, out_of_range_rows, reject=out_of_range == "reject")
            has_nan = np.asarray(nan.any(axis=0))
            for j, f in enumerate(self._numeric):
                column = matrix[:, j]
                integer = f.dtype.startswith(("int", "uint")) and not has_nan[j]
                out[f.name] = column.astype(f.dtype) if integer else column
        for f in self.features:
            if f.kind == "categorical":
                out[f.name] = self._validate_categorical(columns[f.name], f, absent.get(f.name), errors)
        errors.sort(key=lambda e: (e.rows[0] if e.rows else -1, self._position.get(e.feature, -1)))
        if not as_frame:
            return Validation(out, errors)
        import pandas as pd

        for f in self.features:
            if f.kind == "categorical":
                values = out[f.name]
                out[f.name] = _cast_categorical(values, f, has_missing=bool(is_missing(values).any()))
        frame = pd.DataFrame(out, index=pd.RangeIndex(n), columns=self.names, copy=False)
        frame.attrs["out_of_range"] = out_of_range_rows
        return Validation(frame, errors)

    # --- columns ------------------------------------------------------------------------

    def _columns(
        self, records: Sequence[Mapping[str, Any]] | pd.DataFrame, errors: list[FeatureError]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        """One array per feature, the rows already reported as missing each feature (so they
        are not reported as null again), and the number of instances."""
        pd = sys.modules.get("pandas")  # a DataFrame can only arrive if pandas is loaded
        if pd is not None and isinstance(records, pd.DataFrame):
            return self._frame_columns(records, errors)
        if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
            raise SluiceError(f"instances: expected a list of objects, got {type(records).__name__}")
        return self._record_columns(records, errors)

    def _frame_columns(
        self, frame: pd.DataFrame, errors: list[FeatureError]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        from pandas.api import types as ptypes

        n = len(frame)
        columns: dict[str, np.ndarray] = {}
        absent: dict[str, np.ndarray] = {}
        for f in self.features:
            if f.name in frame.columns:
                column = frame[f.name]
                numeric_dtype = ptypes.is_numeric_dtype(column.dtype) and not ptypes.is_bool_dtype(
                    column.dtype
                )
                columns[f.name] = (
                    column.to_numpy(dtype=float, na_value=np.nan)
                    if numeric_dtype and f.kind == "numeric"
                    else column.to_numpy(dtype=object, na_value=None)
                )
                continue
            columns[f.name] = np.full(n, None, dtype=object)
            if f.required:
                errors.append(
                    FeatureError(
                        f"{f.name}: required (column absent)",
                        feature=f.name,
                        code="missing",
                        rows=range(n),
                    )
                )
                absent[f.name] = np.ones(n, dtype=bool)
        return columns, absent, n

    def _record_columns(
        self, records: Sequence[Any], errors: list[FeatureError]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        n = len(records)
        absent: dict[str, np.ndarray] = {}
        bad_records = [i for i, r in enumerate(records) if not isinstance(r, Mapping)]
        if bad_records:
            first = bad_records[0]
            errors.append(
                FeatureError(
                    f"instances[{first}]: expected an object of features, got {type(records[first]).__name__}"
                    + _more(bad_records),
                    feature="",
                    code="record",
                    rows=bad_records,
                )
            )
            bad = set(bad_records)
            records = [{} if i in bad else r for i, r in enumerate(records)]
            # A record that is not an object is one error, not one per feature.
            not_objects = np.zeros(n, dtype=bool)
            not_objects[bad_records] = True
            absent = {f.name: not_objects.copy() for f in self.features}
        self._report_missing(records, set(bad_records), errors, absent)
        columns = {
            f.name: np.fromiter((r.get(f.name) for r in records), dtype=object, count=n)
            for f in self.features
        }
        return columns, absent, n

    def _report_missing(
        self,
        records: Sequence[Mapping[str, Any]],
        skip: set[int],
        errors: list[FeatureError],
        absent: dict[str, np.ndarray],
    ) -> None:
        # Only required features must be present: one C-level set comparison per record.
        required = self._required
        lacking = [i for i, r in enumerate(records) if not r.keys() >= required] if required else []
        by_feature: dict[str, list[int]] = {}
        for i in lacking:
            if i not in skip:
                for name in required - records[i].keys():
                    by_feature.setdefault(name, []).append(i)
        for name in sorted(by_feature, key=self._position.__getitem__):
            rows = by_feature[name]
            errors.append(
                FeatureError(
                    f"instances[{rows[0]}].{name}: required" + _more(rows),
                    feature=name,
                    code="missing",
                    rows=rows,
                )
            )
            absent.setdefault(name, np.zeros(len(records), dtype=bool))[rows] = True

    # --- numeric features ---------------------------------------------------------------

    def _validate_numeric(
        self,
        columns: dict[str, np.ndarray],
        absent: dict[str, np.ndarray],
        n: int,
        errors: list[FeatureError],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The numeric features as one float matrix (NaN where invalid), and where it was NaN."""
        numeric = self._numeric
        arrays = [columns[f.name] for f in numeric]
        matrix = _numeric_matrix(arrays, numeric, n, errors)
        with np.errstate(invalid="ignore"):
            nan = np.isnan(matrix)
            infinite = np.isinf(matrix)
        nulls = nan & ~self._nullable
        for j in np.flatnonzero(nulls.any(axis=0)):
            f = numeric[j]
            # Cells present with a wrong type became NaN too but are already reported as type errors.
            null_here = nulls[:, j] & is_missing(arrays[j])
            if f.name in absent:
                null_here &= ~absent[f.name]
            rows = np.flatnonzero(null_here)
            if rows.size:
                errors.append(
                    FeatureError(
                        f"instances[{rows[0]}].{f.name}: may not be null" + _more(rows),
                        feature=f.name,
                        code="null",
                        rows=rows,
                    )
                )
        for j in np.flatnonzero(infinite.any(axis=0)):
            f = numeric[j]
            rows = np.flatnonzero(infinite[:, j])
            errors.append(
                FeatureError(
                    f"instances[{rows[0]}].{f.name}: expected a finite number, got {matrix[rows[0], j]}"
                    + _more(rows),
                    feature=f.name,
                    code="type",
                    rows=rows,
                )
            )
        matrix[infinite] = np.nan
        return matrix, nan

    def _check_range(
        self, matrix: np.ndarray, errors: list[FeatureError], flagged: dict[str, list[int]], *, reject: bool
    ) -> None:
        """Flag (and with ``reject``, report) values outside the training range."""
        with np.errstate(invalid="ignore"):
            outside = (matrix < self._lows) | (matrix > self._highs)
        for j in np.flatnonzero(outside.any(axis=0)):
            f = self._numeric[j]
            rows = np.flatnonzero(outside[:, j])
            flagged[f.name] = rows.tolist()
            if reject:
                errors.append(
                    FeatureError(
                        f"instances[{rows[0]}].{f.name}: {matrix[rows[0], j]:g} is outside the training "
                        f"range [{_bound(f.min, '-inf')}, {_bound(f.max, 'inf')}]" + _more(rows),
                        feature=f.name,
                        code="out_of_range",
                        rows=rows,
                    )
                )

    # --- categorical features -----------------------------------------------------------

    def _validate_categorical(
        self, values: np.ndarray, f: Feature, absent: np.ndarray | None, errors: list[FeatureError]
    ) -> Any:
        kind = f.category_type or "string"
        n = len(values)
        missing = is_missing(values)
        if not only_category_type(values, kind):
            check = CATEGORY_CHECKS[kind]
            ok = np.fromiter(map(check, values), dtype=bool, count=n) | missing
            bad = np.flatnonzero(~ok)
            if bad.size:
                errors.append(
                    FeatureError(
                        f"instances[{bad[0]}].{f.name}: expected {_ARTICLE[kind]} {kind} category, "
                        f"got {_quote(values[bad[0]])}" + _more(bad),
                        feature=f.name,
                        code="type",
                        rows=bad,
                    )
                )
                values = values.copy()
                values[bad] = None
            if kind == "integer":  # 2.0 from JSON is the integer category 2
                values = np.array([None if v is None else int(v) for v in values], dtype=object)
        if not f.nullable and missing.any():
            rows = np.flatnonzero(missing if absent is None else missing & ~absent)
            if rows.size:
                errors.append(
                    FeatureError(
                        f"instances[{rows[0]}].{f.name}: may not be null" + _more(rows),
                        feature=f.name,
                        code="null",
                        rows=rows,
                    )
                )
        missing = is_missing(values)
        known = np.fromiter(map(self._category_sets[f.name].__contains__, values), dtype=bool, count=n)
        unknown = ~known & ~missing
        if unknown.any() and f.unknown == "reject":
            rows = np.flatnonzero(unknown)
            errors.append(
                FeatureError(
                    f"instances[{rows[0]}].{f.name}: unknown category {_quote(values[rows[0]])} "
                    f"(allowed: {_allowed(f.categories or ())})" + _more(rows),
                    feature=f.name,
                    code="unknown_category",
                    rows=rows,
                )
            )
            values = values.copy()
            values[unknown] = None
        return values


def _numeric_matrix(
    arrays: list[np.ndarray], numeric: Sequence[Feature], n: int, errors: list[FeatureError]
) -> np.ndarray:
    """The numeric columns as one float matrix; cells of a wrong type are reported and become NaN."""
    if all(a.dtype == np.float64 for a in arrays):  # DataFrame input with numeric dtypes
        return np.column_stack(arrays) if arrays else np.empty((n, 0))
    block = np.empty((n, len(numeric)), dtype=object)
    for j, a in enumerate(arrays):
        block[:, j] = a
    # One C-level type inference for the whole block; None and NaN are skipped.
    matrix = as_float_matrix(block)
    if matrix is None:
        matrix = np.empty((n, len(numeric)), dtype=float)
        for j, f in enumerate(numeric):
            matrix[:, j] = _coerce_numeric(arrays[j], f, errors)
    return matrix


def _cast_categorical(values: np.ndarray, f: Feature, *, has_missing: bool) -> Any:
    import pandas as pd

    if f.dtype == "category":
        return pd.Categorical(values, categories=list(f.categories or ()))
    if f.category_type == "string":
        return pd.array(values, dtype="str") if f.dtype == "str" else values
    if has_missing:  # ints/bools with holes cannot keep an integer/bool dtype
        return values
    try:
        return values.astype(f.dtype)
    except (TypeError, ValueError):
        return values


def _coerce_numeric(values: np.ndarray, f: Feature, errors: list[FeatureError]) -> np.ndarray:
    """Slow path for one numeric column that holds something other than numbers and nulls."""
    ok = np.fromiter(map(is_number_or_null, values), dtype=bool, count=len(values))
    bad = np.flatnonzero(~ok)
    if bad.size:
        errors.append(
            FeatureError(
                f"instances[{bad[0]}].{f.name}: expected a number, got {_quote(values[bad[0]])}" + _more(bad),
                feature=f.name,
                code="type",
                rows=bad,
            )
        )
        values = values.copy()
        values[bad] = None
    return values.astype(float)


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


def _quote(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed(categories: Sequence[Any]) -> str:
    shown = ", ".join(repr(c) for c in categories[:10])
    return shown + (f", ... {len(categories) - 10} more" if len(categories) > 10 else "")


def _more(rows: Sequence[int] | np.ndarray) -> str:
    count = len(rows)
    if count <= 1:
        return ""
    shown = ", ".join(f"instances[{int(r)}]" for r in list(rows)[1:_EXAMPLES])
    rest = count - min(count, _EXAMPLES)
    return f" (also {shown}" + (f" and {rest} more" if rest else "") + f"; {count} instances in all)"
