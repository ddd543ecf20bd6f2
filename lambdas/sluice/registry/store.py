"""The model registry: :class:`ModelRegistry`, one object for every registry operation.

Artifacts live in S3 (:mod:`~sluice.registry.integrity`); versions, aliases and the audit trail
in one DynamoDB table (:mod:`~sluice.registry.table`). Each operation is implemented by the
module of its job, and this class ties them to one table and one bucket:
:mod:`~sluice.registry.versions` (registration), :mod:`~sluice.registry.approval`,
:mod:`~sluice.registry.aliases`, :mod:`~sluice.registry.audit` and
:mod:`~sluice.registry.loading`.

This module imports with numpy and boto3 only (the zip endpoint flavour has no pandas,
scikit-learn or scipy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sluice import aws as sluice_aws
from sluice.errors import NotFound, SluiceError
from sluice.names import approval_key_alias, audit_bucket_name, manifest_key_alias
from sluice.registry.aliases import list_aliases, move_alias, resolve_alias
from sluice.registry.approval import decide, ensure_deployable
from sluice.registry.audit import append_event, read_history
from sluice.registry.bundle import PROFILE_ARTIFACT, ModelBundle
from sluice.registry.integrity import ArtifactStore
from sluice.registry.lineage import Lineage
from sluice.registry.loading import LoadedModel, build_model
from sluice.registry.manifest import parse_manifest, serving_artifacts
from sluice.registry.records import APPROVED, REJECTED, VersionRecord
from sluice.registry.table import INDEX_PK, RegistryTable, error_code, s
from sluice.registry.validation import check_actor, check_alias, check_idempotency_key, check_model_name
from sluice.registry.versions import idempotent_version, take_version, version_body

if TYPE_CHECKING:  # pragma: no cover
    from sluice.settings import Settings


class ModelRegistry:
    """Register, approve, alias, audit and load model versions.

    Parameters
    ----------
    table_name, bucket_name
        The registry table and artifact bucket (``SLUICE_REGISTRY_TABLE``/``_BUCKET``).
    audit_bucket
        The audit store, an S3 bucket with Object Lock in compliance mode
        (``SLUICE_AUDIT_BUCKET``). Default: :func:`sluice.names.audit_bucket_name` of the bucket.
    manifest_key, approval_key
        The KMS SIGN_VERIFY keys (id, ARN or alias) that sign manifests at registration and
        approvals (``SLUICE_MANIFEST_KEY``/``SLUICE_APPROVAL_KEY``). Default: the aliases
        :func:`sluice.names.manifest_key_alias` and :func:`~sluice.names.approval_key_alias`.
    """

    def __init__(
        self,
        *,
        table_name: str,
        bucket_name: str,
        audit_bucket: str | None = None,
        manifest_key: str | None = None,
        approval_key: str | None = None,
    ) -> None:
        if not table_name or not bucket_name:
            raise SluiceError("the registry needs a table name and a bucket name")
        self.table_name = table_name
        self.bucket_name = bucket_name
        self.audit_bucket = audit_bucket or audit_bucket_name(bucket_name)
        self.manifest_key = manifest_key or manifest_key_alias(table_name)
        self.approval_key = approval_key or approval_key_alias(table_name)
        self._table = RegistryTable(table_name, audit_bucket=self.audit_bucket)
        self._artifacts = ArtifactStore(bucket_name)
        self._caller: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        settings.require("registry_table", "registry_bucket")
        return cls(
            table_name=settings.registry_table,
            bucket_name=settings.registry_bucket,
            audit_bucket=settings.audit_bucket or None,
            manifest_key=settings.manifest_key or None,
            approval_key=settings.approval_key or None,
        )

    def caller(self) -> str:
        """ARN of the principal this registry acts as (STS ``GetCallerIdentity``), cached."""
        if self._caller is None:
            try:
                self._caller = str(sluice_aws.client("sts").get_caller_identity()["Arn"])
            except Exception:  # no credentials or no STS endpoint: lineage says so
                self._caller = "unknown"
        return self._caller

    # -- registering -------------------------------------------------------------------------

    def register(
        self,
        name: str,
        bundle: ModelBundle,
        *,
        lineage: Lineage,
        idempotency_key: str | None = None,
    ) -> VersionRecord:
        """Store the bundle's artifacts and record the next version of ``name``.

        With ``idempotency_key``, a retry with the same key returns the version the first
        call created (whatever the bundle) and never creates a second one.

        Raises
        ------
        SluiceError
            If the model name or idempotency key is malformed, or the parent version does not exist.
        """
        check_model_name(name)
        check_idempotency_key(idempotency_key)
        if idempotency_key is not None:
            existing = idempotent_version(self._table, name, idempotency_key)
            if existing is not None:
                return self.get(name, version=existing)
        if lineage.parent_version is not None:
            self.get(name, version=lineage.parent_version)  # NotFound names the missing parent
        caller = self.caller()
        stored = self._artifacts.put_all(name, bundle.artifacts)
        body = version_body(bundle, lineage, stored, caller=caller)
        registered = {
            "parent_version": lineage.parent_version,
            "idempotency_key": idempotency_key,
            "data_sha256": lineage.data_sha256,
        }
        version = take_version(
            self._table, name, body, caller=caller, registered=registered, idempotency_key=idempotency_key
        )
        return self.get(name, version=version)

    # -- reading -----------------------------------------------------------------------------

    def get(self, name: str, *, version: int | None = None, alias: str | None = None) -> VersionRecord:
        """A version by number, by alias, or the latest one.

        Raises
        ------
        NotFound
            Naming the model, the version or the alias that does not exist.
        """
        check_model_name(name)
        if version is not None and alias is not None:
            raise SluiceError("give a version or an alias, not both")
        if alias is not None:
            version = self.resolve_alias(name, alias)
        elif version is None:
            version = self._table.latest(name)
            if version == 0:
                raise NotFound(f"model {name!r} not found")
        return self._table.record(name, version)

    def resolve_alias(self, name: str, alias: str) -> int:
        """The version ``alias`` points at."""
        return resolve_alias(self._table, name, alias)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name``."""
        return list_aliases(self._table, name)

    def list_versions(self, name: str) -> list[VersionRecord]:
        self._table.require_model(name)
        return [VersionRecord.from_item(name, item) for item in self._table.query(name, "V#")]

    def list_models(self) -> list[dict[str, Any]]:
        """Every model: name, latest version, aliases and timestamps, sorted by name."""
        models: list[dict[str, Any]] = []
        paginator = self._table.ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :index",
            ExpressionAttributeValues={":index": s(INDEX_PK)},
            ConsistentRead=True,
        ):
            models.extend(_index_entry(item) for item in page.get("Items", []))
        return sorted(models, key=lambda m: str(m["name"]))

    def history(self, name: str) -> list[dict[str, Any]]:
        """The model's audit events, oldest first."""
        return read_history(self._table, name)

    # -- artifacts ---------------------------------------------------------------------------

    def fetch(self, name: str, version: int, artifact: str) -> bytes:
        """One artifact's bytes, verified against the recorded sha256.

        Raises
        ------
        NotFound
            If the version has no such artifact.
        IntegrityError
            If the stored bytes are missing or do not match the recorded sha256.
        """
        return self._artifacts.fetch(self.get(name, version=version), artifact)

    def load(
        self,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        flavour: str = "sklearn",
    ) -> LoadedModel:
        """Resolve a version (by number or alias), fetch and verify its artifacts, build the model.

        ``flavour="sklearn"`` unpickles the estimator (only after its sha256 matched);
        ``flavour="onnx"`` returns the ONNX graph's bytes and needs neither joblib nor scikit-learn.
        """
        record = self.get(name, version=version, alias=alias)
        wanted = serving_artifacts(record, flavour)
        if PROFILE_ARTIFACT in record.artifacts:
            wanted.append(PROFILE_ARTIFACT)
        return build_model(record, self._artifacts.fetch_many(record, wanted), flavour)

    def load_manifest(
        self, name: str, version: int, manifest: str, *, flavour: str = "sklearn"
    ) -> LoadedModel:
        """Like :meth:`load` for serving, from a serving manifest instead of the table.

        An endpoint's Lambda version carries the manifest of the model version it serves (bound
        at deploy, see :mod:`sluice.registry.manifest`), so its cold start fetches and verifies
        the artifacts without a DynamoDB client or round trip. The returned record holds the
        name, version and artifacts only.

        Raises
        ------
        SluiceError
            If ``manifest`` is not the JSON object of artifact names to sha256 digests.
        """
        record = VersionRecord.from_manifest(name, int(version), parse_manifest(manifest))
        wanted = serving_artifacts(record, flavour)
        return build_model(record, self._artifacts.fetch_many(record, wanted), flavour)

    # -- approval, aliases, events -----------------------------------------------------------

    def approve(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending version to Approved."""
        number = decide(self._table, name, version, APPROVED, actor=actor, reason=reason)
        return self.get(name, version=number)

    def reject(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending or Approved version to Rejected (final)."""
        number = decide(self._table, name, version, REJECTED, actor=actor, reason=reason)
        return self.get(name, version=number)

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> None:
        """Point ``alias`` at ``version`` (creating or moving it) and record ``alias_moved``.

        Raises
        ------
        Conflict
            If the version is Rejected, or the alias is ``champion`` and the version is not Approved.
        """
        check_alias(alias)
        check_actor(actor)
        move_alias(self._table, self.get(name, version=version), alias, actor=actor)

    def require_deployable(self, name: str, version: int) -> VersionRecord:
        """The version's record if it is Approved.

        Raises
        ------
        Conflict
            If the version is Pending or Rejected.
        """
        return ensure_deployable(self.get(name, version=version))

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        actor: str,
        version: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an audit event (e.g. ``deployed``, ``traffic``, ``promoted``, ``rolled_back``)."""
        append_event(self._table, name, kind, actor=actor, version=version, detail=detail)


def create_storage(table_name: str, bucket_name: str, *, region: str | None = None) -> ModelRegistry:
    """Create a registry's table and versioned bucket as the stateful stack does; return the registry.

    For the embedded local AWS (the demo's prod registry), tests and benchmarks: in AWS the
    stateful stack (``infra/constructs/registry.py``) creates them. Existing ones are kept.
    """
    ddb = sluice_aws.client("dynamodb", region=region)
    s3 = sluice_aws.client("s3", region=region)
    try:
        ddb.create_table(
            TableName=table_name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as err:
        if error_code(err) != "ResourceInUseException":
            raise
    where = s3.meta.region_name
    location = {} if where == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": where}}
    try:
        s3.create_bucket(Bucket=bucket_name, **location)
    except ClientError as err:
        if error_code(err) != "BucketAlreadyOwnedByYou":
            raise
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    return ModelRegistry(table_name=table_name, bucket_name=bucket_name)


def _index_entry(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": item["model_name"]["S"],
        "latest_version": int(item["latest"]["N"]),
        "aliases": {k: int(v["N"]) for k, v in item.get("aliases", {}).get("M", {}).items()},
        "created_at": item.get("created_at", {}).get("S", ""),
        "updated_at": item.get("updated_at", {}).get("S", ""),
    }
