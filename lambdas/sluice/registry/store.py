"""The model registry: :class:`ModelRegistry`, one object for every registry operation.

Artifacts live in S3 (:mod:`~sluice.registry.integrity`); versions, aliases and the audit trail
in one DynamoDB table (:mod:`~sluice.registry.table`). Each operation is implemented by the
module of its job, and this class ties them to one table and one bucket:
:mod:`~sluice.registry.versions` (registration), :mod:`~sluice.registry.approval`,
:mod:`~sluice.registry.aliases`, :mod:`~sluice.registry.audit` and
:mod:`~sluice.registry.loading`. Manifests and approvals are signed with two KMS keys
(:mod:`~sluice.registry.signing`), and checked before a version is loaded, deployed or served.

This module imports with numpy and boto3 only (the zip endpoint flavour has no pandas,
scikit-learn or scipy).
"""

from __future__ import annotations

import json
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
from sluice.registry.manifest import parse_approval, parse_manifest, serving_artifacts
from sluice.registry.records import APPROVED, REJECTED, VersionRecord, artifact_key
from sluice.registry.signing import (
    KEY_SPEC,
    Signature,
    digests,
    manifest_statement,
    sign,
    verify_approval,
    verify_manifest,
)
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

    def verified_caller(self) -> str:
        """:meth:`caller`, which must be known: the CLI acts as the verified caller, never as a name given.

        Raises
        ------
        SluiceError
            If STS ``GetCallerIdentity`` does not answer (no credentials or no STS endpoint).
        """
        caller = self.caller()
        if caller == "unknown":
            raise SluiceError(
                "cannot tell who you are: STS GetCallerIdentity failed (check your AWS credentials)"
            )
        return caller

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

        Every check runs before the artifacts are uploaded, so a refused registration leaves no
        objects behind.

        Raises
        ------
        SluiceError
            If the model name or idempotency key is malformed, the parent version does not exist,
            or the version record would exceed DynamoDB's item limit (e.g. a huge note).
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
        _check_item_size(name, bundle, lineage, caller=caller)
        stored = self._artifacts.put_all(name, bundle.artifacts)
        signature = sign(
            manifest_statement(name, digests(stored), registered_by=caller), key_id=self.manifest_key
        )
        body = version_body(bundle, lineage, stored, caller=caller, manifest=signature)
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
        """The model's audit events from the audit bucket, oldest first.

        Each is ``{ts, kind, actor, version, detail}``, plus ``rewrites`` when someone tried
        to rewrite it (see :func:`sluice.registry.audit.read_history`).
        """
        return read_history(self._table, name)

    # -- artifacts ---------------------------------------------------------------------------

    def fetch(self, name: str, version: int, artifact: str) -> bytes:
        """One artifact's bytes, verified against the recorded sha256, whose manifest signature verifies.

        Raises
        ------
        NotFound
            If the version has no such artifact.
        IntegrityError
            If the manifest's signature does not verify, or the stored bytes are missing or do not
            match the recorded sha256.
        """
        record = self.get(name, version=version)
        verify_manifest(record, key_id=self.manifest_key)
        return self._artifacts.fetch(record, artifact)

    def fetch_signed(self, record: VersionRecord, artifact: str) -> bytes:
        """One artifact of ``record``, checked against the digest ``record`` holds, and only that.

        For a caller that has verified a signature over ``record``'s digests itself (promotion
        verifies the source approval, which covers every digest, with the source account's key).
        """
        return self._artifacts.fetch(record, artifact)

    def load(
        self,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        flavour: str = "sklearn",
    ) -> LoadedModel:
        """Resolve a version (by number or alias), fetch and verify its artifacts, build the model.

        Before anything is fetched, the record's manifest signature must verify with
        :attr:`manifest_key` and, if the record says Approved, its approval signature with
        :attr:`approval_key`. ``flavour="sklearn"`` deserialises the estimator (only after its
        sha256 matched): the built-in recipe's ``model.joblib``, or the model file a version's
        ``model.json`` names (``model.skops`` trusting only its recorded types, or
        ``model.joblib``); ``flavour="onnx"`` returns the built-in recipe's ONNX graph's bytes
        and needs neither joblib nor scikit-learn.

        Raises
        ------
        IntegrityError
            If a signature is missing or does not verify (the record was changed in the table),
            or an artifact's bytes do not match its sha256.
        """
        record = self.get(name, version=version, alias=alias)
        verify_manifest(record, key_id=self.manifest_key)
        if record.status == APPROVED:
            verify_approval(record, key_id=self.approval_key)
        wanted = serving_artifacts(record, flavour)
        if PROFILE_ARTIFACT in record.artifacts:
            wanted.append(PROFILE_ARTIFACT)
        return build_model(record, self._artifacts.fetch_many(record, wanted), flavour)

    def load_manifest(
        self, name: str, version: int, manifest: str, *, approval: str, flavour: str = "sklearn"
    ) -> LoadedModel:
        """Like :meth:`load` for serving, from a deploy-time manifest instead of the table.

        An endpoint's Lambda version carries the manifest of the model version it serves and its
        approval (bound at deploy, ``SLUICE_MODEL_ARTIFACTS`` and ``SLUICE_MODEL_APPROVAL``, see
        :mod:`sluice.registry.manifest`), so its cold start verifies the approval signature with
        :attr:`approval_key`, then fetches and verifies the serving artifacts, without a DynamoDB
        client or round trip. The returned record holds the name, version, artifacts and approval.

        Raises
        ------
        SluiceError
            If ``manifest`` or ``approval`` is malformed.
        IntegrityError
            If the approval signature is missing or does not cover this model version and digests.
        """
        bound = parse_manifest(manifest)
        approved_by, signature = parse_approval(approval)
        record = VersionRecord.from_manifest(
            name, int(version), bound, approved_by=approved_by, approval_signature=signature
        )
        wanted = serving_artifacts(record, flavour)
        verify_approval(record, key_id=self.approval_key)
        return build_model(record, self._artifacts.fetch_many(record, wanted), flavour)

    # -- approval, aliases, events -----------------------------------------------------------

    def approve(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending version to Approved, signing the approval with :attr:`approval_key`.

        Raises
        ------
        Conflict
            If ``actor`` is the principal that registered the version, or the status forbids it.
        IntegrityError
            If the version's manifest signature does not verify.
        """
        number = decide(self._table, name, version, APPROVED, actor=actor, reason=reason, **self._keys())
        return self.get(name, version=number)

    def reject(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending or Approved version to Rejected (final)."""
        number = decide(self._table, name, version, REJECTED, actor=actor, reason=reason, **self._keys())
        return self.get(name, version=number)

    def _keys(self) -> dict[str, str]:
        return {"manifest_key": self.manifest_key, "approval_key": self.approval_key}

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> None:
        """Point ``alias`` at ``version`` (creating or moving it) and record ``alias_moved``.

        Raises
        ------
        Conflict
            If the version is Rejected, or the alias is ``champion`` and the version is not Approved.
        IntegrityError
            If the version says Approved but its approval signature does not verify.
        """
        check_alias(alias)
        check_actor(actor)
        record = self.get(name, version=version)
        if record.status == APPROVED:
            verify_approval(record, key_id=self.approval_key)
        move_alias(self._table, record, alias, actor=actor)

    def require_deployable(self, name: str, version: int) -> VersionRecord:
        """The version's record if it is Approved and its approval signature verifies.

        Raises
        ------
        Conflict
            If the version is Pending or Rejected.
        IntegrityError
            If the approval signature is missing or does not cover the record.
        """
        return ensure_deployable(self.get(name, version=version), approval_key=self.approval_key)

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
    _create_signing_keys(table_name, region=region)
    _create_audit_bucket(s3, audit_bucket_name(bucket_name), location=location)
    return ModelRegistry(table_name=table_name, bucket_name=bucket_name)


def _create_audit_bucket(s3: Any, name: str, *, location: Mapping[str, Any], days: int = 1) -> None:
    """Create the audit bucket: Object Lock with a default ``COMPLIANCE`` retention of ``days`` days.

    Compliance mode keeps every object version until its retention ends, whoever asks (see
    :mod:`sluice.registry.audit`); one day suits local use. An existing bucket is kept as it is,
    so its retention is never shortened.
    """
    try:
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True, **location)
    except ClientError as err:
        if error_code(err) != "BucketAlreadyOwnedByYou":
            raise
        return
    s3.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
        },
    )


