"""Convert a fitted scikit-learn estimator to ONNX for the zip endpoint flavour, with a parity check.

The zip flavour must fit Lambda's 250 MB unzipped limit, and numpy + scipy + scikit-learn + joblib
alone are 268 MB. numpy + ONNX Runtime are 136 MB (arm64, measured), so the zip flavour serves the
ONNX graph of the same estimator. The preprocessing stays in numpy (:mod:`sluice.models.features`), so
the graph's input is the preprocessed matrix and both flavours share every step but the predict.
Conversion happens when a training result is packaged (:mod:`sluice.models.packaging`), and a
parity check on the holdout set, run through the zip flavour's own
:class:`~sluice.serving.predictors.OnnxPredictor`, decides whether the ONNX artifact may be served.

A fitted scikit-learn model registered from its file may get an ONNX twin the same way
(:func:`onnx_twin`): a graph the user gives, or :func:`pipeline_to_onnx`'s conversion of the whole
pipeline (one graph input per feature), kept only if it predicts the reference rows as the model does.
Any ONNX graph registers as it is with :func:`bundle_onnx` (descriptor flavour ``"onnx"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError
from sluice.models.contract import ONNX, ONNX_FILE, Descriptor
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, PROFILE_ARTIFACT, SCHEMA_ARTIFACT, ModelBundle

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from sluice.models.onnx_model import OnnxModel
    from sluice.models.schema import FeatureSchema

LABEL_AGREEMENT_MIN = 0.999
PROBABILITY_TOLERANCE = 1e-4
# A failed export's reason goes into the version record (a DynamoDB item, 400 KB at most):
# skl2onnx's messages can hold a whole tree ensemble's attributes (324 KB measured for a
# HistGradientBoostingClassifier), so only its start is kept.
MAX_REASON_CHARS = 300
_CHECK_ROWS = 1000  # reference rows a graph must score (and a twin match) before anything is uploaded


@dataclass(frozen=True)
class Parity:
    """How the ONNX graph's predictions compare with scikit-learn's on the same rows."""

    rows: int
    label_agreement: float
    max_probability_diff: float

    @property
    def ok(self) -> bool:
        return (
            self.label_agreement >= LABEL_AGREEMENT_MIN and self.max_probability_diff <= PROBABILITY_TOLERANCE
        )

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


# -- ONNX graphs of fitted models: registered as they are, or as a scikit-learn model's twin ------


def pipeline_to_onnx(estimator: Any, schema: FeatureSchema) -> bytes:
    """The ONNX graph of a fitted estimator or ``Pipeline`` that takes a DataFrame of ``schema``.

    One graph input per feature, by name (float ``[n, 1]`` numerics, string ``[n, 1]``
    categoricals), as :class:`~sluice.models.onnx_model.OnnxModel` binds them; classifiers output
    labels and a probability tensor (no ZipMap).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [
        (f.name, StringTensorType([None, 1]) if f.kind == "categorical" else FloatTensorType([None, 1]))
        for f in schema.features
    ]
    steps = getattr(estimator, "steps", None)
    final = steps[-1][1] if isinstance(steps, list) and steps else estimator
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    try:
        graph = convert_sklearn(estimator, initial_types=types, options=options, target_opset=18)
    except Exception as err:  # skl2onnx raises many types for what it cannot convert
        raise SluiceError(
            f"{type(final).__name__} cannot be converted to ONNX: {bounded_reason(err)}"
        ) from None
    serialised: bytes = graph.SerializeToString()
    return serialised


def onnx_twin(
    estimator: Any, onnx: bytes | str | Path | bool, schema: FeatureSchema, sample: pd.DataFrame, *, task: str
) -> tuple[bytes | None, dict[str, Any]]:
    """An ONNX twin of a fitted scikit-learn model, kept only if it predicts ``sample`` as the model does.

    Parameters
    ----------
    estimator
        The fitted model, taking a DataFrame of ``schema``'s features.
    onnx
        The twin's graph (bytes, or a ``.onnx`` file), or ``True`` to convert ``estimator`` with
        :func:`pipeline_to_onnx`.
    schema, sample
        The version's schema and reference feature rows.
    task
        ``"classification"`` or ``"regression"``.

    Returns
    -------
    The graph's bytes (``None`` if it failed) and the outcome for ``notes["onnx"]``: ``exported``,
    ``parity`` and, on failure, a one-line ``reason`` of at most :data:`MAX_REASON_CHARS`.
    """
    from sluice.models.onnx_model import OnnxModel

    try:
        if onnx is True:
            body = pipeline_to_onnx(estimator, schema)
        elif isinstance(onnx, bytes):
            body = onnx
        else:
            body = Path(str(onnx)).expanduser().read_bytes()
        classes = getattr(estimator, "classes_", None) if task == "classification" else None
        twin = OnnxModel(body, schema, task=task, classes=None if classes is None else list(classes))
        labels, probabilities = twin.predict(frame_columns(sample, schema))
        parity = _twin_parity(estimator, sample, labels, probabilities, task=task)
    except (SluiceError, ImportError, OSError) as err:
        return None, {"exported": False, "reason": bounded_reason(err)}
    if not parity.ok:
        return None, {"exported": False, "reason": "parity check failed", "parity": parity.to_dict()}
    return body, {"exported": True, "parity": parity.to_dict()}


