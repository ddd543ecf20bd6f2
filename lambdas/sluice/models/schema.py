"""The feature schema of a model: what a scoring request must look like.

A :class:`FeatureSchema` is learned from the training DataFrame (:meth:`FeatureSchema.infer`),
stored with every registered version, turned into a JSON Schema (draft-04) for API Gateway
request validation (:meth:`FeatureSchema.to_json_schema`), and used by the scoring runtime
to validate and shape requests (:meth:`FeatureSchema.validate`, implemented in
:mod:`sluice.models.validation`).

Per feature, the schema says whether a request must carry it (``required``) and whether its
value may be null (``nullable``); the request JSON Schema and the validation enforce both.
:meth:`FeatureSchema.infer` learns them from the training (reference) data:

* **nullable**: the reference column holds a missing value (the model's imputation has learned
  what to fill in). A null for any other feature is refused.
* **required**: every feature, since the reference data has every column for every row. A
  request sends each feature, as null where the value is unknown and the feature is nullable;
  an absent key is refused rather than silently imputed. Features a client may leave out are
  declared with ``infer(..., optional=[...])``; they are nullable too, because an absent value
  is scored as a null one.

A schema record without ``required`` (written before it existed) keeps its old meaning: a
feature is required unless it is nullable.

pandas is imported lazily: everything but :meth:`FeatureSchema.infer` and validation with
``as_frame=True`` works with numpy alone, because the zip endpoint flavour ships numpy and ONNX
Runtime only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sluice.errors import SluiceError
from sluice.models.inputs import Feature, UnknownPolicy, category_type_of
from sluice.models.validation import RequestValidator, Validation
from sluice.names import JSON_SCHEMA_DRAFT4

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "sluice.feature-schema/1"


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
            # A caller may pass a list; the field is typed as what it becomes.
            object.__setattr__(self, "features", tuple(self.features))  # type: ignore[unreachable]
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
        optional: Sequence[str] = (),
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
        optional
            Features a request may leave out (not ``required``, and ``nullable``). Every
            other feature is required; a feature is nullable when its column has a missing value.

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
        for what, names in (("categorical", forced), ("optional", list(optional))):
            absent = [c for c in names if c not in df.columns]
            if absent:
                raise SluiceError(
                    f"{what} column(s) not in the training frame: {', '.join(map(repr, absent))}"
                )
        policies = unknown if isinstance(unknown, Mapping) else dict.fromkeys(df.columns, unknown)
        features = []
        for name in df.columns:
            if not isinstance(name, str):
                raise SluiceError(f"feature names must be strings, got column {name!r}")
            column = df[name]
            feature = _infer_feature(
                name,
                column,
                force_categorical=name in forced,
                unknown=policies.get(name, "reject"),
                max_categories=max_categories,
            )
            required = name not in optional
            features.append(replace(feature, required=required, nullable=feature.nullable or not required))
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
        allowed = {"name", "kind", "dtype", "min", "max", "categories", "nullable", "required", "unknown"}
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
            if not isinstance(item.get("required"), bool | None):
                raise SluiceError(f"{where}.required: expected true or false")
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
                        required=item.get("required"),  # absent in older records: required unless nullable
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

        Suitable for an API Gateway REST request model. Required features are in each
        instance's ``required``; nullable ones also accept ``null`` (``"type": [..., "null"]``).
        Categorical features with the ``"reject"`` policy become an ``enum``. Numeric ranges
        are not enforced (out-of-range values are flagged by :meth:`validate`, not refused at
        the gateway).

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
                    prop["enum"] = [*(f.categories or ()), None] if f.nullable else list(f.categories or ())
            properties[f.name] = prop
        instance: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": allow_extra,
        }
        required = [f.name for f in self.features if f.required]
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
        return self._validator.validate(records, out_of_range=out_of_range, as_frame=as_frame)

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @cached_property
    def _validator(self) -> RequestValidator:
        return RequestValidator(self.features)


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
    category_type_of(name, categories)
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
