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
        ({"estimator": "os.system"}, "public path of a scikit-learn class"),
        # A callable in a private module that runs Python given as a string: refused before import.
        (
            {"estimator": "sklearn.utils._testing.assert_run_python_script_without_output"},
            "public path of a scikit-learn class",
        ),
        ({"task": "ranking"}, "task must be one of"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
    ],
)
def test_bad_specs_are_refused(spec, change, message):
    with pytest.raises(SluiceError, match=message):
        TrainingSpec.from_dict({**spec.to_dict(), **change})


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        ("sklearn.utils.shuffle", "is not a scikit-learn classification estimator"),
        ("sklearn.linear_model.LinearRegression", "is not a scikit-learn classification estimator"),
        ("sklearn.linear_model.NoSuchModel", "cannot be imported"),
    ],
)
def test_only_estimator_classes_of_the_task_are_built(spec, estimator, message, monkeypatch):
    # Given a spec naming a public sklearn name that is not a classifier
    bad = TrainingSpec.from_dict({**spec.to_dict(), "estimator": estimator, "hyperparameters": {}})
    called = []
    monkeypatch.setattr("sklearn.utils.shuffle", lambda *a, **k: called.append(a))
    # When the estimator is built, Then it is refused and nothing it names was called
    with pytest.raises(SluiceError, match=message):
        bad.build_estimator()
    assert called == []


def test_a_classifier_with_native_categoricals_is_built(spec):
    data = {**spec.to_dict(), "estimator": "sklearn.ensemble.HistGradientBoostingClassifier"}
    built = TrainingSpec.from_dict({**data, "hyperparameters": {"max_iter": 5}}).build_estimator()
    assert type(built).__name__ == "HistGradientBoostingClassifier"


def test_bad_hyperparameters_name_the_problem(spec):
    bad = TrainingSpec.from_dict({**spec.to_dict(), "hyperparameters": {"not_a_param": 1}})
    with pytest.raises(SluiceError, match="hyperparameters do not fit LogisticRegression"):
        bad.build_estimator()


def test_regression_metrics():
    import numpy as np

    out = prediction_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert out["mae"] == pytest.approx(2 / 3)
    assert out["rmse"] == pytest.approx((4 / 3) ** 0.5)
