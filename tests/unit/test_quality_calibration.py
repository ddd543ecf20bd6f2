"""Calibration of the concept-drift rule (:mod:`sluice.monitoring.quality_stats`), with seeds.

A classifier's labelled windows are drawn from one population. Without drift, windows of 500,
5,000 and 50,000 labelled rows alarm at most 5 % of the time; after a concept change that costs
3 points of F1, windows of 5,000 rows alarm at least 90 % of the time. The registered metrics
are measured as Sluice measures them: once on the population (exact), and on a finite holdout
whose size the version records (the interval then carries the holdout's error too).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from sluice.monitoring.quality_stats import DeltaInterval, QualityPolicy, delta_intervals

POLICY = QualityPolicy(min_effect=0.01)
WINDOWS = 200


def population(rng: np.random.Generator, n: int, *, flip: float = 0.0) -> tuple[np.ndarray, ...]:
    """Labels, predictions and scores of a fixed model; ``flip``: share of labels the concept changed."""
    truth = rng.random(n) < 0.5
    scores = 1 / (1 + np.exp(-(1.0 * (2 * truth - 1) + rng.normal(size=n))))
    predicted = scores >= 0.5
    changed = rng.random(n) < flip
    truth = np.where(changed, ~truth, truth)
    return truth.astype(int), predicted.astype(int), scores


def flip_for_f1_drop(drop: float) -> float:
    """The label-flip share whose population F1 is ``drop`` below the undrifted one (bisection)."""
    base = f1_score(*population(np.random.default_rng(1), 400_000)[:2])
    low, high = 0.0, 0.2
    for _ in range(30):
        mid = (low + high) / 2
        f1 = f1_score(*population(np.random.default_rng(1), 400_000, flip=mid)[:2])
        low, high = (mid, high) if base - f1 < drop else (low, mid)
    return (low + high) / 2


@pytest.fixture(scope="module")
def registered() -> dict[str, float]:
    truth, predicted, scores = population(np.random.default_rng(0), 2_000_000)
    return {
        "f1": f1_score(truth, predicted),
        "accuracy": accuracy_score(truth, predicted),
        "roc_auc": roc_auc_score(truth, scores),
    }


def alarm_rate(rows: int, registered: dict[str, float], *, seed: int, flip: float = 0.0, **kwargs) -> dict:
    rng = np.random.default_rng(seed)
    alarms = dict.fromkeys(registered, 0)
    for window in range(WINDOWS):
        truth, predicted, scores = population(rng, rows, flip=flip)
        found = delta_intervals(
            "classification", truth, predicted, registered=registered, scores=scores, seed=window, **kwargs
        )
        for metric, interval in found.items():
            alarms[metric] += POLICY.worse(interval)
    return {metric: count / WINDOWS for metric, count in alarms.items()}


@pytest.mark.parametrize("rows", [500, 5_000, 50_000])
def test_no_drift_windows_alarm_at_most_5_percent(registered, rows):
    # Given windows drawn from the population the registered metrics describe
    rates = alarm_rate(rows, registered, seed=rows)
    # Then each metric's rule alarms in at most 5 % of them
    assert max(rates.values()) <= 0.05, rates


@pytest.mark.parametrize("rows", [500, 5_000, 50_000])
def test_no_drift_windows_alarm_at_most_5_percent_against_a_finite_holdout(rows):
    # Given metrics registered on a 20,000-row holdout (with its own sampling error), recorded as such
    truth, predicted, _ = population(np.random.default_rng(7), 20_000)
    holdout = {"f1": f1_score(truth, predicted), "accuracy": accuracy_score(truth, predicted)}
    rates = alarm_rate(rows, holdout, seed=rows + 1, holdout_rows=20_000)
    assert max(rates.values()) <= 0.05, rates


def test_a_3_point_f1_drop_at_5000_rows_alarms_at_least_90_percent(registered):
    # Given a concept change that costs 3 points of F1 in the population
    flip = flip_for_f1_drop(0.03)
    # When windows of 5,000 labelled rows come from the changed population
    rates = alarm_rate(5_000, registered, seed=3, flip=flip)
    # Then F1's rule alarms in at least 90 % of them
    assert rates["f1"] >= 0.90, rates


def test_a_drop_the_window_is_too_small_to_see_does_not_alarm(registered):
    # 200 labels: a 5-point drop is within the noise, so the rule waits for evidence
    flip = flip_for_f1_drop(0.05)
    rates = alarm_rate(200, registered, seed=5, flip=flip)
    assert rates["f1"] < 0.5, rates


def test_live_values_equal_scikit_learns():
    truth, predicted, scores = population(np.random.default_rng(11), 3_000)
    found = delta_intervals(
        "classification", truth, predicted, registered={"f1": 0, "accuracy": 0, "roc_auc": 0}, scores=scores
    )
    assert found["f1"].live == pytest.approx(f1_score(truth, predicted))
    assert found["accuracy"].live == pytest.approx(accuracy_score(truth, predicted))
    assert found["roc_auc"].live == pytest.approx(roc_auc_score(truth, scores))
    for interval in found.values():
        assert interval.low < interval.delta < interval.high


def test_multiclass_f1_is_macro_and_string_labels_work():
    rng = np.random.default_rng(2)
    truth = rng.choice(["a", "b", "c"], 2_000)
    predicted = np.where(rng.random(2_000) < 0.8, truth, rng.choice(["a", "b", "c"], 2_000))
    found = delta_intervals("classification", truth, predicted, registered={"f1": 0.9})
    assert found["f1"].live == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_regression_error_rising_is_the_bad_side():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=20_000)
    predicted = truth + rng.normal(scale=1.2, size=20_000)  # registered with scale 1.0
    found = delta_intervals("regression", truth, predicted, registered={"mae": 0.798, "rmse": 1.0})
    assert POLICY.worse(found["mae"]) and POLICY.worse(found["rmse"])
    assert found["rmse"].bound < -POLICY.min_effect


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="min_effect"):
        QualityPolicy(min_effect=-0.1)
    with pytest.raises(ValueError, match="confidence"):
        QualityPolicy(confidence=1.5)
    interval = DeltaInterval("f1", 0.7, 0.8, -0.12, -0.08, 5000)
    assert POLICY.worse(interval) and interval.bound == -0.08
