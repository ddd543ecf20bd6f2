"""One input feature of a model: :class:`Feature`, its kind, dtype, range or categories.

A feature is ``"numeric"`` (ints and floats, with the training range) or ``"categorical"`` (a
fixed set of strings, integer codes or booleans). It also says whether a request must carry it
(``required``) and whether its value may be null (``nullable``).
:class:`~sluice.models.schema.FeatureSchema` holds the ordered features of a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sluice.errors import SluiceError

Kind = Literal["numeric", "categorical"]
UnknownPolicy = Literal["reject", "ignore"]
KINDS: tuple[str, ...] = ("numeric", "categorical")
UNKNOWN_POLICIES: tuple[str, ...] = ("reject", "ignore")


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
        Whether the value may be null (or NaN); the model then imputes it. Inferred: the
        training column had missing values.
    unknown
        What to do with a category not in ``categories``: ``"reject"`` (error) or
        ``"ignore"`` (pass it on; the model's encoder must handle unknowns).
    required
        Whether every instance must carry the feature's key. A feature that may be absent must
        be nullable: an absent value is scored as a null one. ``None`` (a schema written before
        this field existed) means what those schemas meant: required unless nullable.
    """

    name: str
    kind: Kind
    dtype: str = "float64"
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] | None = None
    nullable: bool = False
    unknown: UnknownPolicy = "reject"
    required: bool | None = None

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise SluiceError(f"feature name must be a non-empty string, got {self.name!r}")
        for flag, allowed in (("nullable", bool), ("required", bool | None)):
            if not isinstance(getattr(self, flag), allowed):
                raise SluiceError(f"{where}: {flag} must be true or false, got {getattr(self, flag)!r}")
        if self.required is None:
            object.__setattr__(self, "required", not self.nullable)
        elif not self.required and not self.nullable:
            raise SluiceError(
                f"{where}: a feature that may be absent must be nullable (an absent value is scored as null)"
            )
        if self.kind not in KINDS:
            raise SluiceError(f"{where}: kind must be 'numeric' or 'categorical', got {self.kind!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise SluiceError(f"{where}: unknown must be 'reject' or 'ignore', got {self.unknown!r}")
        if self.kind == "categorical":
            if not self.categories:
                raise SluiceError(f"{where}: a categorical feature needs a non-empty list of categories")
            if not isinstance(self.categories, tuple):
                # A caller may pass a list (e.g. from JSON); the field is typed as what it becomes.
                object.__setattr__(self, "categories", tuple(self.categories))  # type: ignore[unreachable]
            category_type_of(self.name, self.categories)  # raises on mixed types
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
        return category_type_of(self.name, self.categories) if self.categories else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.kind == "numeric":
            out.update(min=self.min, max=self.max)
        else:
            out.update(categories=list(self.categories or ()), unknown=self.unknown)
        out["nullable"] = self.nullable
        out["required"] = self.required
        return out


def category_type_of(name: str, categories: Sequence[Any]) -> str:
    """``"boolean"``, ``"string"`` or ``"integer"``: the one type of ``categories``, else an error."""
    if all(isinstance(c, bool) for c in categories):
        return "boolean"
    if all(isinstance(c, str) for c in categories):
        return "string"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in categories):
        return "integer"
    raise SluiceError(f"feature {name!r}: categories must be all strings, all integers or all booleans")
