"""How sure a window's quality delta is: a confidence interval for live minus registered.

A fixed threshold on a metric's delta ignores how many labels the window holds: with 200 labels a
0.05 drop of F1 is noise, with 50,000 a 0.02 drop is certain. :class:`QualityPolicy` decides on
the interval instead. It alarms when the interval of the delta lies entirely on the bad side of
zero, beyond ``min_effect`` (a drop smaller than that is real but not worth a retraining):

* ``accuracy``: Clopper-Pearson's exact interval (:func:`scipy.stats.binomtest`);
* ``f1``: the row bootstrap, drawn as multinomial resamples of the confusion matrix, which is the
  same distribution (F1 depends on the rows only through it) at a cost independent of the rows;
* ``roc_auc``: Hanley and McNeil's standard error;
* ``mae`` and ``rmse``: the normal interval of a mean (the delta method for RMSE).

The registered metric comes from a finite holdout too. When the version recorded its holdout
size (``holdout_rows``), the interval is widened by the holdout's own standard error, taken as
the window's scaled by ``sqrt(window_rows / holdout_rows)`` (the same distribution when nothing
drifted); without it, the registered value is taken as exact.

Calibrated in ``tests/unit/test_quality_calibration.py``: no-drift windows of 500, 5,000 and
50,000 labelled rows alarm at most 5 % of the time, and a 3-point F1 drop at 5,000 rows alarms at
least 90 % of the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Metrics where lower is better; a rise of these is the bad side.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
_BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True)
class DeltaInterval:
    """A metric's live value, its delta against the registered one and the delta's interval."""

    metric: str
    live: float
    registered: float
    low: float
    high: float
    rows: int

    @property
    def delta(self) -> float:
        return self.live - self.registered

    @property
    def bound(self) -> float:
        """The interval's end nearest to no change, signed so that negative means worse.

        What CloudWatch alarms on (``<Metric>DeltaBound`` below ``-min_effect``), so the alarm and
        :meth:`QualityPolicy.worse` agree.
        """
        return -self.low if self.metric in LOWER_IS_BETTER else self.high

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "live": self.live,
            "registered": self.registered,
            "delta": self.delta,
            "delta_low": self.low,
            "delta_high": self.high,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class QualityPolicy:
    """When a window's quality is worse than registered: the one documented rule.

    Parameters
    ----------
    min_effect
        The smallest worsening worth an alarm, in the metric's units (0.01: one point of F1).
    confidence
        Two-sided confidence of the interval (0.95 puts 2.5 % on the bad side when nothing drifted).
    """

    min_effect: float = 0.01
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0 <= self.min_effect < 1:
            raise ValueError(f"min_effect must be in [0, 1), got {self.min_effect!r}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence!r}")

    def worse(self, interval: DeltaInterval) -> bool:
        """Whether the whole interval lies beyond ``min_effect`` on the bad side of zero."""
        return interval.bound < -self.min_effect


def delta_intervals(
    task: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    *,
    registered: Mapping[str, float],
    scores: np.ndarray | None = None,
    holdout_rows: int | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, DeltaInterval]:
    """The interval of each registered metric's delta on one window's labelled predictions.

    Parameters
    ----------
    task
        ``"classification"`` or ``"regression"``.
    truth, predicted
        Labels and predictions of the window's labelled rows, aligned.
    registered
        The version's registered metrics; only these are compared.
    scores
        Positive-class scores (binary classification), for ``roc_auc``.
    holdout_rows
        Rows the registered metrics were measured on (``None``: take them as exact).
    """
    rows = len(truth)
    if rows == 0:
        return {}
    z = float(_normal_quantile(0.5 + confidence / 2))
    found: dict[str, tuple[float, float, float]] = {}  # metric -> (live, low, high) of the live value
    if task == "classification":
        found.update(_classification(truth, predicted, scores, confidence=confidence, z=z, seed=seed))
    else:
        found.update(_regression(np.asarray(truth, float), np.asarray(predicted, float), z=z))
    out: dict[str, DeltaInterval] = {}
    for metric, (live, low, high) in found.items():
        if metric not in registered:
            continue
        reference = float(registered[metric])
        low, high = _widen(live, low, high, rows=rows, holdout_rows=holdout_rows)
        out[metric] = DeltaInterval(metric, live, reference, low - reference, high - reference, rows)
    return out


def _widen(live: float, low: float, high: float, *, rows: int, holdout_rows: int | None) -> tuple[float, float]:
    """Add the registered metric's own error: each half-width grows by ``sqrt(1 + rows/holdout)``."""
    if not holdout_rows or holdout_rows <= 0:
        return low, high
    factor = math.sqrt(1 + rows / holdout_rows)
    return live - (live - low) * factor, live + (high - live) * factor


