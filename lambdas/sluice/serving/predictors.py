"""The predict step: labels and class probabilities from a preprocessed matrix (or a frame).

* :class:`SklearnPredictor` (container image): the registered scikit-learn estimator;
* :class:`OnnxPredictor` (zip Lambda): the ONNX graph run by ONNX Runtime, imported only when
  one is built.

Both return ``(labels, probabilities | None)``; ``probabilities`` lists one probability per
class, in the order of the estimator's sorted ``classes_``, and is ``None`` for regressors.
This module imports with numpy alone. The built-in recipe
(:class:`sluice.models.contract.BuiltinRecipe`) puts a predictor after its preprocessing,
:class:`sluice.models.contract.SklearnModel` runs :class:`SklearnPredictor` on a DataFrame, and
the ONNX export checks its graph's parity through :class:`OnnxPredictor`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SklearnPredictor:
    """Labels and class probabilities from a fitted scikit-learn estimator (container flavour)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self._proba = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
        # For these, predict() is the argmax of predict_proba(), so one pass gives both. SVC-style
        # models (``probability=True``) calibrate separately and disagree, so they predict twice.
        self._argmax = self._proba and not hasattr(estimator, "probability")

    def predict(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self._proba:
            return np.asarray(self.estimator.predict(matrix)), None
        probabilities = np.asarray(self.estimator.predict_proba(matrix), dtype=float)
        if self._argmax:
            labels = self.estimator.classes_[np.argmax(probabilities, axis=1)]
        else:
            labels = np.asarray(self.estimator.predict(matrix))
        return labels, probabilities


class OnnxPredictor:
    """Labels and class probabilities from a serialised ONNX graph (zip flavour).

    The graph (made by :func:`sluice.models.onnx_export.to_onnx`) takes the preprocessed float32
    matrix as its one input; classifiers output ``label`` and ``probabilities`` (no ZipMap),
    regressors one ``variable``.
    """

    def __init__(self, onnx_bytes: bytes, *, threads: int = 1) -> None:
        from sluice.models.onnx_model import load_session

        self.session = load_session(onnx_bytes, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {self.input_name: np.asarray(matrix, dtype=np.float32)})
        if len(outputs) >= 2:
            return np.asarray(outputs[0]).ravel(), np.asarray(outputs[1], dtype=float)
        return np.asarray(outputs[0], dtype=float).ravel(), None
