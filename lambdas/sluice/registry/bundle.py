"""What a version is made of: the artifact names and :class:`ModelBundle`, the bytes to register.

A bundle is built by :func:`sluice.models.packaging.bundle_from_training` (the built-in recipe),
from a fitted model's file (its descriptor ``model.json``, see :mod:`sluice.models.contract`)
or from the bytes of an existing version (:mod:`sluice.registry.promotion`).

A bundle with :data:`DESCRIPTOR_ARTIFACT` needs it, the schema and the model file it names
(:func:`described_artifacts`; a python model names the prefix ``model/`` and needs at least one
file under it); one without is the built-in recipe and needs :data:`REQUIRED_ARTIFACTS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sluice.errors import SluiceError

MODEL_ARTIFACT = "model.joblib"
ONNX_ARTIFACT = "model.onnx"
SCHEMA_ARTIFACT = "schema.json"
PROFILE_ARTIFACT = "profile.json"
SPEC_ARTIFACT = "spec.json"
DESCRIPTOR_ARTIFACT = "model.json"
CALIBRATION_ARTIFACT = "calibration.json"  # binary classifiers: sluice.monitoring.estimation.Calibrator
PREPROCESSING_ARTIFACTS = {
    "imputation": "preprocessing/imputation.json",
    "normalisation": "preprocessing/normalisation.json",
    "encoders": "preprocessing/encoders.json",
}
REQUIRED_ARTIFACTS = (MODEL_ARTIFACT, SCHEMA_ARTIFACT, SPEC_ARTIFACT, *PREPROCESSING_ARTIFACTS.values())


@dataclass
class ModelBundle:
    """The artifacts of one version (name -> bytes) and the numbers recorded with them."""

    artifacts: dict[str, bytes]
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    estimator: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        required = (
            described_artifacts(self.artifacts[DESCRIPTOR_ARTIFACT])
            if DESCRIPTOR_ARTIFACT in self.artifacts
            else REQUIRED_ARTIFACTS
        )
        missing = [a for a in required if not _present(a, self.artifacts)]
        if missing:
            raise SluiceError(f"model bundle lacks artifact(s): {', '.join(missing)}")
        for name, body in self.artifacts.items():
            if not isinstance(body, bytes | bytearray):
                raise SluiceError(f"artifact {name!r} must be bytes, got {type(body).__name__}")
            if not safe_artifact_name(name):
                raise SluiceError(f"artifact name {name!r} is not a relative path of [A-Za-z0-9._-] parts")


def _present(required: str, artifacts: dict[str, bytes]) -> bool:
    if required.endswith("/"):  # a prefix: at least one artifact under it
        return any(name.startswith(required) for name in artifacts)
    return required in artifacts


def safe_artifact_name(name: str) -> bool:
    """Whether ``name`` is a relative path of ``[A-Za-z0-9._-]`` parts (no ``..``, no leading ``/``)."""
    parts = name.split("/")
    return all(p and p not in (".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts)


def described_artifacts(descriptor: bytes) -> tuple[str, ...]:
    """The artifacts a version with this ``model.json`` needs: itself, the schema, its model file
    (for a python model the prefix ``model/``, under which it needs at least one file).

    Raises
    ------
    SluiceError
        If ``descriptor`` is not a valid ``model.json`` (:class:`sluice.models.contract.Descriptor`).
    """
    from sluice.models.contract import Descriptor

    return (DESCRIPTOR_ARTIFACT, SCHEMA_ARTIFACT, Descriptor.from_json(descriptor).model_file)
