"""Training records its form; retraining from the record reuses it exactly."""

from __future__ import annotations

import pytest

from sluice.errors import SluiceError
from sluice.models.training import TrainingSpec, prediction_metrics, split, train
from sluice_demo import datasets


@pytest.fixture(scope="module")
def spec() -> TrainingSpec:
    return TrainingSpec(
        target=datasets.TARGET,
        numeric=datasets.NUMERIC,
        categorical=datasets.CATEGORICAL,
        estimator="sklearn.linear_model.LogisticRegression",
        hyperparameters={"C": 0.5, "max_iter": 500},
    )


def test_train_reports_holdout_metrics(spec):
    result = train(datasets.credit(4000, seed=1), spec)
    assert set(result.metrics) == {"accuracy", "f1", "roc_auc"}
    assert result.metrics["roc_auc"] > 0.75
    assert len(result.holdout) == 800


def test_retraining_from_the_recorded_spec_reuses_class_and_params(spec):
    # Given a first model and its spec as the registry stores it (JSON), with learned params
    first = train(datasets.credit(3000, seed=1), spec)
    recorded = {**spec.to_dict(), "hyperparameters": first.hyperparameters}
    # When retraining on new data from the record
    again = train(datasets.credit(3000, seed=2), TrainingSpec.from_dict(recorded))
    # Then the functional form is identical
    assert type(again.estimator) is type(first.estimator)
    assert again.estimator.get_params() == first.estimator.get_params()


def test_split_is_deterministic(spec):
    frame = datasets.credit(500, seed=3)
    a, _ = split(frame, spec)
    b, _ = split(frame, spec)
    assert a.equals(b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"estimator": "os.system"}, "scikit-learn class path"),
        ({"task": "ranking"}, "task must be one of"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
    ],
)
def test_bad_specs_are_refused(spec, change, message):
    with pytest.raises(SluiceError, match=message):
        TrainingSpec.from_dict({**spec.to_dict(), **change})


def test_bad_hyperparameters_name_the_problem(spec):
    bad = TrainingSpec.from_dict({**spec.to_dict(), "hyperparameters": {"not_a_param": 1}})
    with pytest.raises(SluiceError, match="hyperparameters do not fit LogisticRegression"):
        bad.build_estimator()


def test_regression_metrics():
    import numpy as np

    out = prediction_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert out["mae"] == pytest.approx(2 / 3)
    assert out["rmse"] == pytest.approx((4 / 3) ** 0.5)
