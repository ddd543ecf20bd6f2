"""The reference rows a fitted model is registered with: its features, and its holdout metrics.

Shared by every way a fitted model registers (:mod:`sluice.models.imports` for scikit-learn files
and MLflow directories, :mod:`sluice.models.onnx_export` for ONNX graphs) and by project
training's candidate checks. Registration side only (pandas).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sluice.errors import SluiceError

if TYPE_CHECKING:
    from sluice.monitoring.estimation import Calibrator

_REASON_CHARS = 300  # a stored reason stays a line, never a traceback


def reference_features(reference: pd.DataFrame, target: str | None) -> pd.DataFrame:
    """The feature columns of ``reference``: all but ``target``."""
    if not isinstance(reference, pd.DataFrame):
        raise SluiceError(f"reference data must be a pandas DataFrame, got {type(reference).__name__}")
    if len(reference) == 0:
        raise SluiceError("--reference has no rows")
    if target is not None and target not in reference.columns:
        raise SluiceError(f"--reference lacks the --target column {target!r}")
    features = reference.drop(columns=[target]) if target is not None else reference
    if features.shape[1] == 0:
        raise SluiceError("--reference has no feature columns")
    return features


def holdout_metrics(
    estimator: Any, reference: pd.DataFrame, target: str | None, *, task: str
) -> dict[str, float]:
    """Metrics of ``estimator`` on the labelled ``reference`` rows ({} without a target).

    A binary classifier's labels are scored as scikit-learn does: the second of ``classes_`` is
    the positive class, whatever the labels are (``0``/``1``, ``"no"``/``"yes"``).
    """
    from sluice.models.training import prediction_metrics

    if target is None:
        return {}
    labelled = reference[reference[target].notna()]
    if len(labelled) == 0:
        raise SluiceError(f"--reference has no rows with a {target!r} label")
    features = labelled.drop(columns=[target])
    truth, predicted = labelled[target].to_numpy(), predict_rows(estimator, features)
    scores = None
    classes = getattr(estimator, "classes_", None)
    if task == "classification" and classes is not None:
        unknown = sorted(map(str, set(np.unique(truth).tolist()) - set(np.asarray(classes).tolist())))
        if unknown:
            raise SluiceError(
                f"--target {target!r} holds label(s) the model does not know: {', '.join(unknown[:5])}"
            )
        if len(classes) == 2:
            truth, predicted = (truth == classes[1]).astype(int), (predicted == classes[1]).astype(int)
            if hasattr(estimator, "predict_proba"):
                scores = np.asarray(estimator.predict_proba(features))[:, 1]
    try:
        return prediction_metrics(task, truth, predicted, scores=scores)
    except (ValueError, TypeError) as err:
        raise SluiceError(f"--target {target!r}: metrics cannot be computed ({one_line(err)})") from None


def reference_calibration(estimator: Any, labelled: pd.DataFrame, target: str | None) -> Calibrator | None:
    """A binary classifier's calibration check on labelled rows (:func:`~sluice.monitoring.estimation.fit_calibrator`).

    ``None`` without a target, for other models, or without ``predict_proba``: label-free
    performance estimation needs the positive class's probability.
    """
    from sluice.monitoring.estimation import fit_calibrator

    classes = getattr(estimator, "classes_", None)
    if target is None or classes is None or len(classes) != 2 or not hasattr(estimator, "predict_proba"):
        return None
    rows = labelled[labelled[target].notna()]
    if len(rows) == 0:
        return None
    scores = np.asarray(estimator.predict_proba(rows.drop(columns=[target])))[:, 1]
    return fit_calibrator(rows[target].to_numpy() == classes[1], scores)


def predict_rows(estimator: Any, features: pd.DataFrame) -> np.ndarray:
    """``estimator.predict(features)``; whatever it raises becomes one line naming the reference."""
    try:
        return np.asarray(estimator.predict(features))
    except Exception as err:  # the user's model on the user's data: one line, naming both
        raise SluiceError(f"--model cannot predict the --reference rows ({one_line(err)})") from None


def installed_versions(names: Sequence[str]) -> dict[str, str]:
    """``{name: version}`` of those of ``names`` that are installed (what ``model.json`` records)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def one_line(err: BaseException) -> str:
    """The first line of an error, bounded: a stored or printed reason is never a traceback."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    line = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return line[:_REASON_CHARS]
