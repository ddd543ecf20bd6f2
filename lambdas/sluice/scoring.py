"""The scoring runtime of a model endpoint: parse a request, validate, preprocess, predict.

Request (``POST``, ``application/json``)::

    {"instances": [{"age": 42, "plan": "gold", ...}, ...]}

One row is a list of one instance. A request holds at most :data:`MAX_INSTANCES` instances and
:data:`MAX_BODY_BYTES` bytes, which keeps request and response under Lambda's 6 MB synchronous
payload limit. Response::

    {"predictions": [...], "probabilities": [[p_class0, p_class1, ...], ...] | null,
     "model": "credit", "version": 3, "request_id": "..."}

``probabilities`` lists one probability per class, in the order of the estimator's sorted
``classes_``; it is ``null`` for regressors.

Two flavours serve the same registered version and share every step but the predict:

* ``"sklearn"`` (container image): the registered scikit-learn estimator (``model.joblib``);
* ``"onnx"`` (zip Lambda, 250 MB limit): the ONNX graph (``model.onnx``) run by ONNX Runtime,
  registered only if it passed the parity check on the holdout set.

This module imports with numpy alone (plus ``onnxruntime`` for the onnx flavour): pandas,
scikit-learn and scipy are never imported on the onnx path, and a request never builds a
DataFrame. Validation is :meth:`FeatureSchema.validate` with ``as_frame=False`` (whole-column
checks), preprocessing is :meth:`Preprocessor.transform_columns` on the validated columns.
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.errors import SluiceError
from sluice.features import Preprocessor
from sluice.names import MAX_INSTANCES
from sluice.schema import FeatureError, FeatureSchema

FLAVOURS = ("sklearn", "onnx")
# Lambda's synchronous payload limit is 6 MB for the event (body + headers) and the response.
MAX_BODY_BYTES = 5 * 1024 * 1024
# Errors listed in a 400 response, so one bad batch cannot produce a huge body.
MAX_LISTED_ERRORS = 10


class RequestError(SluiceError):
    """A scoring request that cannot be scored; ``errors`` lists each problem for the response.

    Each item is ``{"field": "instances[3].age", "code": "type", "message": "..."}``.
    """

    def __init__(self, message: str, *, errors: Sequence[Mapping[str, Any]] = (), status: int = 400) -> None:
        super().__init__(message, status=status)
        self.errors = [dict(e) for e in errors]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": str(self), "status": self.status}
        if self.errors:
            body["errors"] = self.errors
        return body


def _request_error(field: str, code: str, message: str, *, status: int = 400) -> RequestError:
    text = f"{field}: {message}"
    return RequestError(text, errors=[{"field": field, "code": code, "message": text}], status=status)


# ---------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------


def parse_request(body: str | bytes | Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The ``instances`` of a scoring request body.

    Raises
    ------
    RequestError
        400 naming ``body`` (empty, malformed JSON, not an object, unknown fields) or
        ``instances`` (absent, not a list, empty); 413 when the body or the batch is too large.
    """
    if body is None or (isinstance(body, str | bytes) and not body.strip()):
        raise _request_error("body", "empty", 'empty request; expected {"instances": [{...}, ...]}')
    if isinstance(body, str | bytes):
        size = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", "surrogatepass"))
        if size > MAX_BODY_BYTES:
            raise _request_error(
                "body", "too_large", f"{size} bytes is more than the limit of {MAX_BODY_BYTES}", status=413
            )
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, too many digits, nesting
            raise _request_error("body", "malformed_json", f"malformed JSON ({_short(err)})") from None
    if not isinstance(body, Mapping):
        raise _request_error(
            "body", "type", f'expected a JSON object {{"instances": [...]}}, got {_json_type(body)}'
        )
    extra = sorted(str(k) for k in body if k != "instances")
    if extra:
        raise _request_error(
            "body", "unknown_field", f"unknown field(s) {', '.join(map(repr, extra[:5]))}; only 'instances'"
        )
    if "instances" not in body:
        raise _request_error("instances", "missing", "required (a list of feature objects)")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise _request_error("instances", "type", f"expected a list of objects, got {_json_type(instances)}")
    if not instances:
        raise _request_error("instances", "empty", "expected at least one instance")
    if len(instances) > MAX_INSTANCES:
        raise _request_error(
            "instances",
            "too_large",
            f"{len(instances)} instances is more than the limit of {MAX_INSTANCES} per request",
            status=413,
        )
    return instances


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def feature_errors(errors: Sequence[FeatureError]) -> RequestError:
    """One 400 error for schema violations; the message names the first offending fields."""
    items = []
    for e in errors[:MAX_LISTED_ERRORS]:
        field = str(e).split(":", 1)[0] if e.feature or e.code == "record" else "instances"
        items.append({"field": field, "feature": e.feature, "code": e.code, "message": str(e)})
    message = "; ".join(str(e) for e in errors[:3])
    if len(errors) > 3:
        message += f"; and {len(errors) - 3} more problem(s)"
    return RequestError(message, errors=items)


