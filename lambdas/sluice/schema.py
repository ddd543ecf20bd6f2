"""The feature schema of a model: what a scoring request must look like.

A :class:`FeatureSchema` is learned from the training DataFrame (:meth:`FeatureSchema.infer`),
stored with every registered version, turned into a JSON Schema (draft-04) for API Gateway
request validation (:meth:`FeatureSchema.to_json_schema`), and used by the scoring runtime
to validate and shape requests (:meth:`FeatureSchema.validate`).

Request shape::

    {"instances": [{"age": 42, "plan": "gold", ...}, ...]}

Validation is vectorised: records become one array per feature; type, null, category and
range checks run on whole columns (numeric features as one float matrix). Python only loops over
records to find missing keys and over offending cells to name them in the error messages.

pandas is imported lazily: :meth:`FeatureSchema.validate` with ``as_frame=False`` (the scoring
path) and everything else but :meth:`FeatureSchema.infer` work with numpy alone, because the
zip endpoint flavour ships numpy and ONNX Runtime only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from sluice.errors import SluiceError
from sluice.names import JSON_SCHEMA_DRAFT4

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "sluice.feature-schema/1"
Kind = Literal["numeric", "categorical"]
UnknownPolicy = Literal["reject", "ignore"]
KINDS: tuple[str, ...] = ("numeric", "categorical")
UNKNOWN_POLICIES: tuple[str, ...] = ("reject", "ignore")
# Cells quoted in an error message, so one bad batch cannot produce a megabyte of text.
_EXAMPLES = 3
_NONE_TYPE = type(None)
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)
_INTEGER_TYPES = (int, np.integer)
# Python ints beyond this do not fit a float64 (JSON allows arbitrarily long integers).
_MAX_FLOAT_INT = int(np.finfo(np.float64).max)
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

    def __init__(self, message: str, *, feature: str, code: str, rows: Sequence[int]) -> None:
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


@dataclass(frozen=True)
class Feature:
    """One input feature.

    Parameters
    ----------
    name
        Column name, as sent in requests.
    kind
        ``"numeric"`` (ints and floats) or ``"categorical"`` (strings, integer codes or booleans).
    dtype
        The pandas dtype seen at training time (e.g. ``"float64"``, ``"int64"``, ``"str"``,
        ``"category"``, ``"bool"``); validated frames use it where the values allow.
    min, max
        Training range of a numeric feature. Values outside it are flagged, not rejected,
        unless :meth:`FeatureSchema.validate` is asked to.
    categories
        Allowed values of a categorical feature (all ``str``, all ``int`` or all ``bool``).
    nullable
        Whether null/NaN (or an absent key) is allowed. Inferred: the training column had missing values.
    unknown
        What to do with a category not in ``categories``: ``"reject"`` (error) or
        ``"ignore"`` (pass it on; the model's encoder must handle unknowns).
    """

    name: str
    kind: Kind
    dtype: str = "float64"
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] | None = None
    nullable: bool = False
    unknown: UnknownPolicy = "reject"

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise SluiceError(f"feature name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise SluiceError(f"{where}: kind must be 'numeric' or 'categorical', got {self.kind!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise SluiceError(f"{where}: unknown must be 'reject' or 'ignore', got {self.unknown!r}")
        if self.kind == "categorical":
            if not self.categories:
                raise SluiceError(f"{where}: a categorical feature needs a non-empty list of categories")
            if not isinstance(self.categories, tuple):
                object.__setattr__(self, "categories", tuple(self.categories))
            _category_type(self.name, self.categories)  # raises on mixed types
        else:
            if self.categories is not None:
                raise SluiceError(f"{where}: a numeric feature has no categories")
            for bound in ("min", "max"):
                value = getattr(self, bound)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise SluiceError(f"{where}: {bound} must be a number or null, got {value!r}")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise SluiceError(f"{where}: min {self.min} is greater than max {self.max}")

    @property
    def category_type(self) -> str | None:
        """``"string"``, ``"integer"`` or ``"boolean"`` for a categorical feature, else ``None``."""
        return _category_type(self.name, self.categories) if self.categories else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.kind == "numeric":
            out.update(min=self.min, max=self.max)
        else:
            out.update(categories=list(self.categories or ()), unknown=self.unknown)
        out["nullable"] = self.nullable
        return out


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered input features of a model.

    Build it with :meth:`infer` from the training frame, store it with :meth:`to_dict`,
    read it back with :meth:`from_dict`.
    """

    features: tuple[Feature, ...]
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.features, tuple):
            object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise SluiceError("a feature schema needs at least one feature")
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise SluiceError(f"feature {feature.name!r} appears twice in the schema")
            seen.add(feature.name)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        categorical: Sequence[str] | None = None,
        *,
        unknown: UnknownPolicy | Mapping[str, UnknownPolicy] = "reject",
        max_categories: int = 1000,
    ) -> FeatureSchema:
        """Learn the schema of the training features ``df`` (target column excluded).

        Parameters
        ----------
        df
            Training features, one column per feature, in the order the model expects.
        categorical
            Columns to treat as categorical even if numeric (e.g. integer codes). String,
            boolean and ``category`` columns are always categorical.
        unknown
            Unknown-category policy, for all categorical features or per feature name
            (features not in the mapping get ``"reject"``).
        max_categories
            Refuse categorical columns with more distinct values (IDs, free text).

        Raises
        ------
        SluiceError
            If a named column is absent, a column has an unsupported dtype (datetime,
            complex, mixed types) or too many categories.
        """
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            raise SluiceError(f"FeatureSchema.infer needs a pandas DataFrame, got {type(df).__name__}")
        forced = list(categorical or ())
        absent = [c for c in forced if c not in df.columns]
        if absent:
            raise SluiceError(
                f"categorical column(s) not in the training frame: {', '.join(map(repr, absent))}"
            )
        policies = unknown if isinstance(unknown, Mapping) else dict.fromkeys(df.columns, unknown)
        features = []
        for name in df.columns:
            if not isinstance(name, str):
                raise SluiceError(f"feature names must be strings, got column {name!r}")
            column = df[name]
            features.append(
                _infer_feature(
                    name,
                    column,
                    force_categorical=name in forced,
                    unknown=policies.get(name, "reject"),
                    max_categories=max_categories,
                )
            )
        return cls(tuple(features))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        """Read a schema written by :meth:`to_dict`.

        Raises
        ------
        SluiceError
            Naming the first invalid field, e.g. ``schema.features[2].kind``.
        """
        if not isinstance(data, Mapping):
            raise SluiceError(f"schema must be a JSON object, got {type(data).__name__}")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise SluiceError(f"schema.format: expected {FORMAT!r}, got {fmt!r}")
        raw = data.get("features")
        if not isinstance(raw, list) or not raw:
            raise SluiceError("schema.features: expected a non-empty list of features")
        allowed = {"name", "kind", "dtype", "min", "max", "categories", "nullable", "unknown"}
        features = []
        for i, item in enumerate(raw):
            where = f"schema.features[{i}]"
            if not isinstance(item, Mapping):
                raise SluiceError(f"{where}: expected an object, got {type(item).__name__}")
            extra = sorted(set(item) - allowed)
            if extra:
                raise SluiceError(f"{where}: unknown field(s) {', '.join(extra)}")
            for key in ("name", "kind"):
                if key not in item:
                    raise SluiceError(f"{where}.{key}: required")
            if not isinstance(item.get("nullable", False), bool):
                raise SluiceError(f"{where}.nullable: expected true or false")
            categories = item.get("categories")
            if categories is not None and not isinstance(categories, list):
                raise SluiceError(f"{where}.categories: expected a list")
            try:
                features.append(
                    Feature(
                        name=item["name"],
                        kind=item["kind"],
                        dtype=str(
                            item.get("dtype") or ("float64" if item["kind"] == "numeric" else "object")
                        ),
                        min=item.get("min"),
                        max=item.get("max"),
                        categories=tuple(categories) if categories is not None else None,
                        nullable=item.get("nullable", False),
                        unknown=item.get("unknown", "reject"),
                    )
                )
            except SluiceError as err:
                raise SluiceError(f"{where}: {err}") from None
        return cls(tuple(features), description=str(data.get("description", "")))

    # --- views --------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise SluiceError(f"no feature {name!r} in the schema") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "features": [f.to_dict() for f in self.features]}
        if self.description:
            out["description"] = self.description
        return out

    def to_json_schema(
        self, *, max_instances: int | None = None, allow_extra: bool = True, title: str = "ScoringRequest"
    ) -> dict[str, Any]:
        """JSON Schema (draft-04) of ``{"instances": [{feature: value, ...}, ...]}``.

        Suitable for an API Gateway REST request model. Non-nullable features are required;
        nullable ones may be null or absent. Categorical features with the ``"reject"``
        policy become an ``enum``. Numeric ranges are not enforced (out-of-range values are
        flagged by :meth:`validate`, not refused at the gateway).

        Parameters
        ----------
        max_instances
            ``maxItems`` of ``instances`` (unbounded when ``None``).
        allow_extra
            Whether instances may carry fields that are not features (e.g. an ID).
        """
        properties: dict[str, Any] = {}
        for f in self.features:
            if f.kind == "numeric":
                prop: dict[str, Any] = {"type": ["number", "null"] if f.nullable else "number"}
            else:
                json_type = {"string": "string", "integer": "integer", "boolean": "boolean"}[
                    f.category_type or "string"
                ]
                prop = {"type": [json_type, "null"] if f.nullable else json_type}
                if f.unknown == "reject":
                    prop["enum"] = [*f.categories, None] if f.nullable else list(f.categories or ())
            properties[f.name] = prop
        instance: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": allow_extra,
        }
        required = [f.name for f in self.features if not f.nullable]
        if required:
            instance["required"] = required
        instances: dict[str, Any] = {"type": "array", "minItems": 1, "items": instance}
        if max_instances is not None:
            instances["maxItems"] = int(max_instances)
        return {
            "$schema": JSON_SCHEMA_DRAFT4,
            "title": title,
            "type": "object",
            "required": ["instances"],
            "properties": {"instances": instances},
        }

    # --- validation ---------------------------------------------------------------------

    def validate(
        self,
        records: Sequence[Mapping[str, Any]] | pd.DataFrame,
        *,
        out_of_range: Literal["flag", "reject"] = "flag",
        as_frame: bool = True,
    ) -> Validation:
        """Check scoring instances against the schema and shape them for the model.

        Parameters
        ----------
        records
            The request's ``instances`` (a list of objects) or a DataFrame (batch scoring).
        out_of_range
            ``"flag"``: numeric values outside the training range are reported in
            ``frame.attrs["out_of_range"]`` only. ``"reject"``: they are errors too.
        as_frame
            ``True``: ``frame`` is a DataFrame with the training dtypes (needs pandas).
            ``False``: ``frame`` is a dict of one numpy array per feature (float for
            numeric features, object for categorical ones), with no pandas involved; the
            scoring runtime uses this to skip building a DataFrame per request.

        Returns
        -------
        Validation
            ``(frame, errors)``. Score ``frame`` only when ``errors`` is empty, or drop the
            rows named by each error's ``rows``. There is at most one error per feature and
            problem, whatever the number of instances; messages name the feature and quote
            the first offending instances, e.g. ``instances[3].age: expected a number, got 'x'``.

        Notes
        -----
        Well-typed input takes the fast path: all numeric features are checked and
        converted as one float matrix (one type inference and one conversion for the whole
        block), categorical features with one hash lookup per cell. Per-cell Python work
        happens only for columns that hold wrongly typed values, to name them.
        """
        if out_of_range not in ("flag", "reject"):
            raise SluiceError(f"out_of_range must be 'flag' or 'reject', got {out_of_range!r}")
        errors: list[FeatureError] = []
        columns, absent, n = self._columns(records, errors)
        out: dict[str, Any] = {}
        out_of_range_rows: dict[str, list[int]] = {}
        if self._numeric:
            self._validate_numeric(columns, absent, n, errors, out, out_of_range_rows, out_of_range)
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
                out[f.name] = _cast_categorical(values, f, has_missing=bool(_is_missing(values).any()))
        frame = pd.DataFrame(out, index=pd.RangeIndex(n), columns=list(self.names), copy=False)
        frame.attrs["out_of_range"] = out_of_range_rows
        return Validation(frame, errors)

    # --- internals ----------------------------------------------------------------------

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @cached_property
    def _position(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.features)}

    @cached_property
    def _required(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features if not f.nullable)

    @cached_property
    def _numeric(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "numeric")

    @cached_property
    def _numeric_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lows = np.array([-np.inf if f.min is None else f.min for f in self._numeric], dtype=float)
        highs = np.array([np.inf if f.max is None else f.max for f in self._numeric], dtype=float)
        nullable = np.array([f.nullable for f in self._numeric], dtype=bool)
        return lows, highs, nullable

    @cached_property
    def _category_sets(self) -> dict[str, frozenset]:
        return {f.name: frozenset(f.categories or ()) for f in self.features if f.kind == "categorical"}

    def _columns(
        self, records: Sequence[Mapping[str, Any]] | pd.DataFrame, errors: list[FeatureError]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        """One array per feature, the rows already reported as missing each feature (so they
        are not reported as null again), and the number of instances."""
        absent: dict[str, np.ndarray] = {}
        pd = sys.modules.get("pandas")  # a DataFrame can only arrive if pandas is loaded
        if pd is not None and isinstance(records, pd.DataFrame):
            from pandas.api import types as ptypes

            n = len(records)
            columns: dict[str, np.ndarray] = {}
            for f in self.features:
                if f.name in records.columns:
                    column = records[f.name]
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
                if not f.nullable:
                    errors.append(
                        FeatureError(
                            f"{f.name}: missing feature (column absent)",
                            feature=f.name,
                            code="missing",
                            rows=range(n),
                        )
                    )
                    absent[f.name] = np.ones(n, dtype=bool)
            return columns, absent, n
        if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
            raise SluiceError(f"instances: expected a list of objects, got {type(records).__name__}")
        n = len(records)
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
        # Only non-nullable features must be present: one C-level set comparison per record.
        required = self._required
        lacking = [i for i, r in enumerate(records) if not r.keys() >= required] if required else []
        if lacking:
            skip = set(bad_records)
            by_feature: dict[str, list[int]] = {}
            for i in lacking:
                if i not in skip:
                    for name in required - records[i].keys():
                        by_feature.setdefault(name, []).append(i)
            for name in sorted(by_feature, key=self._position.__getitem__):
                rows = by_feature[name]
                errors.append(
                    FeatureError(
                        f"instances[{rows[0]}].{name}: missing feature" + _more(rows),
                        feature=name,
                        code="missing",
                        rows=rows,
                    )
                )
                absent.setdefault(name, np.zeros(n, dtype=bool))[rows] = True
        columns = {
            f.name: np.fromiter((r.get(f.name) for r in records), dtype=object, count=n)
            for f in self.features
        }
        return columns, absent, n

    def _validate_numeric(
        self,
        columns: dict[str, np.ndarray],
        absent: dict[str, np.ndarray],
        n: int,
        errors: list[FeatureError],
        out: dict[str, Any],
        out_of_range_rows: dict[str, list[int]],
        out_of_range: str,
    ) -> None:
        numeric = self._numeric
        arrays = [columns[f.name] for f in numeric]
        matrix = None
        if all(a.dtype == np.float64 for a in arrays):  # DataFrame input with numeric dtypes
            matrix = np.column_stack(arrays) if arrays else np.empty((n, 0))
        else:
            block = np.empty((n, len(numeric)), dtype=object)
            for j, a in enumerate(arrays):
                block[:, j] = a
            # One C-level type inference for the whole block; None and NaN are skipped.
            matrix = _as_float_matrix(block)
            if matrix is None:
                matrix = np.empty((n, len(numeric)), dtype=float)
                for j, f in enumerate(numeric):
                    matrix[:, j] = _coerce_numeric(arrays[j], f, errors)
        lows, highs, nullable = self._numeric_bounds
        with np.errstate(invalid="ignore"):
            nan = np.isnan(matrix)
            infinite = np.isinf(matrix)
            outside = ((matrix < lows) | (matrix > highs)) & ~infinite
        nulls = nan & ~nullable
        if nulls.any():
            for j in np.flatnonzero(nulls.any(axis=0)):
                f = numeric[j]
                # Cells present with a wrong type became NaN too but are already reported as type errors.
                null_here = nulls[:, j] & _is_missing(arrays[j])
                if f.name in absent:
                    null_here &= ~absent[f.name]
                rows = np.flatnonzero(null_here)
                if rows.size:
                    errors.append(
                        FeatureError(
                            f"instances[{rows[0]}].{f.name}: null where a number is required" + _more(rows),
                            feature=f.name,
                            code="null",
                            rows=rows,
                        )
                    )
        if infinite.any():
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
        if outside.any():
            for j in np.flatnonzero(outside.any(axis=0)):
                f = numeric[j]
                rows = np.flatnonzero(outside[:, j])
                out_of_range_rows[f.name] = rows.tolist()
                if out_of_range == "reject":
                    errors.append(
                        FeatureError(
                            f"instances[{rows[0]}].{f.name}: {matrix[rows[0], j]:g} is outside the training "
                            f"range [{_bound(f.min, '-inf')}, {_bound(f.max, 'inf')}]" + _more(rows),
                            feature=f.name,
                            code="out_of_range",
                            rows=rows,
                        )
                    )
        has_nan = nan.any(axis=0)
        for j, f in enumerate(numeric):
            column = matrix[:, j]
            integer = f.dtype.startswith(("int", "uint")) and not has_nan[j]
            out[f.name] = column.astype(f.dtype) if integer else column

    def _validate_categorical(
        self, values: np.ndarray, f: Feature, absent: np.ndarray | None, errors: list[FeatureError]
    ) -> Any:
        kind = f.category_type or "string"
        n = len(values)
        missing = _is_missing(values)
        if not _only_category_type(values, kind):
            check = _CATEGORY_CHECKS[kind]
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
                        f"instances[{rows[0]}].{f.name}: null where a category is required" + _more(rows),
                        feature=f.name,
                        code="null",
                        rows=rows,
                    )
                )
        missing = _is_missing(values)
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


