"""Performance before labels arrive: confidence-based estimation from the served probabilities.

Labels often come weeks after the predictions. A binary classifier whose probabilities are
calibrated carries its own expected confusion matrix: a row predicted positive with probability
``p`` is a true positive with probability ``p`` and a false positive with probability ``1 - p``.
Summed over a window that gives expected accuracy and F1 (the ratio of expected counts, accurate
to well under a point at a few thousand rows) and, over pairs ranked by score, the expected AUC.
This is what NannyML calls CBPE. It holds under covariate shift, when the concept is unchanged;
a concept change is what the labelled quality check (:mod:`sluice.monitoring.quality`) sees.

Estimates are only as good as the calibration. :func:`fit_calibrator` checks it on the holdout at
registration with the Hosmer-Lemeshow test (deciles of the scores, chi-squared with 8 degrees of
freedom), so a small holdout's noise is not taken for miscalibration. When the test rejects at 5 %
and the expected calibration error is above ``tolerance`` it fits an isotonic map, stored as the
JSON artifact ``calibration.json`` (thresholds, no pickle) and applied with :func:`numpy.interp`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from sluice.errors import SluiceError
from sluice.registry.bundle import CALIBRATION_ARTIFACT

#: Expected calibration error below which registration never fits a calibrator.
ECE_TOLERANCE = 0.01
#: Hosmer-Lemeshow p-value below which calibration is poor.
CALIBRATION_ALPHA = 0.05
_BINS = 15


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from a model's score to a calibrated probability (identity when empty).

    Attributes
    ----------
    x, y
        Increasing score thresholds and their calibrated probabilities (``numpy.interp`` between).
    ece_before, ece_after
        The holdout's expected calibration error before and after the map.
    """

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    ece_before: float = 0.0
    ece_after: float = 0.0
    method: str = field(default="identity")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if not self.x:
            return scores
        return np.asarray(np.interp(scores, self.x, self.y), dtype=float)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "x": list(self.x),
                "y": list(self.y),
                "ece_before": self.ece_before,
                "ece_after": self.ece_after,
            }
        ).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> Calibrator:
        try:
            data = json.loads(body)
            x, y = tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"])
        except (ValueError, KeyError, TypeError):
            raise SluiceError(f"{CALIBRATION_ARTIFACT} must hold an object with numeric lists x and y") from None
        if len(x) != len(y) or any(b < a for a, b in pairwise(x)):
            raise SluiceError(f"{CALIBRATION_ARTIFACT}: x must be increasing and as long as y")
        return cls(
            x, y, float(data.get("ece_before", 0)), float(data.get("ece_after", 0)), str(data.get("method", "isotonic"))
        )


def expected_calibration_error(truth: np.ndarray, probabilities: np.ndarray, *, bins: int = _BINS) -> float:
    """Mean absolute gap between predicted and observed positive rates over equal-count bins."""
    truth, probabilities = np.asarray(truth, dtype=float), np.asarray(probabilities, dtype=float)
    order = np.argsort(probabilities, kind="stable")
    gaps = [
        abs(probabilities[part].mean() - truth[part].mean()) * len(part)
        for part in np.array_split(order, min(bins, len(order)))
        if len(part)
    ]
    return float(sum(gaps) / max(len(order), 1))


def hosmer_lemeshow(truth: np.ndarray, probabilities: np.ndarray, *, groups: int = 10) -> float:
    """The p-value of the Hosmer-Lemeshow test that ``probabilities`` are calibrated for ``truth``."""
    from scipy.stats import chi2

    truth, probabilities = np.asarray(truth, dtype=float), np.asarray(probabilities, dtype=float)
    statistic = 0.0
    for part in np.array_split(np.argsort(probabilities, kind="stable"), groups):
        observed, expected, n = truth[part].sum(), probabilities[part].sum(), len(part)
        variance = expected * (1 - expected / n) if n else 0.0
        statistic += (observed - expected) ** 2 / variance if variance > 0 else 0.0
    return float(chi2.sf(statistic, groups - 2))


def fit_calibrator(
    truth: np.ndarray, scores: np.ndarray, *, tolerance: float = ECE_TOLERANCE, alpha: float = CALIBRATION_ALPHA
) -> Calibrator:
    """The holdout's calibration check, and an isotonic map when calibration is poor.

    Poor: the Hosmer-Lemeshow test rejects at ``alpha`` and the expected calibration error is
    above ``tolerance``.
    """
    from sklearn.isotonic import IsotonicRegression

    truth = np.asarray(truth, dtype=float)
    scores = np.asarray(scores, dtype=float)
    before = expected_calibration_error(truth, scores)
    if before <= tolerance or hosmer_lemeshow(truth, scores) >= alpha:
        return Calibrator(ece_before=before, ece_after=before)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, truth)
    calibrator = Calibrator(
        tuple(float(v) for v in isotonic.X_thresholds_),
        tuple(float(v) for v in isotonic.y_thresholds_),
        before,
        method="isotonic",
    )
    after = expected_calibration_error(truth, calibrator.apply(scores))
    return Calibrator(calibrator.x, calibrator.y, before, after, "isotonic")


