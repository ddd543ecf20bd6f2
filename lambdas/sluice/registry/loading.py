"""A version in memory: :class:`LoadedModel`, built from its verified artifact bytes.

Only numpy is needed here: the preprocessing is rebuilt from JSON, the ONNX flavour keeps the
graph's bytes, and joblib (with scikit-learn) is imported only for the ``sklearn`` flavour.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice.registry.bundle import (
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    PROFILE_ARTIFACT,
    SCHEMA_ARTIFACT,
    SPEC_ARTIFACT,
)
from sluice.registry.records import VersionRecord

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.features import Preprocessor
    from sluice.models.schema import FeatureSchema


@dataclass
class LoadedModel:
    """A version in memory, its artifacts verified against their recorded sha256."""

    record: VersionRecord
    preprocessor: Preprocessor
    schema: FeatureSchema
    flavour: str = "sklearn"
    estimator: Any = None
    onnx_bytes: bytes | None = None
    profile: dict[str, Any] | None = None
    spec: dict[str, Any] = field(default_factory=dict)


def build_model(record: VersionRecord, bodies: Mapping[str, bytes], flavour: str) -> LoadedModel:
    """The :class:`LoadedModel` of ``record`` from its artifacts' verified bytes (name -> bytes).

    ``flavour="sklearn"`` unpickles the estimator, so call this only with verified bytes.
    """
    from sluice.models.features import Preprocessor
    from sluice.models.schema import FeatureSchema

    preprocessor = Preprocessor.from_artifacts(
        {key: json.loads(bodies[path]) for key, path in PREPROCESSING_ARTIFACTS.items()}
    )
    loaded = LoadedModel(
        record=record,
        preprocessor=preprocessor,
        schema=FeatureSchema.from_dict(json.loads(bodies[SCHEMA_ARTIFACT])),
        flavour=flavour,
        profile=json.loads(bodies[PROFILE_ARTIFACT]) if PROFILE_ARTIFACT in bodies else None,
        spec=json.loads(bodies[SPEC_ARTIFACT]),
    )
    if flavour == "sklearn":
        import joblib

        loaded.estimator = joblib.load(io.BytesIO(bodies[MODEL_ARTIFACT]))
    else:
        loaded.onnx_bytes = bodies[ONNX_ARTIFACT]
    return loaded