# --- helpers ---------------------------------------------------------------------------------


def _infer_feature(
    name: str, column: pd.Series, *, force_categorical: bool, unknown: str, max_categories: int
) -> Feature:
    import pandas as pd
    from pandas.api import types as ptypes

    dtype = column.dtype
    nullable = bool(column.isna().any())
    if ptypes.is_datetime64_any_dtype(dtype) or ptypes.is_timedelta64_dtype(dtype):
        raise SluiceError(
            f"column {name!r} has dtype {dtype}; convert dates to numeric features before training"
        )
    if ptypes.is_complex_dtype(dtype):
        raise SluiceError(f"column {name!r} has complex dtype {dtype}, which cannot be scored from JSON")
    numeric = ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype)
    if numeric and not force_categorical:
        values = column.to_numpy(dtype=float, na_value=np.nan)
        finite = values[np.isfinite(values)]
        return Feature(
            name=name,
            kind="numeric",
            dtype=str(dtype),
            min=float(finite.min()) if finite.size else None,
            max=float(finite.max()) if finite.size else None,
            nullable=nullable,
        )
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories.tolist()
    else:
        categories = column.dropna().unique().tolist()
    if numeric:  # integer codes forced categorical
        if not all(float(c).is_integer() for c in categories):
            raise SluiceError(f"column {name!r} is marked categorical but holds non-integer numbers")
        categories = [int(c) for c in categories]
    categories = [c.item() if isinstance(c, np.generic) else c for c in categories]
    if not categories:
        raise SluiceError(f"column {name!r} has no values to learn categories from")
    if len(categories) > max_categories:
        raise SluiceError(
            f"column {name!r} has {len(categories)} distinct values (more than max_categories={max_categories}); "
            "drop it (IDs, free text) or raise max_categories"
        )
    _category_type(name, categories)
    try:
        categories = sorted(categories)
    except TypeError:
        raise SluiceError(f"column {name!r} mixes value types; cast it to one type before training") from None
    return Feature(
        name=name,
        kind="categorical",
        dtype=str(dtype),
        categories=tuple(categories),
        nullable=nullable,
        unknown=unknown,  # type: ignore[arg-type]
    )


