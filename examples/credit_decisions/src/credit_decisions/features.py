"""Affordability features: the kind of domain transformer a team writes and ships with its model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class AffordabilityFeatures(TransformerMixin, BaseEstimator):
    """Add ratios that say how much of an applicant's income a loan takes, and type the categoricals.

    The categoricals become pandas ``category`` columns with the categories seen in ``fit``, so a
    ``HistGradientBoostingClassifier(categorical_features="from_dtype")`` after it treats them
    natively; a category unseen in ``fit`` becomes missing, which the booster handles.

    Parameters
    ----------
    categorical
        The categorical columns.
    income, loan_amount, debt_ratio
        The columns the ratios are computed from.
    """

    def __init__(
        self,
        categorical: Sequence[str] = ("region", "product"),
        income: str = "income",
        loan_amount: str = "loan_amount",
        debt_ratio: str = "debt_ratio",
    ) -> None:
        self.categorical = categorical
        self.income = income
        self.loan_amount = loan_amount
        self.debt_ratio = debt_ratio

    def fit(self, X: pd.DataFrame, y: Any = None) -> AffordabilityFeatures:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("AffordabilityFeatures takes a DataFrame with named columns")
        self.categories_ = {
            name: sorted(X[name].dropna().astype(str).unique()) for name in self.categorical
        }
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "categories_")
        out = X.copy()
        income = out[self.income].where(out[self.income] > 0)
        out["loan_to_income"] = out[self.loan_amount] / income
        out["free_income"] = out[self.income] * (1.0 - out[self.debt_ratio])
        for name, categories in self.categories_.items():
            values = out[name].astype("string")
            known = values.where(values.isin(categories))  # unseen categories become missing
            out[name] = pd.Categorical(known, categories=categories)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "categories_")
        return np.asarray([*self.feature_names_in_, "loan_to_income", "free_income"], dtype=object)
