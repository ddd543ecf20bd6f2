"""A version in memory: :class:`LoadedModel`, built from its verified artifact bytes.

A version with a descriptor (``model.json``, :class:`sluice.models.contract.Descriptor`) loads
the estimator from the model file it names for the ``sklearn`` flavour: ``model.skops`` with
skops, trusting only the descriptor's ``skops_trusted`` types, or ``model.joblib`` with joblib;
for the ``onnx`` flavour it keeps the bytes of its ``model.onnx`` (the graph registered as it
is, or a scikit-learn model's twin) and imports neither; for the ``python`` flavour it gives the
verified ``model/`` files to the deployed project's model class
(:func:`sluice.models.python_model.load_python_model`), never to a class the record names. A
version without one is
the built-in recipe: the preprocessing is rebuilt from JSON, the ONNX flavour keeps the graph's
bytes, and joblib (with scikit-learn) is imported only for the ``sklearn`` flavour. Only numpy
is needed for the built-in recipe's ONNX flavour.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice.errors import SluiceError
from sluice.registry.bundle import (
    DESCRIPTOR_ARTIFACT,
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    PROFILE_ARTIFACT,
    SCHEMA_ARTIFACT,
    SPEC_ARTIFACT,
)
from sluice.registry.records import VersionRecord

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.contract import Descriptor
    from sluice.models.features import Preprocessor
    from sluice.models.schema import FeatureSchema


@dataclass
class LoadedModel:
    """A version in memory, its artifacts verified against their recorded sha256.

    ``descriptor`` is ``None`` for the built-in recipe, which has a ``preprocessor`` (and a
    ``spec``); a described version has neither.
    """

    record: VersionRecord
    preprocessor: Preprocessor | None
    schema: FeatureSchema
    flavour: str = "sklearn"
    estimator: Any = None
    onnx_bytes: bytes | None = None
    profile: dict[str, Any] | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    descriptor: Descriptor | None = None


def build_model(record: VersionRecord, bodies: Mapping[str, bytes], flavour: str) -> LoadedModel:
    """The :class:`LoadedModel` of ``record`` from its artifacts' verified bytes (name -> bytes).

    ``flavour="sklearn"`` deserialises the estimator (joblib unpickles), so call this only with
    verified bytes.

    Raises
    ------
    SluiceError
        If ``model.json`` is malformed, names a model file that was not fetched, or the skops
        file holds a type outside its trusted list.
    """
    from sluice.models.schema import FeatureSchema

    schema = FeatureSchema.from_dict(json.loads(bodies[SCHEMA_ARTIFACT]))
    profile = json.loads(bodies[PROFILE_ARTIFACT]) if PROFILE_ARTIFACT in bodies else None
    if DESCRIPTOR_ARTIFACT in bodies:
        return _build_described(record, bodies, schema, profile, flavour)
    from sluice.models.features import Preprocessor

    preprocessor = Preprocessor.from_artifacts(
        {key: json.loads(bodies[path]) for key, path in PREPROCESSING_ARTIFACTS.items()}
    )
    loaded = LoadedModel(
        record=record,
        preprocessor=preprocessor,
        schema=schema,
        flavour=flavour,
        profile=profile,
        spec=json.loads(bodies[SPEC_ARTIFACT]),
    )
    if flavour == "sklearn":
        import joblib

        loaded.estimator = joblib.load(io.BytesIO(bodies[MODEL_ARTIFACT]))
    else:
        loaded.onnx_bytes = bodies[ONNX_ARTIFACT]
    return loaded


def _build_described(
    record: VersionRecord,
    bodies: Mapping[str, bytes],
    schema: FeatureSchema,
    profile: dict[str, Any] | None,
    flavour: str,
) -> LoadedModel:
    from sluice.models.contract import PYTHON, PYTHON_PREFIX, SKLEARN, Descriptor, load_estimator

    descriptor = Descriptor.from_json(bodies[DESCRIPTOR_ARTIFACT])
    if flavour == PYTHON or descriptor.flavour == PYTHON:
        if descriptor.flavour != flavour:
            raise SluiceError(
                f"model {record.name!r} version {record.version} is a {descriptor.flavour} model, "
                f"not served by the {flavour} flavour"
            )
        from sluice.models.python_model import load_python_model

        files = {a[len(PYTHON_PREFIX) :]: body for a, body in bodies.items() if a.startswith(PYTHON_PREFIX)}
        return LoadedModel(
            record=record, preprocessor=None, schema=schema, flavour=PYTHON, profile=profile,
            descriptor=descriptor, estimator=load_python_model(descriptor, record, files),
        )  # fmt: skip
    if flavour == "onnx":
        return LoadedModel(
            record=record,
            preprocessor=None,
            schema=schema,
            flavour=flavour,
            onnx_bytes=bodies.get(ONNX_ARTIFACT),
            profile=profile,
            descriptor=descriptor,
        )
    if descriptor.flavour != SKLEARN:
        raise SluiceError(
            f"model {record.name!r} version {record.version} is an {descriptor.flavour} model: "
            f"serve it with the {descriptor.flavour} flavour (the zip endpoint)"
        )
    if descriptor.model_file not in bodies:
        raise SluiceError(
            f"model {record.name!r} version {record.version}: {DESCRIPTOR_ARTIFACT} names "
            f"{descriptor.model_file}, which the version does not have"
        )
    return LoadedModel(
        record=record,
        preprocessor=None,
        schema=schema,
        flavour="sklearn",
        estimator=load_estimator(descriptor, bodies[descriptor.model_file]),
        profile=profile,
        descriptor=descriptor,
    )