def _category_type(name: str, categories: Sequence[Any]) -> str:
    if all(isinstance(c, bool) for c in categories):
        return "boolean"
    if all(isinstance(c, str) for c in categories):
        return "string"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in categories):
        return "integer"
    raise SluiceError(f"feature {name!r}: categories must be all strings, all integers or all booleans")


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
    ok = np.fromiter(map(_is_number_or_null, values), dtype=bool, count=len(values))
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


def _is_number_or_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return -_MAX_FLOAT_INT <= v <= _MAX_FLOAT_INT
    return isinstance(v, _NUMBER_TYPES) and not isinstance(v, _BOOL_TYPES)


def _types(values: np.ndarray) -> set[type]:
    # One C-level pass over the cells; the loops below run over the few distinct types only.
    found = set(map(type, values.ravel()))
    found.discard(_NONE_TYPE)
    return found


def _as_float_matrix(block: np.ndarray) -> np.ndarray | None:
    """``block`` (object cells) as floats when every cell is a number or null, else ``None``."""
    if not all(issubclass(t, _NUMBER_TYPES) and not issubclass(t, _BOOL_TYPES) for t in _types(block)):
        return None
    try:
        return block.astype(float)
    except OverflowError:  # an integer too large for a float: the slow path names it
        return None


def _only_category_type(values: np.ndarray, kind: str) -> bool:
    types = _types(values)
    if kind == "string":
        return all(issubclass(t, str) for t in types)
    if kind == "boolean":
        return all(issubclass(t, _BOOL_TYPES) for t in types)
    return all(issubclass(t, _INTEGER_TYPES) and not issubclass(t, _BOOL_TYPES) for t in types)


def _is_missing(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float64:
        return np.isnan(values)
    pd = sys.modules.get("pandas")
    if pd is not None:  # also knows pd.NA and NaT, which only arrive from DataFrames
        return pd.isna(values)
    with np.errstate(invalid="ignore"):
        # Element-wise on object cells: None, or a float NaN (the only value unequal to itself).
        return np.asarray((values == None) | (values != values), dtype=bool)  # noqa: E711


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool | np.bool_)


def _is_int(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return False
    if isinstance(v, int | np.integer):
        return True
    return isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer()


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


_CATEGORY_CHECKS = {"string": _is_str, "integer": _is_int, "boolean": _is_bool}
