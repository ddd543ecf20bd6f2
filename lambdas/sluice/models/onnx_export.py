"""Convert a fitted scikit-learn estimator to ONNX for the zip endpoint flavour, with a parity check.

The zip flavour must fit Lambda's 250 MB unzipped limit, and numpy + scipy + scikit-learn + joblib
alone are 268 MB. numpy + ONNX Runtime are 136 MB (arm64, measured), so the zip flavour serves the
ONNX graph of the same estimator. The preprocessing stays in numpy (:mod:`sluice.models.features`), so
the graph's input is the preprocessed matrix and both flavours share every step but the predict.
Conversion happens when a training result is packaged (:mod:`sluice.models.packaging`), and a
parity check on the holdout set, run through the zip flavour's own
:class:`~sluice.serving.predictors.OnnxPredictor`, decides whether the ONNX artifact may be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.errors import SluiceError

LABEL_AGREEMENT_MIN = 0.999
PROBABILITY_TOLERANCE = 1e-4
# A failed export's reason goes into the version record (a DynamoDB item, 400 KB at most):
# skl2onnx's messages can hold a whole tree ensemble's attributes (324 KB measured for a
# HistGradientBoostingClassifier), so only its start is kept.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Parity:
    """How the ONNX graph's predictions compare with scikit-learn's on the same rows."""

    rows: int
    label_agreement: float
    max_probability_diff: float

    @property
    def ok(self) -> bool:
        return self.label_agreement >= LABEL_AGREEMENT_MIN and self.max_probability_diff <= PROBABILITY_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "label_agreement": self.label_agreement,
            "max_probability_diff": self.max_probability_diff,
            "ok": self.ok,
        }


def to_onnx(estimator: Any, n_features: int) -> bytes:
    """Serialised ONNX graph of ``estimator`` taking a float32 matrix of ``n_features`` columns."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    try:
        graph = convert_sklearn(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options=options,
            target_opset=18,
        )
    except Exception as err:  # skl2onnx raises many types for unsupported estimators
        raise SluiceError(
            f"estimator {type(estimator).__name__} cannot be converted to ONNX: {bounded_reason(err)}"
        ) from None
    serialised: bytes = graph.SerializeToString()
    return serialised


def bounded_reason(err: BaseException, limit: int = MAX_REASON_CHARS) -> str:
    """``err``'s message on one line, cut to ``limit`` characters (saying how long it was)."""
    text = " ".join(str(err).split())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters in all)"


def check_parity(estimator: Any, onnx_bytes: bytes, matrix: np.ndarray) -> Parity:
    """Compare labels and probabilities of the ONNX graph with ``estimator`` on ``matrix``."""
    from sluice.serving.predictors import OnnxPredictor

    predictor = OnnxPredictor(onnx_bytes)
    labels, probabilities = predictor.predict(matrix)
    expected = estimator.predict(matrix)
    agreement = float(np.mean(labels == expected)) if len(matrix) else 1.0
    diff = 0.0
    if probabilities is not None and hasattr(estimator, "predict_proba") and len(matrix):
        diff = float(np.max(np.abs(probabilities - estimator.predict_proba(matrix))))
    return Parity(rows=len(matrix), label_agreement=agreement, max_probability_diff=diff)
