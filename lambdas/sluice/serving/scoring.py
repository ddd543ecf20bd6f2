"""The scoring runtime of a model endpoint: one registered model version scores a request.

A :class:`Scorer` parses the request (:mod:`sluice.serving.request`), validates it against the
version's schema and hands the validated columns to the version's served model (the model
contract, :class:`sluice.models.contract.ServedModel`). Response::

    {"predictions": [...], "probabilities": [[p_class0, p_class1, ...], ...] | null,
     "model": "credit", "version": 3, "request_id": "..."}

``probabilities`` lists one probability per class, in the order of the estimator's sorted
``classes_``; it is ``null`` for regressors.

Three serving flavours:

* ``"sklearn"`` (container image): the built-in recipe with its scikit-learn estimator
  (``model.joblib``), or a version's own fitted scikit-learn model (``model.json``);
* ``"python"`` (container image built from the model's project): the project's own model class
  (``[tool.sluice] model``) loading the version's ``model/`` files
  (:class:`sluice.models.contract.PythonModel`);
* ``"onnx"`` (zip Lambda, 250 MB limit): a ``model.onnx`` run by ONNX Runtime: the built-in
  recipe's graph or a fitted model's twin (each registered only if it passed its parity check),
  or an ONNX graph registered as it is (:class:`sluice.models.onnx_model.OnnxModel`).

:func:`get_scorer` keeps one :class:`Scorer` per process, so warm invocations reuse it.

This module imports with numpy alone (plus ``onnxruntime`` for the onnx flavour): pandas,
scikit-learn and scipy are never imported on the onnx path. Validation is
:meth:`FeatureSchema.validate` with ``as_frame=False`` (whole-column checks); only a model that
needs a DataFrame builds one. The registry is imported only when a scorer is first loaded.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from sluice.errors import SluiceError
from sluice.models.contract import BuiltinRecipe, ServedModel, served_model
from sluice.models.validation import FeatureError
from sluice.serving.predictors import OnnxPredictor, SklearnPredictor
from sluice.serving.request import feature_errors, parse_request, request_error

if TYPE_CHECKING:
    from sluice.models.features import Preprocessor
    from sluice.models.schema import FeatureSchema
    from sluice.registry.loading import LoadedModel
    from sluice.registry.store import ModelRegistry

FLAVOURS = ("sklearn", "onnx", "python")

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
            positive: np.ndarray = self.probabilities[:, 1]
        else:
            positive = self.probabilities.max(axis=1)
        return positive

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions.tolist(),
            "probabilities": None if self.probabilities is None else self.probabilities.tolist(),
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
        }


class Scorer:
    """One registered model version ready to score: its served model and the model's schema.

    Build it with :meth:`from_registry` (or :func:`get_scorer`, which caches it per process).

    Parameters
    ----------
    name, version
        The registered model version served.
    flavour
        ``"sklearn"``, ``"onnx"`` or ``"python"``.
    model
        What predicts (:class:`~sluice.models.contract.ServedModel`); ``model.schema``
        validates requests.
    schema, preprocessor, predictor
        Instead of ``model``: the parts of a :class:`~sluice.models.contract.BuiltinRecipe`.
    """

    def __init__(
        self,
        *,
        name: str,
        version: int,
        flavour: str,
        model: ServedModel | None = None,
        schema: FeatureSchema | None = None,
        preprocessor: Preprocessor | None = None,
        predictor: SklearnPredictor | OnnxPredictor | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        if model is None:
            if schema is None or preprocessor is None or predictor is None:
                raise SluiceError("a scorer needs a model, or a schema, preprocessor and predictor")
            try:
                model = BuiltinRecipe(schema, preprocessor, predictor)
            except SluiceError as err:
                raise SluiceError(f"model {name!r} version {version}: {err}") from None
        self.name = name
        self.version = int(version)
        self.flavour = flavour
        self.model = model
        self.schema = model.schema

    @property
    def predictor(self) -> Any:
        """The built-in recipe's predictor (``None`` for other models): benchmarks time it alone."""
        return getattr(self.model, "predictor", None)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, *, flavour: str) -> Scorer:
        """From a registry :class:`LoadedModel` (artifacts already fetched and hash-verified)."""
        record = loaded.record
        return cls(
            name=record.name, version=record.version, flavour=flavour, model=served_model(loaded, flavour)
        )

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, name: str, version: int, *, flavour: str = "sklearn"
    ) -> Scorer:
        """Fetch (sha256-verified), load and wrap ``name`` version ``version``."""
        if flavour not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        return cls.from_loaded(registry.load(name, version=int(version), flavour=flavour), flavour=flavour)

    def columns(self, instances: Sequence[Mapping[str, Any]]) -> Mapping[str, np.ndarray]:
        """Validate ``instances`` against the schema: one array per feature.

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
            raise request_error("instances", "type", str(err)) from None
        if errors:
            raise feature_errors(errors)
        return cast(Mapping[str, np.ndarray], columns)

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        return self.model.predict(self.columns(instances))

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
    registry: ModelRegistry | None = None,
    manifest: str = "",
    approval: str = "",
) -> Scorer:
    """The process-wide :class:`Scorer` for a model version: loaded once, reused while warm.

    An empty ``version`` serves the registry's :data:`CHAMPION_ALIAS` version (resolved once
    per process): the Lambda version that ``cdk deploy`` creates is bound to no model version,
    so after a redeploy the endpoint serves the promoted model. ``registry`` defaults to
    :meth:`ModelRegistry.from_settings` on the environment. ``manifest`` and ``approval`` (the
    version's ``SLUICE_MODEL_ARTIFACTS`` and ``SLUICE_MODEL_APPROVAL``, bound at deploy) let the
    load skip the registry table; the approval signature must verify over the manifest.
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
                from sluice.registry.store import ModelRegistry
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
                bound = version not in (None, "")
                found = _load_scorer(
                    registry, name, number, flavour, manifest if bound else "", approval if bound else ""
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


def _load_scorer(
    registry: ModelRegistry, name: str, number: int, flavour: str, manifest: str, approval: str
) -> Scorer:
    """From the version's deploy-time manifest when it has one, else from the registry table."""
    if not manifest:
        return Scorer.from_registry(registry, name, number, flavour=flavour)
    loaded = registry.load_manifest(name, number, manifest, approval=approval, flavour=flavour)
    return Scorer.from_loaded(loaded, flavour=flavour)


def clear_cache() -> None:
    """Forget loaded models (tests)."""
    with _cache_lock:
        _cache.clear()
