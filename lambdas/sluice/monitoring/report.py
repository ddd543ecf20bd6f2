"""The result of a drift comparison: per-feature statistics and the dataset-level decision.

``DriftProfile.compare`` makes a ``DriftReport``: one ``FeatureDrift`` per feature, the policy it
was decided with, and which data each side (``SideInfo``) was. It gives CloudWatch-ready values
(``metrics``) and round-trips through JSON (``to_dict``/``from_dict``) without NaN or infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sluice.errors import SluiceError
from sluice.monitoring.formats import FORMAT_VERSION, REPORT_FORMAT
from sluice.monitoring.policy import DriftPolicy

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class SideInfo:
    """One side of a comparison: which data it was, so baseline and target are never confused."""

    label: str
    n_rows: int


@dataclass(frozen=True)
class FeatureDrift:
    """The comparison of one feature.

    Statistics that cannot be computed (no non-missing values on a side) are ``None``, never NaN.
    ``bin_labels``/``baseline_hist``/``target_hist`` are the coarse bins (numerics) or the
    categories plus "other/unseen" (categoricals), as proportions of the non-missing values.
    """

    name: str
    kind: Kind
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    dof: int | None
    psi: float | None
    js_distance: float | None
    wasserstein: float | None
    baseline_missing_rate: float | None
    target_missing_rate: float | None
    missing_p_value: float | None
    n_baseline: int
    n_target: int
    drifted: bool
    reasons: tuple[str, ...]
    note: str | None
    bin_labels: tuple[str, ...]
    baseline_hist: tuple[float, ...]
    target_hist: tuple[float, ...]
    verdict: str = ""
    """``drifted``, ``significant, below the effect floor`` or ``not significant`` (older reports: empty)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("reasons", "bin_labels", "baseline_hist", "target_hist"):
            out[key] = list(out[key])
        return out


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift results and the dataset-level decision for one target window."""

    features: tuple[FeatureDrift, ...]
    policy: DriftPolicy
    baseline: SideInfo
    target: SideInfo
    alpha_per_test: float
    profile_fingerprint: str

    @property
    def n_drifted(self) -> int:
        return sum(f.drifted for f in self.features)

    @property
    def dataset_drift_share(self) -> float:
        """Share of all features that drift (0.0 for a profile without features)."""
        return self.n_drifted / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        """The dataset alarm: the drift share is above the policy's ``share_tolerance``."""
        return self.dataset_drift_share > self.policy.share_tolerance

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def __getitem__(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def metrics(self) -> dict[str, float]:
        """CloudWatch-ready values: finite floats by metric name.

        ``dataset_drift_share``, ``dataset_drift`` (0/1), ``n_target_rows`` and per feature
        ``<feature>.drifted`` (0/1), ``<feature>.p_value``, ``<feature>.psi``,
        ``<feature>.js_distance``, ``<feature>.wasserstein`` (numerics),
        ``<feature>.missing_rate`` (target). A statistic that is undefined for the window (see
        ``FeatureDrift``) is left out rather than sent as NaN, which CloudWatch rejects.
        """
        out: dict[str, float] = {
            "dataset_drift_share": float(self.dataset_drift_share),
            "dataset_drift": float(self.dataset_drift),
            "n_target_rows": float(self.target.n_rows),
        }
        for f in self.features:
            out[f"{f.name}.drifted"] = float(f.drifted)
            for key, value in (
                ("p_value", f.p_value),
                ("psi", f.psi),
                ("js_distance", f.js_distance),
                ("wasserstein", f.wasserstein),
                ("missing_rate", f.target_missing_rate),
            ):
                if value is not None and math.isfinite(value):
                    out[f"{f.name}.{key}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (no NaN or infinity anywhere)."""
        return {
            "format": REPORT_FORMAT,
            "version": FORMAT_VERSION,
            "baseline": asdict(self.baseline),
            "target": asdict(self.target),
            "policy": self.policy.to_dict(),
            "alpha_per_test": self.alpha_per_test,
            "profile_fingerprint": self.profile_fingerprint,
            "n_features": len(self.features),
            "n_drifted": self.n_drifted,
            "dataset_drift_share": self.dataset_drift_share,
            "dataset_drift": self.dataset_drift,
            "drifted_features": self.drifted_features,
            "features": {f.name: f.to_dict() for f in self.features},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Rebuild a report from ``to_dict()`` output (to re-render a stored report)."""
        if not isinstance(data, Mapping) or data.get("format") != REPORT_FORMAT:
            raise SluiceError(f"not a drift report: 'format' must be {REPORT_FORMAT!r}")
        try:
            features = []
            for name, entry in data["features"].items():
                entry = dict(entry, name=name)
                for key in ("reasons", "bin_labels", "baseline_hist", "target_hist"):
                    entry[key] = tuple(entry[key])
                features.append(FeatureDrift(**entry))
            return cls(
                features=tuple(features),
                policy=DriftPolicy.from_dict(data["policy"]),
                baseline=SideInfo(**data["baseline"]),
                target=SideInfo(**data["target"]),
                alpha_per_test=float(data["alpha_per_test"]),
                profile_fingerprint=str(data["profile_fingerprint"]),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise SluiceError(f"drift report is malformed: {error}") from None
