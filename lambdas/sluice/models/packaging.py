"""A training result as a registrable :class:`~sluice.registry.bundle.ModelBundle`.

:func:`bundle_from_training` pickles the estimator, writes the preprocessing state, infers the
request schema, fits the drift baseline profile and, if asked, exports the estimator to ONNX
(kept only if it passes the parity check). The registry stores what it is given and never
imports this module, so registering does not depend on training, monitoring or serving code.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from sluice.errors import SluiceError
from sluice.registry.bundle import (
    CALIBRATION_ARTIFACT,
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    PROFILE_ARTIFACT,
    SCHEMA_ARTIFACT,
    SPEC_ARTIFACT,
    ModelBundle,
)

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.training import TrainingResult
    from sluice.monitoring.estimation import Calibrator


def bundle_from_training(result: TrainingResult, *, onnx: bool = True) -> ModelBundle:
    """Build the artifacts of a :func:`sluice.models.training.train` result.

    The drift baseline profile is fitted on the training partition's features. With ``onnx``,
    the estimator is converted with skl2onnx and ``model.onnx`` is kept only if it passes
    :func:`sluice.models.onnx_export.check_parity` on the holdout partition; the outcome is
    kept in ``notes["onnx"]`` either way. ``notes["holdout_rows"]`` records how many rows the
    metrics were measured on, which the concept-drift check's intervals account for.
    """
    import joblib

    from sluice.models.schema import FeatureSchema
    from sluice.monitoring.profile import DriftProfile

    spec = result.spec
    features = result.train[spec.features]
    buffer = io.BytesIO()
    joblib.dump(result.estimator, buffer)
    artifacts: dict[str, bytes] = {MODEL_ARTIFACT: buffer.getvalue()}
    for key, body in result.preprocessor.to_artifacts().items():
        artifacts[PREPROCESSING_ARTIFACTS[key]] = _json_bytes(body)
    artifacts[SCHEMA_ARTIFACT] = _json_bytes(
        FeatureSchema.infer(features, categorical=list(spec.categorical)).to_dict()
    )
    artifacts[PROFILE_ARTIFACT] = _json_bytes(
        DriftProfile(categorical=list(spec.categorical)).fit(features).to_dict()
    )
    artifacts[SPEC_ARTIFACT] = _json_bytes(spec.to_dict())
    notes: dict[str, Any] = {}
    if result.holdout is not None:
        notes["holdout_rows"] = len(result.holdout)
        calibration = holdout_calibration(result)
        if calibration is not None:
            artifacts[CALIBRATION_ARTIFACT] = calibration.to_json()
            notes["calibration"] = {"method": calibration.method, "ece_before": calibration.ece_before}
    if onnx:
        notes["onnx"] = _onnx_artifact(result, artifacts)
    return ModelBundle(
        artifacts=artifacts,
        metrics={k: float(v) for k, v in result.metrics.items()},
        hyperparameters=result.hyperparameters,
        estimator=spec.estimator,
        notes=notes,
    )


def holdout_calibration(result: TrainingResult) -> Calibrator | None:
    """A binary classifier's calibration check on the holdout (:func:`~sluice.monitoring.estimation.fit_calibrator`).

    ``None`` for other models: label-free performance estimation needs the positive class's
    probability, which is what capture records for binary classifiers.
    """
    from sluice.models.training import _positive_scores
    from sluice.monitoring.estimation import fit_calibrator

    if result.holdout is None or result.spec.task != "classification":
        return None
    matrix = result.preprocessor.transform(result.holdout)
    scores = _positive_scores(result.estimator, matrix)
    if scores is None:
        return None
    positive = result.estimator.classes_[1]
    return fit_calibrator(result.holdout[result.spec.target].to_numpy() == positive, scores)


def _onnx_artifact(result: TrainingResult, artifacts: dict[str, bytes]) -> dict[str, Any]:
    from sluice.models.onnx_export import check_parity, to_onnx

    try:
        graph = to_onnx(result.estimator, result.preprocessor.n_features_out_)
        parity = check_parity(result.estimator, graph, result.preprocessor.transform(result.holdout))
    except (SluiceError, ImportError) as err:
        return {"exported": False, "reason": str(err)}
    if not parity.ok:
        return {"exported": False, "reason": "parity check failed", "parity": parity.to_dict()}
    artifacts[ONNX_ARTIFACT] = graph
    return {"exported": True, "parity": parity.to_dict()}


def _json_bytes(value: Any) -> bytes:
    # Never sort keys: the preprocessing artifacts' key order is the model's column order.
    return json.dumps(value, indent=1).encode()
