"""Per-feature state of the drift statistics: what a profile learns and what a sketch counts.

A numeric baseline keeps quantile bin edges at two resolutions (coarse ``bin_edges`` for PSI,
Jensen-Shannon and the plots; fine ``cdf_edges``, a superset, for KS and Wasserstein) with the
fine bins' counts and sums. A categorical baseline keeps its most frequent categories and one
"other/unseen" count. Both round-trip through JSON (``to_dict``/``from_dict``), checked field by
field. ``NumericCounts`` and ``CategoricalCounts`` are a target window's counts on those bins;
they add up, so sketches of chunks merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sluice.errors import SluiceError


@dataclass
class NumericBaseline:
    n_rows: int
    n_missing: int
    bin_edges: np.ndarray  # coarse edges, k - 1 of them for k bins
    cdf_edges: np.ndarray  # fine edges, a superset of bin_edges
    cdf_counts: np.ndarray
    cdf_sums: np.ndarray
    fine_to_coarse: np.ndarray = field(init=False)

    kind = "numeric"

    def __post_init__(self) -> None:
        if self.cdf_edges.size:
            tail = np.searchsorted(self.bin_edges, self.cdf_edges, side="right")
        else:
            tail = np.empty(0, dtype=np.intp)
        self.fine_to_coarse = np.concatenate(([0], tail)).astype(np.intp)

    @property
    def bin_counts(self) -> np.ndarray:
        return coarsen(self.cdf_counts, self.fine_to_coarse, self.bin_edges.size + 1)

    def binning(self) -> dict[str, Any]:
        return {"bin_edges": self.bin_edges.tolist(), "cdf_edges": self.cdf_edges.tolist()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "n_rows": self.n_rows,
            "n_missing": self.n_missing,
            "bin_edges": self.bin_edges.tolist(),
            "bin_counts": self.bin_counts.astype(np.int64).tolist(),
            "cdf_edges": self.cdf_edges.tolist(),
            "cdf_counts": self.cdf_counts.astype(np.int64).tolist(),
            "cdf_sums": self.cdf_sums.tolist(),
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> NumericBaseline:
        where = f"profile feature {name!r}"
        bin_edges = float_array(data, "bin_edges", where)
        cdf_edges = float_array(data, "cdf_edges", where)
        cdf_counts = count_array(data, "cdf_counts", where)
        cdf_sums = float_array(data, "cdf_sums", where)
        if cdf_counts.size != cdf_edges.size + 1 or cdf_sums.size != cdf_counts.size:
            raise SluiceError(f"{where}: cdf_counts and cdf_sums need len(cdf_edges) + 1 entries")
        for key, edges in (("bin_edges", bin_edges), ("cdf_edges", cdf_edges)):
            if edges.size and (not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0)):
                raise SluiceError(f"{where}: {key} must be finite and strictly increasing")
        if not np.all(np.isin(bin_edges, cdf_edges)):
            raise SluiceError(f"{where}: every bin_edges value must also be in cdf_edges")
        baseline = cls(
            n_rows=non_negative_int(data, "n_rows", where),
            n_missing=non_negative_int(data, "n_missing", where),
            bin_edges=bin_edges,
            cdf_edges=cdf_edges,
            cdf_counts=cdf_counts,
            cdf_sums=cdf_sums,
        )
        if "bin_counts" in data and not np.array_equal(
            count_array(data, "bin_counts", where), baseline.bin_counts
        ):
            raise SluiceError(f"{where}: bin_counts do not add up from cdf_counts")
        return baseline


@dataclass
class CategoricalBaseline:
    n_rows: int
    n_missing: int
    categories: list[str | int | float | bool]  # JSON scalars, most frequent first
    counts: np.ndarray  # one per category, then the other/unseen bucket
    index: pd.Index = field(init=False)

    kind = "categorical"

    def __post_init__(self) -> None:
        self.index = pd.Index(self.categories, dtype=object)

    def binning(self) -> dict[str, Any]:
        return {"categories": self.categories}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "n_rows": self.n_rows,
            "n_missing": self.n_missing,
            "categories": list(self.categories),
            "category_counts": self.counts[:-1].astype(np.int64).tolist(),
            "other_count": int(self.counts[-1]),
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> CategoricalBaseline:
        where = f"profile feature {name!r}"
        categories = data.get("categories")
        if not isinstance(categories, list) or not all(
            isinstance(c, str | int | float | bool) for c in categories
        ):
            raise SluiceError(f"{where}: 'categories' must be a list of JSON scalars")
        if len(set(categories)) != len(categories):
            raise SluiceError(f"{where}: 'categories' has duplicates")
        counts = count_array(data, "category_counts", where)
        if counts.size != len(categories):
            raise SluiceError(f"{where}: 'category_counts' needs one count per category")
        return cls(
            n_rows=non_negative_int(data, "n_rows", where),
            n_missing=non_negative_int(data, "n_missing", where),
            categories=list(categories),
            counts=np.append(counts, non_negative_int(data, "other_count", where)),
        )


def coarsen(fine_counts: np.ndarray, fine_to_coarse: np.ndarray, n_coarse: int) -> np.ndarray:
    return np.bincount(fine_to_coarse, weights=fine_counts, minlength=n_coarse)


def float_array(data: Mapping[str, Any], key: str, where: str) -> np.ndarray:
    try:
        out = np.asarray(data[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise SluiceError(f"{where}: {key!r} must be a list of numbers") from None
    if out.ndim != 1:
        raise SluiceError(f"{where}: {key!r} must be a flat list of numbers")
    return out


def count_array(data: Mapping[str, Any], key: str, where: str) -> np.ndarray:
    out = float_array(data, key, where)
    if np.any(out < 0) or np.any(out != np.round(out)):
        raise SluiceError(f"{where}: {key!r} must hold non-negative whole counts")
    return out


def non_negative_int(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SluiceError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    return value


@dataclass
class NumericCounts:
    n_rows: int
    n_missing: int
    counts: np.ndarray
    sums: np.ndarray

    def __add__(self, other: NumericCounts) -> NumericCounts:
        return NumericCounts(
            self.n_rows + other.n_rows,
            self.n_missing + other.n_missing,
            self.counts + other.counts,
            self.sums + other.sums,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_missing": self.n_missing,
            "counts": self.counts.astype(np.int64).tolist(),
            "sums": self.sums.tolist(),
        }


@dataclass
class CategoricalCounts:
    n_rows: int
    n_missing: int
    counts: np.ndarray

    def __add__(self, other: CategoricalCounts) -> CategoricalCounts:
        return CategoricalCounts(
            self.n_rows + other.n_rows, self.n_missing + other.n_missing, self.counts + other.counts
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_missing": self.n_missing,
            "counts": self.counts.astype(np.int64).tolist(),
        }


def empty_counts(baseline: NumericBaseline | CategoricalBaseline) -> NumericCounts | CategoricalCounts:
    if isinstance(baseline, NumericBaseline):
        size = baseline.cdf_counts.size
        return NumericCounts(0, 0, np.zeros(size), np.zeros(size))
    return CategoricalCounts(0, 0, np.zeros(baseline.counts.size))
