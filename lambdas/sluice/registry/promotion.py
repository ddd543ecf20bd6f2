"""Promotion of an Approved version from one account's registry (dev) into another's (prod).

The caller acts as the dev deployer: it reads the dev record and its artifacts (each verified
against its recorded sha256), then assumes the prod promotion role, the only principal the prod
stage lets write its registry from outside, and registers the same bytes there. The prod record
keeps the dev lineage and names the dev record it came from; both audit trails get a
``promoted`` event. Re-running a promotion returns the first prod version (idempotency key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice import aws
from sluice.errors import IntegrityError
from sluice.names import promotion_role_name, registry_table_name, role_arn, stage_bucket_name
from sluice.registry.bundle import ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.records import APPROVED, VersionRecord
from sluice.registry.store import ModelRegistry


@dataclass(frozen=True)
class StageRegistry:
    """Where a stage's registry lives: account, region and the fixed physical names."""

    stage: str
    account: str
    region: str

    @property
    def table_name(self) -> str:
        return registry_table_name(self.stage)

    @property
    def bucket_name(self) -> str:
        return stage_bucket_name("artifacts", stage=self.stage, account=self.account, region=self.region)

    @property
    def promotion_role_arn(self) -> str:
        return role_arn(self.account, promotion_role_name(self.stage))

    def registry(self) -> ModelRegistry:
        return ModelRegistry(table_name=self.table_name, bucket_name=self.bucket_name)


@dataclass(frozen=True)
class Promotion:
    model: str
    source_version: int
    target_version: int
    source: StageRegistry
    target: StageRegistry
    artifacts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "from": {
                "stage": self.source.stage,
                "account": self.source.account,
                "version": self.source_version,
            },
            "to": {
                "stage": self.target.stage,
                "account": self.target.account,
                "version": self.target_version,
            },
            "artifacts": self.artifacts,
        }


def promote(
    model: str,
    version: int,
    *,
    source: StageRegistry,
    target: StageRegistry,
    actor: str,
    progress: Callable[[str], object] | None = None,
) -> Promotion:
    """Copy ``model`` ``version`` from ``source`` into ``target`` and record it in both trails.

    Raises
    ------
    Conflict
        The version is not Approved (only Approved versions are promoted).
    IntegrityError
        An artifact's bytes do not match their recorded hash, at the source or after the copy.
    """
    dev = source.registry()
    record = dev.require_deployable(model, version)
    artifacts: dict[str, bytes] = {}
    for name in sorted(record.artifacts):
        artifacts[name] = dev.fetch(model, record.version, name)  # verified against the dev hash
        if progress:
            progress(name)
    origin = _origin(source, record)
    bundle = ModelBundle(
        artifacts=artifacts,
        metrics=record.metrics,
        hyperparameters=record.hyperparameters,
        estimator=record.estimator,
        notes={**record.notes, "promoted_from": origin},
    )
    with aws.assumed_role(
        target.promotion_role_arn, session_name=f"sluice-promote-{model}"[:64], region=target.region
    ):
        promoted = _register_copy(
            target.registry(), bundle, record, source=source, actor=actor, origin=origin
        )
    dev.record_event(
        model,
        "promoted",
        actor=actor,
        version=record.version,
        detail={"to": {"stage": target.stage, "account": target.account, "version": promoted.version}},
    )
    return Promotion(model, record.version, promoted.version, source, target, len(artifacts))


def _origin(source: StageRegistry, record: VersionRecord) -> dict[str, Any]:
    """Where a promoted version came from, kept in its notes and its ``promoted`` event."""
    return {
        "stage": source.stage,
        "account": source.account,
        "region": source.region,
        "table": source.table_name,
        "version": record.version,
        "approved_by": record.decided_by,
        "approved_at": record.decided_at,
    }


def _register_copy(
    prod: ModelRegistry,
    bundle: ModelBundle,
    record: VersionRecord,
    *,
    source: StageRegistry,
    actor: str,
    origin: dict[str, Any],
) -> VersionRecord:
    """Register ``bundle`` in ``prod``, verify the copy as stored there, approve it, record the event."""
    model = record.name
    lineage = Lineage.from_dict({**record.lineage, "parent_version": None})
    promoted = prod.register(
        model,
        bundle,
        lineage=lineage,
        idempotency_key=f"promote-{source.account}-{source.stage}-{record.version}",
    )
    for name in promoted.artifacts:
        # Verify the copy as stored in the target account, not just what was sent.
        copied = prod.fetch(model, promoted.version, name)
        if hashlib.sha256(copied).hexdigest() != record.artifacts[name]["sha256"]:
            raise IntegrityError(
                f"model {model!r} version {promoted.version} artifact {name!r} differs from the "
                f"{source.stage} original after the copy"
            )
    if promoted.status != APPROVED:
        prod.approve(
            model, promoted.version, actor=actor, reason=f"promoted from {source.stage} v{record.version}"
        )
    prod.record_event(model, "promoted", actor=actor, version=promoted.version, detail={"from": origin})
    return promoted
