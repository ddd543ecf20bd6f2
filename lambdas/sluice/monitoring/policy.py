"""The drift decision: when a feature drifts and when the dataset alarm fires (``DriftPolicy``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sluice.errors import SluiceError


@dataclass(frozen=True)
class DriftPolicy:
    """When a feature drifts and when the dataset alarm fires.

    A feature drifts when either

    * its distribution test (KS for numerics, chi-squared for categoricals) has a p-value below
      ``alpha / m`` *and* its PSI exceeds ``psi_tolerance`` (or the feature's entry in
      ``feature_psi_tolerance``), or
    * its missing-rate test has a p-value below ``alpha / m`` *and* the missing rate moved by
      more than ``missing_tolerance`` (absolute).

    ``m`` is the number of tests in the report (two per feature) with the Bonferroni correction,
    1 with ``correction="none"``. The dataset alarm fires when the share of drifting features is
    above ``share_tolerance`` (``GreaterThanThreshold`` on the ``dataset_drift_share`` metric).

    Calibration. With the defaults (``alpha=0.05``, Bonferroni, ``share_tolerance=0``) the
    dataset alarm is a family-wise test: with valid p-values it fires on windows from the
    baseline's own distribution in at most 5% of windows, whatever the window size and the
    number of features. The p-values used are valid or conservative: the binned KS statistic
    never exceeds the exact one and the uncorrected asymptotic distribution overstates p for
    small samples; chi-squared cells are pooled to 5 expected rows, and categories the
    baseline saw fewer than ``MIN_CATEGORY_COUNT`` times share the "other/unseen" cell so the
    baseline's choice of categories does not bias the test, and the categorical p-value is the
    Bonferroni combination of chi-squared and Fisher's exact test on "other/unseen"; Fisher's
    tests are exact.
    The effect floors then suppress what large windows make significant but nobody would act
    on: PSI 0.1 is the usual "moderate shift" mark, far above PSI's sampling noise at 5,000 rows
    (about ``(bins - 1) / n``, 0.004) and well below the PSI of a half-standard-deviation mean
    shift (about 0.23). In small windows the floors rarely bind and the test alone decides.
    ``tests/unit/test_drift_calibration.py`` measures both: at most 5% false alarms over
    hundreds of windows of 50, 500 and 5,000 rows (against a 20,000-row and a 1,000-row
    baseline), and a 0.5 sigma shift of one feature in 5,000 rows raising the alarm.
    """

    alpha: float = 0.05
    correction: Literal["bonferroni", "none"] = "bonferroni"
    psi_tolerance: float = 0.1
    missing_tolerance: float = 0.05
    share_tolerance: float = 0.0
    feature_psi_tolerance: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise SluiceError(f"DriftPolicy.alpha must be in (0, 1), got {self.alpha!r}")
        if self.correction not in ("bonferroni", "none"):
            raise SluiceError(
                f"DriftPolicy.correction must be 'bonferroni' or 'none', got {self.correction!r}"
            )
        for name in ("psi_tolerance", "missing_tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise SluiceError(f"DriftPolicy.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.share_tolerance < 1:
            raise SluiceError(f"DriftPolicy.share_tolerance must be in [0, 1), got {self.share_tolerance!r}")
        for feature, value in dict(self.feature_psi_tolerance).items():
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise SluiceError(
                    f"DriftPolicy.feature_psi_tolerance[{feature!r}] must be a finite number >= 0, "
                    f"got {value!r}"
                )
        object.__setattr__(self, "feature_psi_tolerance", dict(self.feature_psi_tolerance))

    def psi_tolerance_for(self, feature: str) -> float:
        return float(self.feature_psi_tolerance.get(feature, self.psi_tolerance))

    def alpha_per_test(self, n_tests: int) -> float:
        if self.correction == "none" or n_tests <= 1:
            return self.alpha
        return self.alpha / n_tests

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feature_psi_tolerance"] = dict(self.feature_psi_tolerance)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftPolicy:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise SluiceError(f"DriftPolicy: unknown field(s) {sorted(unknown)}")
        return cls(**dict(data))
