"""Performance estimated before labels arrive (:mod:`sluice.monitoring.estimation`).

A dataset generated with a known concept, ``P(y=1 | x) = sigmoid(x @ w)``: the covariates shift
window by window while the concept stays fixed, so the model's calibrated probabilities carry
the realised performance. Target: the estimate is within 0.02 of realised F1 on 5,000-row windows.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from sluice.errors import SluiceError
from sluice.monitoring.estimation import (
    Calibrator,
    PerformanceSketch,
    estimate,
    expected_calibration_error,
    fit_calibrator,
    hosmer_lemeshow,
)

WEIGHTS = np.array([1.5, -1.0, 0.8])
SHIFTS = [0.0, 0.3, 0.6, -0.4, 0.9, 1.2]


def window(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose covariates are shifted by ``shift``; the labels follow the fixed concept."""
    x = rng.normal(size=(n, 3)) + np.array([shift, -shift / 2, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ WEIGHTS - 0.3)))).astype(int)
    return x, y


@pytest.fixture(scope="module")
def logistic():
    x, y = window(np.random.default_rng(0), 20_000)
    return LogisticRegression().fit(x, y)


def realised_and_estimated(model, calibrator, shift: float, seed: int) -> tuple[float, float, float, float]:
    x, y = window(np.random.default_rng(seed), 5_000, shift)
    p = model.predict_proba(x)[:, 1]
    predicted = model.predict(x)
    found = estimate(p, predicted, calibrator=calibrator)
    return f1_score(y, predicted), found.f1, roc_auc_score(y, p), found.roc_auc


def test_under_covariate_shift_the_f1_estimate_is_within_002_of_realised(logistic):
    # Given a calibrated model and windows whose covariates shift while the concept stays
    errors = []
    for i, shift in enumerate(SHIFTS * 5):
        realised, estimated, auc, estimated_auc = realised_and_estimated(logistic, None, shift, seed=100 + i)
        errors.append(abs(estimated - realised))
        assert abs(estimated_auc - auc) < 0.02
    # Then every 5,000-row window's F1 estimate is within 0.02 of the realised F1
    assert max(errors) <= 0.02, max(errors)


def test_the_shift_changes_realised_f1_so_the_test_above_means_something(logistic):
    low = realised_and_estimated(logistic, None, -0.4, seed=1)[0]
    high = realised_and_estimated(logistic, None, 1.2, seed=1)[0]
    assert high - low > 0.05


def test_a_poorly_calibrated_model_gets_a_calibrator_that_restores_the_estimate():
    # Given a booster trained on few, noisy rows: over-confident probabilities
    x, y = window(np.random.default_rng(3), 3_000)
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.3, max_leaf_nodes=63).fit(x, y)
    holdout_x, holdout_y = window(np.random.default_rng(4), 20_000)
    scores = model.predict_proba(holdout_x)[:, 1]
    # When registration checks calibration on the holdout
    calibrator = fit_calibrator(holdout_y, scores)
    # Then it finds it poor, fits an isotonic map, and the map's error is within tolerance
    assert hosmer_lemeshow(holdout_y, scores) < 0.05
    assert calibrator.method == "isotonic" and calibrator.ece_before > 0.02 >= calibrator.ece_after
    assert Calibrator.from_json(calibrator.to_json()) == calibrator
    # and on shifted windows the calibrated estimate tracks realised F1, the raw one less well
    raw, calibrated = [], []
    for i, shift in enumerate(SHIFTS):
        realised, with_map, *_ = realised_and_estimated(model, calibrator, shift, seed=200 + i)
        raw.append(abs(realised_and_estimated(model, None, shift, seed=200 + i)[1] - realised))
        calibrated.append(abs(with_map - realised))
    assert max(calibrated) <= 0.02 < max(raw), (calibrated, raw)


@pytest.mark.parametrize("rows", [600, 10_000])
def test_a_calibrated_model_keeps_the_identity_even_on_a_small_holdout(logistic, rows):
    # A 600-row holdout's bins are noisy (its ECE alone is several points): the test sees noise
    rejected = 0
    for seed in range(20):
        x, y = window(np.random.default_rng(seed), rows)
        calibrator = fit_calibrator(y, logistic.predict_proba(x)[:, 1])
        rejected += calibrator.method != "identity"
        assert calibrator.ece_before == expected_calibration_error(y, logistic.predict_proba(x)[:, 1])
    assert rejected <= 3


def test_sketches_of_parts_merge_into_the_sketch_of_the_whole(logistic):
    x, _ = window(np.random.default_rng(6), 9_000)
    p, said = logistic.predict_proba(x)[:, 1], logistic.predict(x) == 1
    whole = PerformanceSketch().add(p, said).estimate()
    parts = [PerformanceSketch().add(p[i::3], said[i::3]) for i in range(3)]
    merged = parts[0].merge(parts[1]).merge(parts[2]).estimate()
    assert merged.rows == whole.rows == 9_000
    for name in ("accuracy", "f1", "roc_auc"):
        assert getattr(merged, name) == pytest.approx(getattr(whole, name), abs=1e-12)
    with pytest.raises(SluiceError, match="bins"):
        PerformanceSketch(10).merge(PerformanceSketch(20))


def test_expected_accuracy_equals_the_sure_cases():
    # Probabilities of exactly 0 and 1 make the expected confusion matrix the realised one
    truth = np.array([1, 0, 1, 1, 0, 0])
    predicted = np.array([1, 0, 0, 1, 1, 0])
    found = estimate(truth.astype(float), predicted)
    assert found.accuracy == accuracy_score(truth, predicted)
    assert found.f1 == pytest.approx(f1_score(truth, predicted))
    assert found.roc_auc == pytest.approx(1.0)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(SluiceError, match="no probabilities"):
        estimate([], [])
    with pytest.raises(SluiceError, match="increasing"):
        Calibrator.from_json('{"x": [0.5, 0.1], "y": [0, 1]}')
    with pytest.raises(SluiceError, match="numeric lists"):
        Calibrator.from_json('{"x": "a"}')
