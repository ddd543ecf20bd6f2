"""Training with a recorded form: estimator class + hyperparameters + preprocessing, and holdout metrics.

Retraining reuses the champion's form exactly (:meth:`TrainingSpec.from_record`): the same
estimator class, the same ``get_params()``, the same features. No new feature engineering or tuning.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split

from sluice.errors import SluiceError
from sluice.models.features import Preprocessor

TASKS = ("classification", "regression")
# Estimators are named by dotted path in specs and registry records, which run-time inputs can
# carry: the path must be a public scikit-learn name (no private module, which is where the
# callables that run code live, e.g. sklearn.utils._testing), and what it names must be an
# estimator class of the spec's task before anything is called.
_ESTIMATOR_PATH = re.compile(r"^sklearn(\.[A-Za-z][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class TrainingSpec:
    """What to train: the functional form and the data layout.

    Parameters
    ----------
    target
        Label column.
    numeric, categorical
        Feature columns.
    estimator
        Dotted path of a scikit-learn estimator class, e.g. ``sklearn.linear_model.LogisticRegression``.
    hyperparameters
        Keyword arguments of the estimator (its ``get_params()`` after training are recorded).
    """

    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    estimator: str = "sklearn.linear_model.LogisticRegression"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    holdout_fraction: float = 0.2
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SluiceError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise SluiceError(f"holdout_fraction must be between 0 and 1; got {self.holdout_fraction}")
        if not _ESTIMATOR_PATH.match(self.estimator):
            raise SluiceError(
                f"estimator must be the public path of a scikit-learn class; got {self.estimator[:100]!r}"
            )

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["numeric"] = list(self.numeric)
        data["categorical"] = list(self.categorical)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSpec:
        try:
            return cls(
                target=data["target"],
                numeric=tuple(data["numeric"]),
                categorical=tuple(data.get("categorical", ())),
                estimator=data["estimator"],
                hyperparameters=dict(data.get("hyperparameters", {})),
                task=data.get("task", "classification"),
                holdout_fraction=float(data.get("holdout_fraction", 0.2)),
                random_state=int(data.get("random_state", 0)),
            )
        except KeyError as err:
            raise SluiceError(f"training spec lacks field {err}") from None

    def build_estimator(self) -> BaseEstimator:
        module_name, _, class_name = self.estimator.rpartition(".")
        try:
            estimator_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            raise SluiceError(f"estimator {self.estimator!r} cannot be imported") from None
        # Checked on the class, so nothing the path names is called unless it is an estimator.
        mixin = ClassifierMixin if self.task == "classification" else RegressorMixin
        is_estimator = inspect.isclass(estimator_class) and issubclass(estimator_class, BaseEstimator)
        if not (is_estimator and issubclass(estimator_class, mixin)):
            raise SluiceError(f"estimator {self.estimator!r} is not a scikit-learn {self.task} estimator")
        try:
            return estimator_class(**self.hyperparameters)
        except TypeError as err:
            raise SluiceError(f"hyperparameters do not fit {class_name}: {err}") from None


@dataclass
class TrainingResult:
    """A trained model and everything the registry records about it."""

    spec: TrainingSpec
    preprocessor: Preprocessor
    estimator: BaseEstimator
    metrics: dict[str, float]
    train: pd.DataFrame
    holdout: pd.DataFrame

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The estimator's full ``get_params()``, JSON-able, as retraining will reuse them."""
        return jsonable_params(self.estimator.get_params(deep=False))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        predicted: np.ndarray = self.estimator.predict(self.preprocessor.transform(frame))
        return predicted


def split(frame: pd.DataFrame, spec: TrainingSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/holdout split (stratified for classification)."""
    if spec.target not in frame.columns:
        raise SluiceError(f"training data lacks the target column {spec.target!r}")
    if len(frame) < 10:
        raise SluiceError(f"training data has {len(frame)} rows; at least 10 are needed")
    stratify = (
        frame[spec.target] if spec.task == "classification" and frame[spec.target].nunique() > 1 else None
    )
    train, holdout = train_test_split(
        frame, test_size=spec.holdout_fraction, random_state=spec.random_state, stratify=stratify
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def train(frame: pd.DataFrame, spec: TrainingSpec) -> TrainingResult:
    """Split ``frame``, fit preprocessing and estimator on the train partition, score the holdout."""
    return fit(*split(frame, spec), spec)


def fit(train_part: pd.DataFrame, holdout: pd.DataFrame, spec: TrainingSpec) -> TrainingResult:
    """Fit preprocessing and estimator on ``train_part``; score ``holdout`` (an already made split)."""
    missing = [c for c in [*spec.features, spec.target] if c not in train_part.columns]
    if missing:
        raise SluiceError(f"training data lacks column(s) {', '.join(map(repr, missing))}")
    preprocessor = Preprocessor(spec.numeric, spec.categorical).fit(train_part)
    estimator = spec.build_estimator()
    estimator.fit(preprocessor.transform(train_part), train_part[spec.target].to_numpy())
    result = TrainingResult(spec, preprocessor, estimator, {}, train_part, holdout)
    result.metrics = evaluate(result, holdout)
    return result


def evaluate(model: TrainingResult, frame: pd.DataFrame) -> dict[str, float]:
    """Holdout metrics: F1, accuracy and ROC AUC (binary) for classification; MAE, RMSE, R² otherwise."""
    matrix = model.preprocessor.transform(frame)
    truth = frame[model.spec.target].to_numpy()
    predicted = model.estimator.predict(matrix)
    return prediction_metrics(
        model.spec.task,
        truth,
        predicted,
        scores=_positive_scores(model.estimator, matrix),
    )


def prediction_metrics(
    task: str, truth: np.ndarray, predicted: np.ndarray, *, scores: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of predictions against labels (also used for concept drift on production labels)."""
    if len(truth) == 0:
        return {}
    if task == "classification":
        binary = len(np.unique(truth)) <= 2
        out = {
            "accuracy": float(skm.accuracy_score(truth, predicted)),
            "f1": float(
                skm.f1_score(truth, predicted, average="binary" if binary else "macro", zero_division=0)
            ),
        }
        if binary and scores is not None and len(np.unique(truth)) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(truth, scores))
        return out
    error = predicted - truth
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(skm.r2_score(truth, predicted)) if len(truth) > 1 else 0.0,
    }


def _positive_scores(estimator: BaseEstimator, matrix: np.ndarray) -> np.ndarray | None:
    if hasattr(estimator, "predict_proba") and len(getattr(estimator, "classes_", [])) == 2:
        scores: np.ndarray = estimator.predict_proba(matrix)[:, 1]
        return scores
    return None


def jsonable_params(params: dict[str, Any], *, skip_other: bool = False) -> dict[str, Any]:
    """The hyperparameters as JSON values (numpy scalars unwrapped, lists of scalars kept).

    Any other value raises, unless ``skip_other`` (a model trained elsewhere, whose parameters may
    hold arrays or objects): then it is left out.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, bool | int | float | str) for v in value):
            out[key] = list(value)
        elif not skip_other:
            raise SluiceError(f"hyperparameter {key!r} is not JSON-serialisable ({type(value).__name__})")
    return out
