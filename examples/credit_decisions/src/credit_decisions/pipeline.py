"""The model: affordability features, then gradient boosting with native categoricals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from credit_decisions.features import AffordabilityFeatures

#: The hyperparameters the project trains with unless told otherwise; retraining passes the
#: champion's recorded ones (the classifier's ``get_params()``) back to :func:`build_pipeline`.
DEFAULT_HYPERPARAMETERS: Mapping[str, Any] = {
    "categorical_features": "from_dtype",  # the categoricals are typed by AffordabilityFeatures
    "learning_rate": 0.08,
    "max_iter": 200,
    "max_leaf_nodes": 31,
    "l2_regularization": 1.0,
    "random_state": 0,
}


def build_pipeline(hyperparameters: Mapping[str, Any] | None = None) -> Pipeline:
    """An unfitted pipeline; ``hyperparameters`` go to the classifier (unknown names are an error).

    The classifier's recorded ``get_params()`` round-trip: ``build_pipeline(fitted_classifier.get_params())``
    builds the same classifier.
    """
    params = {**DEFAULT_HYPERPARAMETERS, **(hyperparameters or {})}
    classifier = HistGradientBoostingClassifier(**params)
    return Pipeline([("features", AffordabilityFeatures()), ("classifier", classifier)])