@dataclass(frozen=True)
class Estimate:
    """Expected metrics of a window's predictions, from their calibrated probabilities."""

    rows: int
    accuracy: float
    f1: float
    roc_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "accuracy": self.accuracy, "f1": self.f1, "roc_auc": self.roc_auc}


class PerformanceSketch:
    """Mergeable sums behind an :class:`Estimate`: a chunk, a shard or a whole window of rows.

    It holds the expected confusion counts and, per score bin, the expected positives and
    negatives, so sketches of parts merge into the sketch of the whole (the drift job's fan-out
    merges them as it merges the drift sketches). The AUC over binned scores counts pairs in one
    bin as ties; with ``bins=1000`` that moves it by well under 0.001.
    """

    def __init__(self, bins: int = 1000) -> None:
        self.bins = bins
        self.rows = 0
        self.counts = np.zeros(4)  # expected tp, fp, fn, tn
        self.positives = np.zeros(bins)
        self.negatives = np.zeros(bins)
        self.self_pairs = 0.0

    def add(
        self,
        scores: np.ndarray,
        said_positive: np.ndarray,
        *,
        calibrator: Calibrator | None = None,
    ) -> PerformanceSketch:
        """Add rows: their served scores and whether each was predicted positive."""
        scores = np.asarray(scores, dtype=float)
        p = calibrator.apply(scores) if calibrator is not None else scores
        said = np.asarray(said_positive, dtype=bool)
        self.rows += len(p)
        self.counts += [p[said].sum(), (1 - p[said]).sum(), p[~said].sum(), (1 - p[~said]).sum()]
        where = np.clip((scores * self.bins).astype(int), 0, self.bins - 1)
        self.positives += np.bincount(where, weights=p, minlength=self.bins)
        self.negatives += np.bincount(where, weights=1 - p, minlength=self.bins)
        self.self_pairs += float((p * (1 - p)).sum())
        return self

    def merge(self, other: PerformanceSketch) -> PerformanceSketch:
        if other.bins != self.bins:
            raise SluiceError(f"cannot merge performance sketches of {self.bins} and {other.bins} bins")
        out = PerformanceSketch(self.bins)
        out.rows = self.rows + other.rows
        out.counts = self.counts + other.counts
        out.positives = self.positives + other.positives
        out.negatives = self.negatives + other.negatives
        out.self_pairs = self.self_pairs + other.self_pairs
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready sums (a fan-out child's result); floats round-trip exactly through ``json``."""
        return {
            "bins": self.bins,
            "rows": self.rows,
            "counts": self.counts.tolist(),
            "positives": self.positives.tolist(),
            "negatives": self.negatives.tolist(),
            "self_pairs": self.self_pairs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerformanceSketch:
        try:
            out = cls(int(data["bins"]))
            out.rows = int(data["rows"])
            out.counts = np.asarray(data["counts"], dtype=float)
            out.positives = np.asarray(data["positives"], dtype=float)
            out.negatives = np.asarray(data["negatives"], dtype=float)
            out.self_pairs = float(data["self_pairs"])
        except (KeyError, TypeError, ValueError):
            raise SluiceError("a performance sketch needs bins, rows, counts, positives, negatives, self_pairs") from None
        if out.counts.shape != (4,) or {out.positives.shape, out.negatives.shape} != {(out.bins,)}:
            raise SluiceError(f"a performance sketch needs 4 counts and {out.bins} positives and negatives")
        return out

    def estimate(self) -> Estimate:
        if self.rows == 0:
            raise SluiceError("no probabilities to estimate performance from")
        tp, fp, fn, tn = (float(v) for v in self.counts)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
        below = np.concatenate([[0.0], np.cumsum(self.negatives)[:-1]])
        # Pairs within a bin count half, less each row paired with itself.
        ranked = float((self.positives * below).sum() + 0.5 * (self.positives @ self.negatives - self.self_pairs))
        pairs = float(self.positives.sum() * self.negatives.sum() - self.self_pairs)
        return Estimate(self.rows, (tp + tn) / self.rows, f1, ranked / pairs if pairs > 0 else None)


def estimate(
    probabilities: Sequence[float] | np.ndarray,
    predicted: Sequence[Any] | np.ndarray,
    *,
    positive: Any = 1,
    calibrator: Calibrator | None = None,
) -> Estimate:
    """Expected accuracy, F1 and AUC of binary predictions from the positive class's probabilities.

    Parameters
    ----------
    probabilities
        The served probability of ``positive`` per row (rows without one must be left out).
    predicted
        The served labels.
    calibrator
        The version's :class:`Calibrator` (``None``: the probabilities are taken as calibrated).
    """
    said_positive = np.asarray(predicted) == positive
    return PerformanceSketch().add(np.asarray(probabilities, dtype=float), said_positive, calibrator=calibrator).estimate()
