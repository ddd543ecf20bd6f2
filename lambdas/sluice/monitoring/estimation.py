"""Performance before labels arrive: confidence-based estimation from the served probabilities.

Labels often come weeks after the predictions. A binary classifier whose probabilities are
calibrated carries its own expected confusion matrix: a row predicted positive with probability
``p`` is a true positive with probability ``p`` and a false positive with probability ``1 - p``.
Summed over a window that gives expected accuracy and F1 (the ratio of expected counts, accurate
to well under a point at a few thousand rows) and, over pairs ranked by score, the expected AUC.
This is what NannyML calls CBPE. It holds under covariate shift, when the concept is unchanged;
a concept change is what the labelled quality check (:mod:`sluice.monitoring.quality`) sees.

Estimates are only as good as the calibration. :func:`fit_calibrator` checks it on the holdout at
registration: when the expected calibration error is above ``tolerance`` it fits an isotonic
map, stored as the JSON artifact ``calibration.json`` (thresholds, no pickle) and applied with
:func:`numpy.interp`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from sluice.errors import SluiceError

CALIBRATION_ARTIFACT = "calibration.json"
#: Expected calibration error above which registration fits a calibrator.
ECE_TOLERANCE = 0.02
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


def fit_calibrator(truth: np.ndarray, scores: np.ndarray, *, tolerance: float = ECE_TOLERANCE) -> Calibrator:
    """The holdout's calibration check, and an isotonic map when the error exceeds ``tolerance``."""
    from sklearn.isotonic import IsotonicRegression

    truth = np.asarray(truth, dtype=float)
    scores = np.asarray(scores, dtype=float)
    before = expected_calibration_error(truth, scores)
    if before <= tolerance:
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
    p = np.asarray(probabilities, dtype=float)
    if len(p) == 0:
        raise SluiceError("no probabilities to estimate performance from")
    if calibrator is not None:
        p = calibrator.apply(p)
    said_positive = np.asarray(predicted) == positive
    tp, fp = float(p[said_positive].sum()), float((1 - p[said_positive]).sum())
    fn, tn = float(p[~said_positive].sum()), float((1 - p[~said_positive]).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
    return Estimate(len(p), (tp + tn) / len(p), f1, _expected_auc(np.asarray(probabilities, float), p))


def _expected_auc(scores: np.ndarray, p: np.ndarray) -> float | None:
    """Σ over pairs ranked i above j of P(i positive) P(j negative), over the expected pairs (ties half)."""
    if len(p) < 2:
        return None
    order = np.argsort(scores, kind="stable")
    s, pos, neg = scores[order], p[order], 1 - p[order]
    # Negatives strictly below each score, and tied with it, from cumulative sums over sorted scores.
    starts = np.searchsorted(s, s, side="left")
    ends = np.searchsorted(s, s, side="right")
    cumulative = np.concatenate([[0.0], np.cumsum(neg)])
    below = cumulative[starts]
    tied = cumulative[ends] - cumulative[starts] - neg  # the row itself is not its own pair
    numerator = float((pos * (below + 0.5 * tied)).sum())
    pairs = float(pos.sum() * neg.sum() - (pos * neg).sum())
    return numerator / pairs if pairs > 0 else None