def frame_columns(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """``frame``'s columns as validated requests carry them: floats with NaN, objects with ``None``."""
    import pandas as pd

    columns = {}
    for f in schema.features:
        values = frame[f.name]
        if f.kind == "numeric":
            columns[f.name] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        else:
            columns[f.name] = np.array([None if pd.isna(v) else v for v in values.tolist()], dtype=object)
    return columns


def _twin_parity(
    estimator: Any, sample: pd.DataFrame, labels: np.ndarray, probabilities: np.ndarray | None, *, task: str
) -> Parity:
    expected = np.asarray(estimator.predict(sample))
    if task == "regression":
        close = np.isclose(
            labels.astype(float), expected.astype(float), rtol=PROBABILITY_TOLERANCE, atol=1e-6
        )
        return Parity(rows=len(sample), label_agreement=float(np.mean(close)), max_probability_diff=0.0)
    agreement = float(np.mean(labels.astype(str) == expected.astype(str))) if len(sample) else 1.0
    diff = 0.0
    if probabilities is not None and hasattr(estimator, "predict_proba") and len(sample):
        wanted = np.asarray(estimator.predict_proba(sample), dtype=float)
        diff = float(np.max(np.abs(probabilities - wanted))) if probabilities.shape == wanted.shape else 1.0
    return Parity(rows=len(sample), label_agreement=agreement, max_probability_diff=diff)


def bundle_onnx(path: str | Path, reference: pd.DataFrame, *, target: str | None) -> ModelBundle:
    """The artifacts of an ONNX graph registered as it is (descriptor flavour ``"onnx"``).

    ``model.json``, ``schema.json`` and ``profile.json`` from the ``reference`` features as for a
    scikit-learn model, and ``model.onnx``. The graph must load and score the reference rows (its
    inputs bound to the schema's features) before anything is uploaded; with ``target``, holdout
    metrics are recorded.

    Raises
    ------
    SluiceError
        One line: the file is no ONNX graph, or its inputs or outputs do not fit the reference.
    """
    from sluice.models.onnx_model import OnnxModel, graph_task, load_session
    from sluice.models.reference import holdout_metrics, reference_features
    from sluice.models.schema import FeatureSchema
    from sluice.monitoring.profile import DriftProfile

    where = Path(path).expanduser()
    features = reference_features(reference, target)
    schema = FeatureSchema.infer(features)
    try:
        body = where.read_bytes()
        task = graph_task(load_session(body).get_outputs())
        classes = (
            _graph_classes(body, schema, features, reference, target) if task == "classification" else None
        )
        model = OnnxModel(body, schema, task=task, classes=classes)
        _check_rows(model, features.head(_CHECK_ROWS))
    except (SluiceError, OSError) as err:
        raise SluiceError(f"--model {path}: {' '.join(str(err).split())[:MAX_REASON_CHARS]}") from None
    categorical = [f.name for f in schema.features if f.kind == "categorical"]
    descriptor = Descriptor(
        model_file=ONNX_FILE, task=task, flavour=ONNX, classes=classes, libraries=_onnx_libraries()
    )
    artifacts = {
        DESCRIPTOR_ARTIFACT: descriptor.to_json(),
        SCHEMA_ARTIFACT: json.dumps(schema.to_dict(), indent=1).encode(),
        PROFILE_ARTIFACT: json.dumps(
            DriftProfile(categorical=categorical).fit(features).to_dict(), indent=1
        ).encode(),
        ONNX_FILE: body,
    }
    return ModelBundle(
        artifacts=artifacts,
        metrics=holdout_metrics(_FrameModel(model), reference, target, task=task),
        estimator="onnx",
        notes={"source": {"format": "onnx", "file": where.name, **_producer(body)}},
    )


class _FrameModel:
    """An :class:`OnnxModel` seen as an estimator (``predict``, ``predict_proba``, ``classes_``) of frames."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        if model.classes is not None:
            self.classes_ = model.classes

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict(frame_columns(frame, self.model.schema))[0]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray | None:
        return self.model.predict(frame_columns(frame, self.model.schema))[1]


def _graph_classes(
    body: bytes, schema: FeatureSchema, features: pd.DataFrame, reference: pd.DataFrame, target: str | None
) -> tuple[Any, ...]:
    """A classifier graph's classes: recorded in its nodes, its ZipMap's keys, or its labels and ``target``'s."""
    from sluice.models.onnx_model import OnnxModel, recorded_classes

    found = recorded_classes(body)
    if found is not None:
        return found
    probe = OnnxModel(body, schema, task="classification")
    outputs = probe.run(frame_columns(features.head(_CHECK_ROWS), schema))
    if probe.outputs.zipmap and probe.outputs.probabilities:
        return tuple(outputs[probe.outputs.probabilities][0])
    seen = set(np.asarray(outputs[probe.outputs.label]).ravel().tolist()) if probe.outputs.label else set()
    if target is not None:
        seen |= set(reference[target].dropna().tolist())
    width = (
        np.asarray(outputs[probe.outputs.probabilities]).shape[1]
        if probe.outputs.probabilities
        else len(seen)
    )
    if len(seen) != width:
        raise SluiceError(
            f"cannot tell the graph's {width} classes from its labels ({len(seen)} seen); pass --target"
        )
    return tuple(sorted(seen))


def _check_rows(model: OnnxModel, sample: pd.DataFrame) -> None:
    labels, probabilities = model.predict(frame_columns(sample, model.schema))
    if len(labels) != len(sample) or (probabilities is not None and len(probabilities) != len(sample)):
        raise SluiceError(f"the graph answers {len(labels)} predictions for {len(sample)} reference rows")


def _onnx_libraries() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("onnxruntime", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _producer(body: bytes) -> dict[str, Any]:
    """What made the graph (``producer``, ``opset``), as its header says; {} without the onnx package."""
    try:
        import onnx

        graph = onnx.load_from_string(body)
    except Exception:  # the graph loaded in ONNX Runtime already: these fields are only recorded
        return {}
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    return {"producer": f"{graph.producer_name} {graph.producer_version}".strip(), "opset": opsets}
