"""What a version is made of: the artifact names and :class:`ModelBundle`, the bytes to register.

A bundle is built by :func:`sluice.models.packaging.bundle_from_training` (the built-in recipe)
or from the bytes of an existing version (:mod:`sluice.registry.promotion`).
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
        missing = [a for a in REQUIRED_ARTIFACTS if a not in self.artifacts]
        if missing:
            raise SluiceError(f"model bundle lacks artifact(s): {', '.join(missing)}")
        for name, body in self.artifacts.items():
            if not isinstance(body, bytes | bytearray):
                raise SluiceError(f"artifact {name!r} must be bytes, got {type(body).__name__}")
            if not safe_artifact_name(name):
                raise SluiceError(f"artifact name {name!r} is not a relative path of [A-Za-z0-9._-] parts")


def safe_artifact_name(name: str) -> bool:
    """Whether ``name`` is a relative path of ``[A-Za-z0-9._-]`` parts (no ``..``, no leading ``/``)."""
    parts = name.split("/")
    return all(p and p not in (".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts)
