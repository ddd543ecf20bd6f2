"""Serving manifests: which artifacts a scoring flavour needs, and their sha256 digests.

An endpoint's Lambda version carries the manifest of the model version it serves (bound at
deploy, ``SLUICE_MODEL_ARTIFACTS``), so its cold start fetches and verifies the artifacts
without reading the registry table (:meth:`sluice.registry.store.ModelRegistry.load_manifest`).
"""

from __future__ import annotations

import json
import re

from sluice.errors import Conflict, SluiceError
from sluice.registry.bundle import (
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    SCHEMA_ARTIFACT,
    SPEC_ARTIFACT,
)
from sluice.registry.records import VersionRecord

FLAVOURS = ("sklearn", "onnx")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def serving_artifacts(record: VersionRecord, flavour: str) -> list[str]:
    """The artifacts serving ``flavour`` needs: model file, schema, spec, preprocessing.

    Raises
    ------
    SluiceError
        If ``flavour`` is not one of :data:`FLAVOURS`.
    Conflict
        If the version has no such flavour (no ``model.onnx`` for ``onnx``).
    """
    if flavour not in FLAVOURS:
        raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}; got {flavour!r}")
    model_artifact = MODEL_ARTIFACT if flavour == "sklearn" else ONNX_ARTIFACT
    if model_artifact not in record.artifacts:
        raise Conflict(
            f"model {record.name!r} version {record.version} has no {flavour} flavour (no {model_artifact} artifact)"
        )
    return [model_artifact, SCHEMA_ARTIFACT, SPEC_ARTIFACT, *PREPROCESSING_ARTIFACTS.values()]


def serving_manifest(record: VersionRecord, flavour: str) -> str:
    """Compact JSON ``{artifact: sha256}`` of what serving ``flavour`` needs (see :func:`parse_manifest`)."""
    wanted = serving_artifacts(record, flavour)
    return json.dumps({a: record.artifacts[a]["sha256"] for a in wanted}, separators=(",", ":"))


def parse_manifest(manifest: str) -> dict[str, str]:
    """The ``{artifact: sha256}`` object of a :func:`serving_manifest`.

    Raises
    ------
    SluiceError
        If ``manifest`` is not the JSON object of artifact names to sha256 digests.
    """
    try:
        digests = json.loads(manifest)
        if not isinstance(digests, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in digests.items()
        ):
            raise ValueError
    except ValueError:
        raise SluiceError(
            "SLUICE_MODEL_ARTIFACTS must be a JSON object of artifact names to sha256 digests"
        ) from None
    return digests
