"""One registered version as stored: :class:`VersionRecord`, and where its artifacts live in S3.

Artifacts are content-addressed: ``artifacts/<model>/<sha256>/<artifact>`` in the registry
bucket, so registering a version never overwrites bytes another version uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sluice.names import registry_artifact_prefix
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, ONNX_ARTIFACT

#: A version's approval status (see :mod:`sluice.registry.approval`).
PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
# The scikit-learn model files a version may hold (the built-in recipe's, or a fitted model's).
SKLEARN_FILES = ("model.joblib", "model.skops")
#: Where a python model's files live (see sluice.models.contract.PYTHON_PREFIX).
PYTHON_PREFIX = "model/"


def artifact_key(model: str, digest: str, artifact: str) -> str:
    """Where an artifact lives in the registry bucket: content-addressed by its sha256."""
    return f"{registry_artifact_prefix(model)}{digest}/{artifact}"


@dataclass(frozen=True)
class VersionRecord:
    """One registered version as stored in the table."""

    name: str
    version: int
    status: str
    artifacts: dict[str, dict[str, Any]]
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    lineage: dict[str, Any]
    created_at: str
    created_by: str
    parent_version: int | None = None
    estimator: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    decided_at: str = ""
    decided_by: str = ""
    decision_reason: str = ""
    # Signatures (base64) and the ARNs of the KMS keys that made them (see sluice.registry.signing).
    manifest_signature: str = ""
    manifest_key: str = ""
    approval_signature: str = ""
    approval_key: str = ""

    @property
    def flavours(self) -> tuple[str, ...]:
        """Scoring flavours this version can be served with: ``sklearn`` with a scikit-learn model
        file, ``onnx`` with an ONNX graph (a version registered as an ONNX graph has only that),
        ``python`` (only that) for the files of a project's own model class."""
        if DESCRIPTOR_ARTIFACT in self.artifacts and any(a.startswith(PYTHON_PREFIX) for a in self.artifacts):
            return ("python",)
        sklearn = any(a in self.artifacts for a in SKLEARN_FILES)
        return (*(("sklearn",) if sklearn else ()), *(("onnx",) if ONNX_ARTIFACT in self.artifacts else ()))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flavours"] = list(self.flavours)
        return out

    @classmethod
    def from_manifest(
        cls,
        name: str,
        version: int,
        digests: Mapping[str, str],
        *,
        approved_by: str = "",
        approval_signature: str = "",
    ) -> VersionRecord:
        """The part of a record a deploy-time manifest carries: name, version, artifacts, approval.

        See :func:`sluice.registry.manifest.version_manifest`.
        """
        artifacts = {
            artifact: {"sha256": digest, "key": artifact_key(name, digest, artifact)}
            for artifact, digest in digests.items()
        }
        return cls(
            name=name, version=version, status=APPROVED if approval_signature else "",
            artifacts=artifacts, metrics={}, hyperparameters={}, lineage={}, created_at="",
            created_by="", decided_by=approved_by, approval_signature=approval_signature,
        )  # fmt: skip

    @classmethod
    def from_item(cls, name: str, item: Mapping[str, Any]) -> VersionRecord:
        """The record of a version item (``sk = V#...``) of the registry table."""
        body = json.loads(item["body"]["S"])
        return cls(
            name=name,
            version=int(item["version"]["N"]),
            # Registration writes no status (only the approval path may): absent is pending.
            status=item.get("status", {}).get("S", PENDING),
            artifacts=body["artifacts"],
            metrics=body.get("metrics", {}),
            hyperparameters=body.get("hyperparameters", {}),
            lineage=body.get("lineage", {}),
            created_at=item["created_at"]["S"],
            created_by=body.get("created_by", ""),
            parent_version=body.get("parent_version"),
            estimator=body.get("estimator", ""),
            notes=body.get("notes", {}),
            decided_at=item.get("decided_at", {}).get("S", ""),
            decided_by=item.get("decided_by", {}).get("S", ""),
            decision_reason=item.get("decision_reason", {}).get("S", ""),
            manifest_signature=body.get("manifest_signature", ""),
            manifest_key=body.get("manifest_key", ""),
            approval_signature=item.get("approval_signature", {}).get("S", ""),
            approval_key=item.get("approval_key", {}).get("S", ""),
        )