# ---------------------------------------------------------------------------------------------
# Predictors
# ---------------------------------------------------------------------------------------------


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

    The graph (made by :func:`sluice.onnx_export.to_onnx`) takes the preprocessed float32
    matrix as its one input; classifiers output ``label`` and ``probabilities`` (no ZipMap),
    regressors one ``variable``.
    """

    def __init__(self, onnx_bytes: bytes, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # A Lambda has one or two vCPUs; extra threads only add scheduling latency for small batches.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad graphs
            raise SluiceError(f"model.onnx cannot be loaded by ONNX Runtime: {_short(err)}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {self.input_name: np.asarray(matrix, dtype=np.float32)})
        if len(outputs) >= 2:
            return np.asarray(outputs[0]).ravel(), np.asarray(outputs[1], dtype=float)
        return np.asarray(outputs[0], dtype=float).ravel(), None


# ---------------------------------------------------------------------------------------------
# Scorer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """The result of one scoring request."""

    request_id: str
    model: str
    version: int
    instances: list[Mapping[str, Any]]
    predictions: np.ndarray
    probabilities: np.ndarray | None

    @property
    def positive_probabilities(self) -> np.ndarray | None:
        """Per row: P(second class) for a binary classifier, else the predicted class's probability."""
        if self.probabilities is None or self.probabilities.ndim != 2 or not len(self.probabilities):
            return None
        if self.probabilities.shape[1] == 2:
            return self.probabilities[:, 1]
        return self.probabilities.max(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions.tolist(),
            "probabilities": None if self.probabilities is None else self.probabilities.tolist(),
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
        }


