"""Promotion as a pull: the target (prod) stage copies an Approved source (dev) version into its own registry.

Prod decides for prod. Prod's promotion function (``sluice.handlers.promote``, under the prod
role ``sluice-prod-promotion``) reads the dev registry across accounts, which dev's resource
policies allow to that one role and nothing more; verifies the dev approval's KMS signature
and every artifact's sha256; and registers the same bytes in prod, signed with prod's own
manifest key, as ``PendingManualApproval``. A prod approver must still approve the copy, and
no dev principal can write anything in prod. Only the prod audit trail records the pull
(``promoted``), with the dev record it came from; re-running it returns the first prod version
(idempotency key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.errors import Conflict, IntegrityError
from sluice.names import registry_table_name, stage_bucket_name
from sluice.registry.bundle import ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.records import APPROVED, VersionRecord
from sluice.registry.signing import verify_approval
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
    def table_arn(self) -> str:
        """The table by ARN: how DynamoDB names a table of another account."""
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{self.table_name}"

    @property
    def bucket_name(self) -> str:
        return stage_bucket_name("artifacts", stage=self.stage, account=self.account, region=self.region)

    def registry(self) -> ModelRegistry:
        """The stage's registry, from inside its own account."""
        return ModelRegistry(table_name=self.table_name, bucket_name=self.bucket_name)

    def reader(self) -> ModelRegistry:
        """The stage's registry as read from another account (table by ARN)."""
        return ModelRegistry(table_name=self.table_arn, bucket_name=self.bucket_name)


@dataclass(frozen=True)
class Promotion:
    model: str
    source_version: int
    target_version: int
    source: StageRegistry
    target_status: str
    artifacts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "from": {
                "stage": self.source.stage,
                "account": self.source.account,
                "version": self.source_version,
            },
            "to": {"version": self.target_version, "status": self.target_status},
            "artifacts": self.artifacts,
        }


def pull(
    model: str,
    version: int,
    *,
    source: StageRegistry,
    target: ModelRegistry,
    actor: str,
    progress: Callable[[str], object] | None = None,
) -> Promotion:
    """Copy Approved ``model`` ``version`` of ``source`` into ``target``, pending its own approval.

    Raises
    ------
    Conflict
        The source version is not Approved.
    IntegrityError
        The source approval's signature does not verify with a key of the source account, or an
        artifact's bytes do not match their recorded sha256, at the source or after the copy.
    """
    dev = source.reader()
    record = dev.get(model, version=version)
    _verify_source_approval(record, source)
    artifacts: dict[str, bytes] = {}
    for name in sorted(record.artifacts):
        artifacts[name] = dev.fetch_signed(record, name)  # against the digest the approval signed
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
    copied = _register_copy(target, bundle, record, source=source, actor=actor, origin=origin)
    return Promotion(model, record.version, copied.version, source, copied.status, len(artifacts))


def _verify_source_approval(record: VersionRecord, source: StageRegistry) -> None:
    """The source record is Approved, with an approval signed by a key of the source account.

    Which key of that account may have signed is enforced by IAM: prod's promotion role may
    call ``kms:Verify`` only on the key with the source approval alias (``kms:ResourceAliases``).
    """
    if record.status != APPROVED:
        raise Conflict(
            f"model {record.name!r} {source.stage} version {record.version} is {record.status}; only "
            "Approved versions can be deployed or promoted"
        )
    key = record.approval_key or ""
    parts = key.split(":")
    if len(parts) < 6 or parts[2] != "kms" or parts[4] != source.account:
        raise IntegrityError(
            f"model {record.name!r} {source.stage} version {record.version}: its approval was not signed "
            f"by a key of account {source.account} (key {key or 'missing'})"
        )
    verify_approval(record, key_id=key)


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
    """Register ``bundle`` in ``prod`` (pending), verify the copy as stored there, record the event."""
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
        copied = prod.fetch_signed(promoted, name)
        if hashlib.sha256(copied).hexdigest() != record.artifacts[name]["sha256"]:
            raise IntegrityError(
                f"model {model!r} version {promoted.version} artifact {name!r} differs from the "
                f"{source.stage} original after the copy"
            )
    prod.record_event(model, "promoted", actor=actor, version=promoted.version, detail={"from": origin})
    return promoted
