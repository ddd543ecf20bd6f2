"""The example model project (``examples/credit_decisions``): a user's own pipeline and steps.

It is what "your models, your code" serves; these tests hold its behaviour on its own, as the
project's own test suite would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from sluice_demo.datasets import credit

SRC = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions" / "src"


@pytest.fixture(scope="module")
def project():
    sys.path.insert(0, str(SRC))
    try:
        from credit_decisions import pipeline, steps

        yield steps, pipeline
    finally:
        sys.path.remove(str(SRC))


@pytest.fixture(scope="module")
def fitted(project):
    steps, _ = project
    data = steps.preprocess(credit(4_000, seed=1))
    return steps.train(data, {"max_iter": 80})


def test_train_fits_a_pipeline_that_ranks_defaults(project, fitted):
    steps, _ = project
    holdout = steps.preprocess(credit(2_000, seed=2))
    scores = fitted.predict_proba(holdout.drop(columns=[steps.TARGET]))[:, 1]
    # The generator's label follows a known logistic relationship; 0.8 is well above chance.
    assert roc_auc_score(holdout[steps.TARGET], scores) > 0.8


def test_the_booster_treats_the_categoricals_natively(fitted):
    classifier = fitted.named_steps["classifier"]
    names = list(fitted.named_steps["features"].get_feature_names_out())
    native = {names[i] for i, flag in enumerate(classifier.is_categorical_) if flag}
    assert native == {"region", "product"}


def test_an_unseen_category_and_missing_values_still_score(project, fitted):
    steps, _ = project
    rows = credit(5, seed=3).drop(columns=[steps.TARGET])
    rows.loc[0, "region"] = "atlantis"
    rows.loc[1, "income"] = np.nan
    probabilities = fitted.predict_proba(rows)[:, 1]
    assert probabilities.shape == (5,)
    assert np.isfinite(probabilities).all()


def test_hyperparameters_reach_the_classifier_and_unknown_ones_are_refused(project):
    _, pipeline = project
    built = pipeline.build_pipeline({"max_iter": 7})
    assert built.named_steps["classifier"].max_iter == 7
    assert clone(built).get_params()["classifier__max_iter"] == 7
    with pytest.raises(TypeError):
        pipeline.build_pipeline({"no_such_parameter": 1})


def test_preprocess_normalises_categoricals_and_drops_unusable_income(project):
    steps, _ = project
    raw = credit(4, seed=4)
    raw.loc[0, "region"] = "  North "
    raw.loc[1, "income"] = -5.0
    out = steps.preprocess(raw)
    assert len(out) == 3
    assert out.loc[0, "region"] == "north"


def test_postprocess_turns_probabilities_into_decisions(project):
    steps, _ = project
    frame = credit(4, seed=5)
    decided = steps.postprocess(frame, np.array([0.05, 0.3, 0.49, 0.5]))
    assert decided["decision"].tolist() == ["approve", "review", "review", "decline"]


def test_the_fitted_pipeline_round_trips_through_joblib(project, fitted, tmp_path):
    steps, _ = project
    rows = credit(50, seed=6).drop(columns=[steps.TARGET])
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(rows), fitted.predict_proba(rows))


# -- the python-flavour model: a hand-written points scorecard ----------------------------------


@pytest.fixture(scope="module")
def scorecard(project):
    from credit_decisions import scorecard

    return scorecard


def test_the_scorecard_ranks_defaults_and_round_trips_through_its_file(scorecard, tmp_path):
    card = scorecard.fit_scorecard(credit(4_000, seed=1), "default")
    holdout = credit(2_000, seed=2)
    scores = card.predict_proba(holdout.drop(columns=["default"]))
    assert roc_auc_score(holdout["default"], scores[:, 1]) > 0.8
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    # Points are whole numbers a reviewer can read; a higher score is a lower risk
    assert all(float(p).is_integer() for rule in card.numeric.values() for p in rule["points"])
    folder = card.save(tmp_path / "model")
    loaded = scorecard.Scorecard.load({"scorecard.json": (folder / "scorecard.json").read_bytes()})
    np.testing.assert_array_equal(loaded.predict_proba(holdout), scores)
    assert np.all(np.diff(loaded.predict_proba(holdout)[np.argsort(loaded.score(holdout)), 1]) <= 1e-12)


def test_the_scorecard_scores_missing_values_and_unseen_categories(scorecard):
    card = scorecard.fit_scorecard(credit(2_000, seed=1), "default")
    rows = credit(3, seed=3).drop(columns=["default"])
    rows.loc[0, "region"] = "atlantis"
    rows.loc[1, "income"] = np.nan
    rows.loc[2, "product"] = None
    assert np.isfinite(card.predict_proba(rows)).all() and set(card.predict(rows)) <= {0, 1}
    with pytest.raises(FileNotFoundError, match=r"scorecard\.json"):
        scorecard.Scorecard.load({})