class Scorer:
    """One registered model version ready to score: schema, preprocessing and predictor.

    Build it with :meth:`from_registry` (or :func:`get_scorer`, which caches it per process).

    Parameters
    ----------
    name, version
        The registered model version served.
    flavour
        ``"sklearn"`` or ``"onnx"``.
    schema, preprocessor, predictor
        What validates, shapes and predicts; ``predictor.predict(matrix)`` returns
        ``(labels, probabilities | None)``.
    """

    def __init__(
        self,
        *,
        name: str,
        version: int,
        flavour: str,
        schema: FeatureSchema,
        preprocessor: Preprocessor,
        predictor: SklearnPredictor | OnnxPredictor,
    ) -> None:
        if flavour not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        missing = [c for c in (*preprocessor.numeric, *preprocessor.categorical) if c not in schema.names]
        if missing:
            raise SluiceError(
                f"model {name!r} version {version}: preprocessing uses feature(s) not in schema.json: "
                + ", ".join(missing)
            )
        self.name = name
        self.version = int(version)
        self.flavour = flavour
        self.schema = schema
        self.preprocessor = preprocessor
        self.predictor = predictor

    @classmethod
    def from_loaded(cls, loaded: Any, *, flavour: str) -> Scorer:
        """From a registry ``LoadedModel`` (artifacts already fetched and hash-verified)."""
        record = loaded.record
        if flavour == "onnx":
            onnx_bytes = getattr(loaded, "onnx_bytes", None)
            if not onnx_bytes:
                raise SluiceError(
                    f"model {record.name!r} version {record.version} has no model.onnx artifact "
                    "(ONNX conversion unsupported or parity check failed); serve it with the container flavour"
                )
            predictor: SklearnPredictor | OnnxPredictor = OnnxPredictor(onnx_bytes)
        else:
            predictor = SklearnPredictor(loaded.estimator)
        return cls(
            name=record.name,
            version=record.version,
            flavour=flavour,
            schema=loaded.schema,
            preprocessor=loaded.preprocessor,
            predictor=predictor,
        )

    @classmethod
    def from_registry(cls, registry: Any, name: str, version: int, *, flavour: str = "sklearn") -> Scorer:
        """Fetch (sha256-verified), load and wrap ``name`` version ``version``."""
        if flavour not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        return cls.from_loaded(registry.load(name, version=int(version), flavour=flavour), flavour=flavour)

    def matrix(self, instances: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Validate ``instances`` against the schema and preprocess them into the model's matrix.

        Raises
        ------
        RequestError
            400 naming every offending feature (at most one entry per feature and problem).
        """
        try:
            columns, errors = self.schema.validate(instances, as_frame=False)
        except FeatureError as err:
            raise feature_errors([err]) from None
        except SluiceError as err:
            raise _request_error("instances", "type", str(err)) from None
        if errors:
            raise feature_errors(errors)
        return self.preprocessor.transform_columns(columns)

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predictor.predict(self.matrix(instances))

    def score(self, body: str | bytes | Mapping[str, Any] | None, *, request_id: str) -> Scored:
        """Score one request body (see the module docstring for its shape)."""
        instances = parse_request(body)
        labels, probabilities = self.predict(instances)
        return Scored(
            request_id=request_id,
            model=self.name,
            version=self.version,
            instances=instances,
            predictions=labels,
            probabilities=probabilities,
        )


# ---------------------------------------------------------------------------------------------
# Warm cache
# ---------------------------------------------------------------------------------------------

# The registry alias an endpoint version without SLUICE_MODEL_VERSION serves.
CHAMPION_ALIAS = "champion"
_cache: dict[tuple[str, str, str], Scorer] = {}
_cache_lock = threading.Lock()


def get_scorer(
    name: str,
    version: int | str | None,
    flavour: str = "sklearn",
    *,
    registry: Any = None,
    manifest: str = "",
) -> Scorer:
    """The process-wide :class:`Scorer` for a model version: loaded once, reused while warm.

    An empty ``version`` serves the registry's :data:`CHAMPION_ALIAS` version (resolved once
    per process): the Lambda version that ``cdk deploy`` creates is bound to no model version,
    so after a redeploy the endpoint serves the promoted model. ``registry`` defaults to
    :meth:`ModelRegistry.from_settings` on the environment. ``manifest`` (the version's
    ``SLUICE_MODEL_ARTIFACTS``, bound at deploy) lets the load skip the registry table.
    """
    if not name:
        raise SluiceError("SLUICE_MODEL_NAME is not set: deploy a model version to this endpoint first")
    key = (name, str(version or ""), flavour)
    found = _cache.get(key)
    if found is not None:
        return found
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            if registry is None:
                from sluice.registry import ModelRegistry
                from sluice.settings import Settings

                registry = ModelRegistry.from_settings(Settings.from_env())
            if version in (None, ""):
                number = registry.get(name, alias=CHAMPION_ALIAS).version
            else:
                try:
                    number = int(version)
                except (TypeError, ValueError):
                    raise SluiceError(
                        f"SLUICE_MODEL_VERSION must be a version number, got {version!r}"
                    ) from None
            with _collector_paused():
                # the manifest belongs to the bound version; the champion is resolved by the table
                found = _load_scorer(
                    registry, name, number, flavour, manifest if version not in (None, "") else ""
                )
            _cache[key] = found
        return found


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a model loads, then freeze what is loaded.

    Unpickling a scikit-learn model imports scikit-learn and allocates a few hundred thousand
    objects; with numpy, boto3 and its service models already in memory, every collection that
    triggers walks them all. What the load leaves (modules, the model, clients) lives as long
    as the process, so it goes to the permanent generation (``gc.freeze``), which later
    collections skip: without that, the first collection after the load would walk everything
    it allocated. The little cyclic garbage a load makes is kept. ``bench_serving`` measures the
    container's cold start with it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def _load_scorer(registry: Any, name: str, number: int, flavour: str, manifest: str) -> Scorer:
    """From the version's deploy-time manifest when it has one, else from the registry table."""
    if not manifest:
        return Scorer.from_registry(registry, name, number, flavour=flavour)
    return Scorer.from_loaded(
        registry.load_manifest(name, number, manifest, flavour=flavour), flavour=flavour
    )


def clear_cache() -> None:
    """Forget loaded models (tests)."""
    with _cache_lock:
        _cache.clear()
