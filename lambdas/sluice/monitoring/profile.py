"""The drift baseline (``DriftProfile``): fitted on the training partition, it sketches target
windows on its bins and compares them with itself.

How it works
------------
``DriftProfile().fit(training_frame)`` stores, per feature, a bounded summary of the baseline:

* numeric features: quantile bin edges and counts at two resolutions. ``n_bins`` (20) coarse
  bins from the baseline quantiles, open-ended at both ends, carry PSI, Jensen-Shannon and the
  plots. A finer quantile grid (``cdf_bins``, 200) holds counts and per-bin sums: it carries the
  Kolmogorov-Smirnov statistic (the CDFs compared at every fine edge) and the Wasserstein
  distance (each fine bin collapsed to its mean). A value that holds at least one bin's worth of
  mass (a constant column, a zero-inflated one, an integer code) gets a bin of its own, so a
  target value above or below it never shares its bin.
* categorical features: the ``max_categories`` most frequent categories with their counts and
  one explicit "other/unseen" bucket for the rest and for anything the baseline never saw.
* every feature: the number of missing values (None, NaN, and for numerics also +-inf).

No raw values are kept, so the profile is a few kB per feature whatever the training set's size,
and it round-trips through ``json.dumps`` (``to_dict``/``from_dict``) for the model registry.

A target window is summarised the same way, chunk by chunk: ``profile.partial(chunk)`` returns
a ``TargetSketch`` (counts on the baseline's bins) and ``TargetSketch.merge`` adds two of them,
so memory does not grow with the window and chunks can be summarised by parallel workers
(a sketch is JSON too). ``profile.compare(sketch_or_frame)`` returns a ``DriftReport``.

The statistics are in :mod:`sluice.monitoring.stats`, their per-feature use in
:mod:`sluice.monitoring.compare`, and the decision policy is ``DriftPolicy``
(:mod:`sluice.monitoring.policy`); its docstring explains the calibration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from sluice.errors import SluiceError
from sluice.monitoring.baselines import (
    CategoricalBaseline,
    CategoricalCounts,
    NumericBaseline,
    NumericCounts,
    empty_counts,
    non_negative_int,
)
from sluice.monitoring.columns import (
    Frame,
    as_frame,
    bin_sorted,
    category_counts,
    finite_sorted,
    is_categorical_dtype,
    json_scalar,
    numeric_values,
    quantile_edges,
)
from sluice.monitoring.compare import compare_categorical, compare_numeric
from sluice.monitoring.formats import FORMAT_VERSION, PROFILE_FORMAT
from sluice.monitoring.policy import DriftPolicy
from sluice.monitoring.report import DriftReport, SideInfo
from sluice.monitoring.sketch import TargetSketch


class DriftProfile:
    """Per-feature baseline summary, fitted on the training partition.

    Parameters
    ----------
    n_bins
        Quantile bins per numeric feature for PSI, Jensen-Shannon and the plots (outer bins are
        open-ended).
    cdf_bins
        Finer quantile bins per numeric feature for the KS and Wasserstein statistics.
    max_categories
        Categories kept per categorical feature; the rest share the "other/unseen" bucket.
    features
        Columns to profile, in order; default every column.
    categorical
        Columns to treat as categorical whatever their dtype. By default strings, booleans,
        pandas categoricals and objects are categorical and the rest numeric.

    Attributes
    ----------
    features_ : dict[str, str]
        Feature name -> ``"numeric"`` or ``"categorical"``.
    n_rows_ : int
        Rows in the baseline.
    fingerprint_ : str
        Hash of the bins and categories; a ``TargetSketch`` carries the fingerprint of the
        profile that made it, so counts on different bins are never compared.
    """

    def __init__(
        self,
        *,
        n_bins: int = 20,
        cdf_bins: int = 200,
        max_categories: int = 50,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
    ) -> None:
        self.n_bins = n_bins
        self.cdf_bins = cdf_bins
        self.max_categories = max_categories
        self.features = features
        self.categorical = categorical

    # -- fitting --------------------------------------------------------------------------

    def fit(self, baseline: Frame) -> DriftProfile:
        """Learn bins, categories and missing counts from the baseline (training) data."""
        self._check_params()
        frame = as_frame(baseline)
        names = list(frame.columns) if self.features is None else list(self.features)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise SluiceError(f"baseline has no column(s) {missing}")
        unknown = [n for n in self.categorical if n not in names]
        if unknown:
            raise SluiceError(f"categorical names column(s) {unknown} that are not features")
        forced = set(self.categorical)
        self._baselines: dict[str, NumericBaseline | CategoricalBaseline] = {}
        for name in names:
            column = frame[name]
            if name in forced or is_categorical_dtype(column.dtype):
                self._baselines[name] = self._fit_categorical(column)
            else:
                self._baselines[name] = self._fit_numeric(column, name)
        self.n_rows_ = len(frame)
        self._set_learned()
        return self

    def _check_params(self) -> None:
        for name, low in (("n_bins", 2), ("cdf_bins", 2), ("max_categories", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SluiceError(f"DriftProfile.{name} must be an integer >= {low}, got {value!r}")
        if self.cdf_bins < self.n_bins:
            raise SluiceError(
                f"DriftProfile.cdf_bins ({self.cdf_bins}) must be at least n_bins ({self.n_bins})"
            )
        if isinstance(self.features, str) or isinstance(self.categorical, str):
            raise SluiceError("DriftProfile.features and .categorical take lists of column names")

    def _fit_numeric(self, column: pd.Series, name: str) -> NumericBaseline:
        values, n_missing = finite_sorted(numeric_values(column, name))
        bin_edges = quantile_edges(values, self.n_bins)
        cdf_edges = np.union1d(quantile_edges(values, self.cdf_bins), bin_edges)
        counts, sums = bin_sorted(values, cdf_edges)
        return NumericBaseline(len(column), n_missing, bin_edges, cdf_edges, counts, sums)

    def _fit_categorical(self, column: pd.Series) -> CategoricalBaseline:
        index, counts, n_missing = category_counts(column)
        ranked = sorted(
            ((json_scalar(v), c) for v, c in zip(index, counts, strict=True) if c > 0),
            key=lambda kv: (-kv[1], str(kv[0])),
        )
        kept = ranked[: self.max_categories]
        other = sum(c for _, c in ranked[self.max_categories :])
        return CategoricalBaseline(
            n_rows=len(column),
            n_missing=n_missing,
            categories=[k for k, _ in kept],
            counts=np.array([c for _, c in kept] + [other], dtype=np.float64),
        )

    def _set_learned(self) -> None:
        self.features_ = {name: b.kind for name, b in self._baselines.items()}
        binning = {
            "params": {
                "n_bins": self.n_bins,
                "cdf_bins": self.cdf_bins,
                "max_categories": self.max_categories,
            },
            "features": {name: {"kind": b.kind, **b.binning()} for name, b in self._baselines.items()},
        }
        digest = hashlib.sha256(json.dumps(binning, sort_keys=True).encode()).hexdigest()
        self.fingerprint_ = digest[:16]

    def _check_fitted(self) -> None:
        if not hasattr(self, "fingerprint_"):
            raise SluiceError("DriftProfile is not fitted: call fit(baseline) or from_dict() first")

    # -- sketching a target window ----------------------------------------------------------

    def partial(self, chunk: Frame) -> TargetSketch:
        """Summarise one chunk of the target window on the baseline's bins.

        Every feature column must be present unless the chunk has no rows (an empty window).
        """
        self._check_fitted()
        frame = as_frame(chunk)
        n_rows = len(frame)
        missing = [n for n in self._baselines if n not in frame.columns]
        if missing and n_rows:
            raise SluiceError(f"target has no column(s) {missing}")
        features: dict[str, NumericCounts | CategoricalCounts] = {}
        for name, baseline in self._baselines.items():
            if name not in frame.columns:
                features[name] = empty_counts(baseline)
            elif isinstance(baseline, NumericBaseline):
                values, n_missing = finite_sorted(numeric_values(frame[name], name))
                counts, sums = bin_sorted(values, baseline.cdf_edges)
                features[name] = NumericCounts(n_rows, n_missing, counts, sums)
            else:
                features[name] = self._categorical_counts(frame[name], baseline, n_rows)
        return TargetSketch(self.fingerprint_, n_rows, features)

    @staticmethod
    def _categorical_counts(
        column: pd.Series, baseline: CategoricalBaseline, n_rows: int
    ) -> CategoricalCounts:
        index, found, n_missing = category_counts(column)
        slots = baseline.index.get_indexer(index.astype(object))
        slots[slots < 0] = len(baseline.categories)
        counts = np.bincount(slots, weights=found, minlength=len(baseline.counts))
        return CategoricalCounts(n_rows, n_missing, counts)

    def sketch(self, chunks: Iterable[Frame]) -> TargetSketch:
        """Summarise a target window given as an iterable of chunks (memory: one chunk at a time)."""
        self._check_fitted()
        total = self.partial(pd.DataFrame())
        for chunk in chunks:
            total = total.merge(self.partial(chunk))
        return total

    def sketch_parquet(self, source: str | Path | Any, *, batch_rows: int = 65_536) -> TargetSketch:
        """Summarise a Parquet file (path or seekable file object) batch by batch.

        Memory is bounded by one row group plus one batch of ``batch_rows`` rows, independent of
        the file's row count.
        """
        import pyarrow.parquet as pq

        self._check_fitted()
        reader = pq.ParquetFile(source)
        present = set(reader.schema_arrow.names)
        missing = [n for n in self._baselines if n not in present]
        if missing and reader.metadata.num_rows:
            raise SluiceError(f"target parquet has no column(s) {missing}")
        columns = [n for n in self._baselines if n in present]
        # One row group at a time: iterating the whole file in one iter_batches call keeps every
        # decoded row group's buffers alive in pyarrow's pre-buffer cache until the end, so memory
        # grew with the file (measured: +460 MB from 1M to 4M rows x 25 columns). Per row group
        # it stays at one row group plus one batch whatever the row count.
        batches = (
            batch
            for group in range(reader.num_row_groups)
            for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
        )
        return self.sketch(batches)

    # -- comparing ------------------------------------------------------------------------

    def compare(
        self,
        target: Frame | TargetSketch,
        *,
        policy: DriftPolicy | None = None,
        label: str = "target",
        baseline_label: str = "baseline",
    ) -> DriftReport:
        """Compare a target window (a frame, or a sketch made by this profile) with the baseline.

        ``label`` and ``baseline_label`` name the two sides in the report and its plots.
        """
        self._check_fitted()
        policy = policy or DriftPolicy()
        if isinstance(target, DriftProfile):
            raise SluiceError(
                "compare() takes the target window (a frame or a TargetSketch); the baseline is the "
                "profile itself. To compare two baselines, fit one and sketch the other's data."
            )
        sketch = target if isinstance(target, TargetSketch) else self.partial(target)
        if sketch.profile_fingerprint != self.fingerprint_:
            raise SluiceError(
                f"target sketch was made by profile {sketch.profile_fingerprint}, not by this profile "
                f"({self.fingerprint_}); sketch the window with the profile you compare against"
            )
        alpha_t = policy.alpha_per_test(2 * len(self._baselines))
        results = []
        for name, baseline in self._baselines.items():
            counts = sketch.features[name]  # counted on this baseline's bins, so of its kind
            if isinstance(baseline, NumericBaseline):
                results.append(compare_numeric(name, baseline, cast(NumericCounts, counts), policy, alpha_t))
            else:
                results.append(
                    compare_categorical(name, baseline, cast(CategoricalCounts, counts), policy, alpha_t)
                )
        return DriftReport(
            features=tuple(results),
            policy=policy,
            baseline=SideInfo(label=baseline_label, n_rows=self.n_rows_),
            target=SideInfo(label=label, n_rows=sketch.n_rows),
            alpha_per_test=alpha_t,
            profile_fingerprint=self.fingerprint_,
        )

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready profile: see the module docstring and ``docs`` of the keys below.

        ``{"format", "version", "fingerprint", "n_rows", "params": {n_bins, cdf_bins,
        max_categories}, "features": {name: {"kind": "numeric", "n_rows", "n_missing",
        "bin_edges", "bin_counts", "cdf_edges", "cdf_counts", "cdf_sums"} | {"kind":
        "categorical", "n_rows", "n_missing", "categories", "category_counts", "other_count"}}}``
        """
        self._check_fitted()
        return {
            "format": PROFILE_FORMAT,
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint_,
            "n_rows": self.n_rows_,
            "params": {
                "n_bins": self.n_bins,
                "cdf_bins": self.cdf_bins,
                "max_categories": self.max_categories,
            },
            "features": {name: b.to_dict() for name, b in self._baselines.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftProfile:
        """Rebuild a fitted profile from ``to_dict()`` output (for example loaded from the registry)."""
        if not isinstance(data, Mapping) or data.get("format") != PROFILE_FORMAT:
            raise SluiceError(f"not a drift profile: 'format' must be {PROFILE_FORMAT!r}")
        if data.get("version") != FORMAT_VERSION:
            raise SluiceError(f"drift profile version {data.get('version')!r} is not supported")
        params = data.get("params")
        features = data.get("features")
        if not isinstance(params, Mapping) or not isinstance(features, Mapping):
            raise SluiceError("drift profile needs 'params' and 'features' objects")
        try:
            profile = cls(
                n_bins=params["n_bins"], cdf_bins=params["cdf_bins"], max_categories=params["max_categories"]
            )
        except KeyError as missing:
            raise SluiceError(f"drift profile params lack {missing}") from None
        profile._check_params()
        profile.features = list(features)
        baselines: dict[str, NumericBaseline | CategoricalBaseline] = {}
        for name, feature in features.items():
            kind = feature.get("kind") if isinstance(feature, Mapping) else None
            if kind == "numeric":
                baselines[name] = NumericBaseline.from_dict(name, feature)
            elif kind == "categorical":
                baselines[name] = CategoricalBaseline.from_dict(name, feature)
            else:
                raise SluiceError(f"profile feature {name!r}: 'kind' must be 'numeric' or 'categorical'")
        profile.categorical = [n for n, b in baselines.items() if b.kind == "categorical"]
        profile._baselines = baselines
        profile.n_rows_ = non_negative_int(data, "n_rows", "drift profile")
        profile._set_learned()
        stored = data.get("fingerprint")
        if stored is not None and stored != profile.fingerprint_:
            raise SluiceError(
                f"drift profile fingerprint {stored!r} does not match its bins ({profile.fingerprint_})"
            )
        return profile
