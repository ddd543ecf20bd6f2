"""Deploy-time manifests: which artifacts a scoring flavour needs, and a version's signed digests.

An endpoint's Lambda version carries the manifest of the model version it serves, every
artifact's sha256 (``SLUICE_MODEL_ARTIFACTS``, :func:`version_manifest`), and its approval
(``SLUICE_MODEL_APPROVAL``, :func:`approval_binding`: the approver and the approval signature),
both bound at deploy. Its cold start checks the approval signature over those digests, then
fetches and verifies the serving artifacts without reading the registry table
(:meth:`sluice.registry.store.ModelRegistry.load_manifest`).
"""

from __future__ import annotations

import json
import re

from sluice.errors import Conflict, SluiceError
from sluice.registry.bundle import (
    DESCRIPTOR_ARTIFACT,
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    SCHEMA_ARTIFACT,
    SPEC_ARTIFACT,
)
from sluice.registry.records import PYTHON_PREFIX, VersionRecord

FLAVOURS = ("sklearn", "onnx", "python")
# The model files a descriptor (model.json) may name; see sluice.models.contract.MODEL_FILES.
DESCRIBED_MODEL_FILES = ("model.skops", MODEL_ARTIFACT)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def serving_artifacts(record: VersionRecord, flavour: str) -> list[str]:
    """The artifacts serving ``flavour`` needs: model file, schema, spec, preprocessing.

    A version with a descriptor (``model.json``) needs the descriptor, the schema and its model
    file (``model.skops`` or ``model.joblib``, whichever it has) for the container (``sklearn``)
    flavour, its ``model.onnx`` for the ``onnx`` flavour, or every ``model/`` file for the
    ``python`` flavour (also served by the container, from the project's image).

    Raises
    ------
    SluiceError
        If ``flavour`` is not one of :data:`FLAVOURS`.
    Conflict
        If the version has no such flavour (no ``model.onnx`` for ``onnx``, no ``model/`` files
        for ``python``, or ``model/`` files for another flavour).
    """
    if flavour not in FLAVOURS:
        raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}; got {flavour!r}")
    if flavour == "python" or "python" in record.flavours:
        return _python_artifacts(record, flavour)
    if DESCRIPTOR_ARTIFACT in record.artifacts:
        return _described_artifacts(record, flavour)
    model_artifact = MODEL_ARTIFACT if flavour == "sklearn" else ONNX_ARTIFACT
    if model_artifact not in record.artifacts:
        raise Conflict(
            f"model {record.name!r} version {record.version} has no {flavour} flavour (no {model_artifact} artifact)"
        )
    return [model_artifact, SCHEMA_ARTIFACT, SPEC_ARTIFACT, *PREPROCESSING_ARTIFACTS.values()]


def _python_artifacts(record: VersionRecord, flavour: str) -> list[str]:
    if "python" not in record.flavours or flavour != "python":
        raise Conflict(
            f"model {record.name!r} version {record.version} has no {flavour} flavour "
            f"(it has: {', '.join(record.flavours) or 'none'})"
        )
    files = sorted(a for a in record.artifacts if a.startswith(PYTHON_PREFIX))
    return [DESCRIPTOR_ARTIFACT, SCHEMA_ARTIFACT, *files]


def _described_artifacts(record: VersionRecord, flavour: str) -> list[str]:
    if flavour == "onnx":  # an ONNX graph registered as it is, or a scikit-learn model's twin
        if ONNX_ARTIFACT not in record.artifacts:
            raise Conflict(
                f"model {record.name!r} version {record.version} has no onnx flavour "
                f"(no {ONNX_ARTIFACT}: serve it in the container image, flavour sklearn)"
            )
        return [DESCRIPTOR_ARTIFACT, SCHEMA_ARTIFACT, ONNX_ARTIFACT]
    files = [a for a in DESCRIBED_MODEL_FILES if a in record.artifacts]
    if not files:
        raise Conflict(
            f"model {record.name!r} version {record.version} has no model file "
            f"({' or '.join(DESCRIBED_MODEL_FILES)}) beside its {DESCRIPTOR_ARTIFACT}"
        )
    return [DESCRIPTOR_ARTIFACT, SCHEMA_ARTIFACT, *files]


def serving_manifest(record: VersionRecord, flavour: str) -> str:
    """Compact JSON ``{artifact: sha256}`` of what serving ``flavour`` needs (see :func:`parse_manifest`)."""
    wanted = serving_artifacts(record, flavour)
    return json.dumps({a: record.artifacts[a]["sha256"] for a in wanted}, separators=(",", ":"))


def version_manifest(record: VersionRecord) -> str:
    """Compact JSON ``{artifact: sha256}`` of every artifact: what the approval signature covers."""
    return json.dumps(
        {a: info["sha256"] for a, info in sorted(record.artifacts.items())}, separators=(",", ":")
    )


def approval_binding(record: VersionRecord) -> str:
    """Compact JSON ``{"approved_by", "signature"}`` of an approved record (``SLUICE_MODEL_APPROVAL``)."""
    return json.dumps(
        {"approved_by": record.decided_by, "signature": record.approval_signature}, separators=(",", ":")
    )


def parse_approval(approval: str) -> tuple[str, str]:
    """``(approved_by, signature)`` of an :func:`approval_binding`; empty strings if ``approval`` is.

    Raises
    ------
    SluiceError
        If ``approval`` is neither empty nor the JSON object of two strings.
    """
    if not approval:
        return "", ""
    try:
        value = json.loads(approval)
        found = (value["approved_by"], value["signature"])
        if not all(isinstance(v, str) for v in found):
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise SluiceError(
            'SLUICE_MODEL_APPROVAL must be a JSON object {"approved_by": ..., "signature": ...}'
        ) from None
    return found


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
