"""A target window's counts on a drift profile's bins: mergeable and JSON-ready (``TargetSketch``).

Memory does not grow with the window: each chunk is summarised on the baseline's bins and two
sketches add up, so chunks can be summarised by parallel workers and merged in any order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sluice.errors import SluiceError
from sluice.monitoring.baselines import (
    CategoricalCounts,
    NumericBaseline,
    NumericCounts,
    count_array,
    float_array,
    non_negative_int,
)
from sluice.monitoring.formats import FORMAT_VERSION, SKETCH_FORMAT

if TYPE_CHECKING:
    from sluice.monitoring.profile import DriftProfile


class TargetSketch:
    """Counts of a target window on a profile's bins; mergeable and JSON-ready.

    Made by ``DriftProfile.partial``. ``a.merge(b)`` summarises the rows of both, so chunks can
    be summarised in any order by any number of workers. Counts add exactly; per-bin sums (for
    Wasserstein) add up to floating-point rounding.
    """

    def __init__(
        self,
        profile_fingerprint: str,
        n_rows: int,
        features: dict[str, NumericCounts | CategoricalCounts],
    ) -> None:
        self.profile_fingerprint = profile_fingerprint
        self.n_rows = n_rows
        self.features = features

    def merge(self, other: TargetSketch) -> TargetSketch:
        """A new sketch of the rows of both sketches."""
        if not isinstance(other, TargetSketch):
            raise SluiceError(f"can only merge a TargetSketch, got {type(other).__name__}")
        if other.profile_fingerprint != self.profile_fingerprint:
            raise SluiceError(
                f"cannot merge sketches of different profiles ({self.profile_fingerprint} and "
                f"{other.profile_fingerprint})"
            )
        return TargetSketch(
            self.profile_fingerprint,
            self.n_rows + other.n_rows,
            # One profile made both sketches, so each feature's counts are of one kind on both sides.
            {name: counts + other.features[name] for name, counts in self.features.items()},  # type: ignore[operator]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SKETCH_FORMAT,
            "version": FORMAT_VERSION,
            "profile_fingerprint": self.profile_fingerprint,
            "n_rows": self.n_rows,
            "features": {name: counts.to_dict() for name, counts in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], profile: DriftProfile) -> TargetSketch:
        """Rebuild a sketch (for example a Distributed Map worker's result) for ``profile``."""
        profile._check_fitted()
        if not isinstance(data, Mapping) or data.get("format") != SKETCH_FORMAT:
            raise SluiceError(f"not a drift sketch: 'format' must be {SKETCH_FORMAT!r}")
        if data.get("profile_fingerprint") != profile.fingerprint_:
            raise SluiceError(
                f"sketch was made by profile {data.get('profile_fingerprint')!r}, not {profile.fingerprint_}"
            )
        stored = data.get("features")
        if not isinstance(stored, Mapping) or set(stored) != set(profile._baselines):
            raise SluiceError("drift sketch 'features' must name exactly the profile's features")
        features: dict[str, NumericCounts | CategoricalCounts] = {}
        for name, baseline in profile._baselines.items():
            where = f"sketch feature {name!r}"
            entry = stored[name]
            counts = count_array(entry, "counts", where)
            size = (
                baseline.cdf_counts.size if isinstance(baseline, NumericBaseline) else baseline.counts.size
            )
            if counts.size != size:
                raise SluiceError(f"{where}: 'counts' needs {size} entries")
            n_rows, n_missing = non_negative_int(entry, "n_rows", where), non_negative_int(entry, "n_missing", where)
            if isinstance(baseline, NumericBaseline):
                sums = float_array(entry, "sums", where)
                if sums.size != size:
                    raise SluiceError(f"{where}: 'sums' needs {size} entries")
                features[name] = NumericCounts(n_rows, n_missing, counts, sums)
            else:
                features[name] = CategoricalCounts(n_rows, n_missing, counts)
        return cls(profile.fingerprint_, non_negative_int(data, "n_rows", "drift sketch"), features)
