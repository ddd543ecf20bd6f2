"""The steps Sluice runs for this model, named in ``[tool.sluice]`` of the project's pyproject.

- ``preprocess(frame)``: cleans raw rows before training and batch scoring (not at the endpoint,
  where the request schema already holds rows to the model's form).
- ``train(data, hyperparameters)``: fits and returns the pipeline; retraining calls it with the
  champion's recorded hyperparameters.
- ``postprocess(frame, probabilities)``: turns the model's probabilities into decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from credit_decisions.pipeline import build_pipeline

TARGET = "default"
CATEGORICAL = ("region", "product")
#: Probability of default at or above which an application is declined, and at or above which
#: it goes to a person for review.
DECLINE_AT = 0.5
REVIEW_AT = 0.3


def preprocess(frame: pd.DataFrame) -> pd.DataFrame:
    """Normalise the categoricals' spelling and drop rows without a usable income."""
    out = frame.copy()
    for name in CATEGORICAL:
        out[name] = out[name].astype("string").str.strip().str.lower()
    return out[~(out["income"] <= 0)].reset_index(drop=True)


def train(data: pd.DataFrame, hyperparameters: Mapping[str, Any] | None = None) -> Pipeline:
    """Fit the pipeline on labelled ``data`` (the ``default`` column is the label)."""
    features = data.drop(columns=[TARGET])
    return build_pipeline(hyperparameters).fit(features, data[TARGET].to_numpy())


def postprocess(frame: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """A decision per row: ``decline``, ``review`` or ``approve`` from the probability of default."""
    p = np.asarray(probabilities, dtype=float)
    decision = np.where(p >= DECLINE_AT, "decline", np.where(p >= REVIEW_AT, "review", "approve"))
    return pd.DataFrame({"probability": p, "decision": decision}, index=frame.index)