def _classification(
    truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None, *, confidence: float, z: float, seed: int
) -> dict[str, tuple[float, float, float]]:
    from scipy.stats import binomtest

    labels = np.unique(np.concatenate([np.asarray(truth), np.asarray(predicted)]))
    index = {label: i for i, label in enumerate(labels.tolist())}
    t = np.fromiter((index[v] for v in np.asarray(truth).tolist()), int, len(truth))
    p = np.fromiter((index[v] for v in np.asarray(predicted).tolist()), int, len(predicted))
    k = len(labels)
    counts = np.bincount(t * k + p, minlength=k * k)
    binary = len(np.unique(t)) <= 2 and k <= 2
    positive = index.get(1, k - 1) if binary else None
    correct = int(np.trace(counts.reshape(k, k)))
    accuracy = binomtest(correct, len(t)).proportion_ci(confidence_level=confidence, method="exact")
    out = {"accuracy": (correct / len(t), float(accuracy.low), float(accuracy.high))}
    draws = np.random.default_rng(seed).multinomial(len(t), counts / counts.sum(), size=_BOOTSTRAP_DRAWS)
    f1_draws = _f1(draws.reshape(-1, k, k), positive)
    tail = (1 - confidence) / 2
    live_f1 = float(_f1(counts.reshape(1, k, k), positive)[0])
    out["f1"] = (live_f1, float(np.quantile(f1_draws, tail)), float(np.quantile(f1_draws, 1 - tail)))
    if scores is not None and binary and len(np.unique(t)) == 2:
        out["roc_auc"] = _auc_interval(t == positive, np.asarray(scores, float), z=z)
    return out


def _f1(matrices: np.ndarray, positive: int | None) -> np.ndarray:
    """F1 of each confusion matrix (rows truth, columns predicted): binary, else macro over classes."""
    tp = np.diagonal(matrices, axis1=1, axis2=2).astype(float)
    denominator = matrices.sum(axis=2) + matrices.sum(axis=1)  # truth + predicted per class
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    if positive is not None:
        return np.asarray(per_class[:, positive])
    return np.asarray(per_class.mean(axis=1))


def _auc_interval(positive: np.ndarray, scores: np.ndarray, *, z: float) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(positive, scores))
    n1, n0 = int(positive.sum()), int((~positive).sum())
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    se = math.sqrt(max(variance, 0.0))
    return auc, auc - z * se, auc + z * se


def _regression(truth: np.ndarray, predicted: np.ndarray, *, z: float) -> dict[str, tuple[float, float, float]]:
    error = predicted - truth
    n = len(error)
    absolute, squared = np.abs(error), error**2
    mae = float(absolute.mean())
    mae_se = float(absolute.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    mse = float(squared.mean())
    rmse = math.sqrt(mse)
    mse_se = float(squared.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    rmse_se = mse_se / (2 * rmse) if rmse > 0 else 0.0
    return {
        "mae": (mae, mae - z * mae_se, mae + z * mae_se),
        "rmse": (rmse, rmse - z * rmse_se, rmse + z * rmse_se),
    }


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))