def _create_signing_keys(table_name: str, *, region: str | None) -> None:
    """The manifest and approval keys (SIGN_VERIFY, ECC_NIST_P256) under their aliases, if missing."""
    kms = sluice_aws.client("kms", region=region)
    for alias in (manifest_key_alias(table_name), approval_key_alias(table_name)):
        try:
            kms.describe_key(KeyId=alias)
            continue
        except ClientError as err:
            if error_code(err) != "NotFoundException":
                raise
        key_id = kms.create_key(
            KeyUsage="SIGN_VERIFY", KeySpec=KEY_SPEC, Description=f"sluice registry {table_name}: {alias}"
        )["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)


def _index_entry(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": item["model_name"]["S"],
        "latest_version": int(item["latest"]["N"]),
        "aliases": {k: int(v["N"]) for k, v in item.get("aliases", {}).get("M", {}).items()},
        "created_at": item.get("created_at", {}).get("S", ""),
        "updated_at": item.get("updated_at", {}).get("S", ""),
    }


#: DynamoDB's 400 KB item limit, less room for the keys, the signatures and the approval attributes.
MAX_VERSION_BODY = 400 * 1024 - 16 * 1024


def _check_item_size(name: str, bundle: ModelBundle, lineage: Lineage, *, caller: str) -> None:
    """Refuse a version whose table item DynamoDB would reject, before any artifact is uploaded."""
    digest = "0" * 64  # every sha256 is 64 hex digits: the size is exact without hashing
    planned = {
        artifact: {"sha256": digest, "size": len(body), "key": artifact_key(name, digest, artifact)}
        for artifact, body in bundle.artifacts.items()
    }
    body = version_body(bundle, lineage, planned, caller=caller, manifest=Signature("", ""))
    size = len(json.dumps(body, sort_keys=True, default=str).encode())
    if size > MAX_VERSION_BODY:
        largest = max(body, key=lambda field: len(json.dumps(body[field], default=str)))
        raise SluiceError(
            f"model {name!r}: the version record would be {size // 1024} KB, over DynamoDB's 400 KB "
            f"item limit (largest field: {largest}); nothing was uploaded"
        )
