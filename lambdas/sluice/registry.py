"""The model registry: artifacts in S3, versions, aliases and the audit trail in DynamoDB.

Storage layout
--------------
Artifacts are content-addressed: ``artifacts/<model>/<sha256>/<artifact>`` in the registry
bucket, so registering a version never overwrites bytes another version uses. Records are
items of one table keyed by ``pk`` / ``sk`` (see ``infra/constructs/registry.py``)::

    pk = MODELS         sk = MODEL#<name>           the model index: latest version, aliases, timestamps
    pk = MODEL#<name>   sk = HEAD                   latest version (the version counter), timestamps
                        sk = V#0000000007           one version: status, artifacts, metrics, lineage
                        sk = ALIAS#champion         alias -> version
                        sk = IDEMP#<key>            idempotency key -> version
                        sk = EVENT#<ts>#<suffix>    append-only audit trail, time-ordered

Versions
--------
A version number is taken in one DynamoDB transaction that moves ``HEAD.latest`` from the
value read to that value + 1 (conditional) and creates the version item, the idempotency
item and the ``registered`` event (each conditional on not existing). Two writers that read
the same ``latest`` cannot both commit, so numbers are consecutive, with no gaps and no
duplicates; the loser re-reads and retries.

Approval
--------
``PendingManualApproval`` -> ``Approved`` | ``Rejected``, and ``Approved`` -> ``Rejected``
(revoking an approval when a problem is found after the fact: the version stays in the audit
trail but can no longer be deployed or promoted). ``Rejected`` is final. Only ``Approved``
versions pass :meth:`ModelRegistry.require_deployable`, and the ``champion`` alias is only moved
onto an Approved version. No alias is ever moved onto a Rejected version; rejecting an
aliased version leaves the alias where it is (serving keeps working until someone moves
it) and names the alias in the ``rejected`` event.

This module imports with numpy and boto3 only (the zip endpoint flavour has no pandas,
scikit-learn or scipy); training-side helpers import those lazily.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sluice import __version__
from sluice import aws as sluice_aws
from sluice.errors import Conflict, IntegrityError, NotFound, SluiceError

if TYPE_CHECKING:  # pragma: no cover
    from sluice.features import Preprocessor
    from sluice.schema import FeatureSchema
    from sluice.settings import Settings
    from sluice.training import TrainingResult

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
#: Valid status transitions (see the module docstring).
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({REJECTED}),
    REJECTED: frozenset(),
}

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
FLAVOURS = ("sklearn", "onnx")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def artifact_key(model: str, digest: str, artifact: str) -> str:
    """Where an artifact lives in the registry bucket: content-addressed by its sha256."""
    return f"artifacts/{model}/{digest}/{artifact}"


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
    """Compact JSON ``{artifact: sha256}`` of what serving ``flavour`` needs (see ``load_manifest``)."""
    wanted = serving_artifacts(record, flavour)
    return json.dumps({a: record.artifacts[a]["sha256"] for a in wanted}, separators=(",", ":"))


#: Audit event kinds written by the registry itself; others (deployed, traffic, promoted,
#: rolled_back, ...) come through :meth:`ModelRegistry.record_event`.
REGISTRY_EVENTS = ("registered", "approved", "rejected", "alias_moved")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ALIAS_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
EVENT_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
CHAMPION = "champion"

_HEAD = "HEAD"
# One partition lists every model, so listing is a Query rather than a Scan of all records.
_INDEX_PK = "MODELS"
_MAX_ATTEMPTS = 200


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lineage:
    """Where a version came from.

    Parameters
    ----------
    data_uri
        Training data location (``s3://bucket/key`` or ``file:///path``).
    data_version
        S3 ``VersionId`` of the data object, else its ETag (empty for local files).
    data_sha256, data_rows
        Content hash and row count of the training data.
    code_version
        Version of the training code (package version and git commit where known).
    image_digest
        Container image digest of the training job, where known.
    hyperparameters
        The estimator's parameters (defaults to the bundle's when empty).
    parent_version
        The version this one retrains, if any.
    role
        ARN of the principal that registered the version (filled from STS when empty).
    """

    data_uri: str = ""
    data_version: str = ""
    data_sha256: str = ""
    data_rows: int = 0
    code_version: str = ""
    image_digest: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    role: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_data(
        cls,
        location: str | Path,
        *,
        rows: int,
        parent_version: int | None = None,
        image_digest: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> Lineage:
        """Lineage of training data at ``location``: a local path or an ``s3://`` URI.

        Hashes the data (streamed) and, for S3, records the object's VersionId or ETag.
        """
        text = str(location)
        if text.startswith("s3://"):
            uri, version, digest = _describe_s3(text)
        else:
            path = Path(text).expanduser().resolve()
            if not path.is_file():
                raise NotFound(f"training data {text!r} not found")
            uri, version = path.as_uri(), ""
            digest = _sha256_stream(path.open("rb"))
        return cls(
            data_uri=uri,
            data_version=version,
            data_sha256=digest,
            data_rows=int(rows),
            code_version=code_version(),
            image_digest=image_digest
            if image_digest is not None
            else os.environ.get("SLUICE_IMAGE_DIGEST", ""),
            hyperparameters=dict(hyperparameters or {}),
            parent_version=parent_version,
        )


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
            if not _safe_artifact_name(name):
                raise SluiceError(f"artifact name {name!r} is not a relative path of [A-Za-z0-9._-] parts")

    @classmethod
    def from_training(cls, result: TrainingResult, *, onnx: bool = True) -> ModelBundle:
        """Build the artifacts of a :func:`sluice.training.train` result.

        The drift baseline profile is fitted on the training partition's features. With
        ``onnx``, the estimator is converted with skl2onnx and ``model.onnx`` is kept only if
        it passes :func:`sluice.onnx_export.check_parity` on the holdout partition; the
        outcome is kept in ``notes["onnx"]`` either way.
        """
        import joblib

        from sluice.drift import DriftProfile
        from sluice.schema import FeatureSchema

        spec = result.spec
        features = result.train[spec.features]
        buffer = io.BytesIO()
        joblib.dump(result.estimator, buffer)
        artifacts: dict[str, bytes] = {MODEL_ARTIFACT: buffer.getvalue()}
        for key, body in result.preprocessor.to_artifacts().items():
            artifacts[PREPROCESSING_ARTIFACTS[key]] = _json_bytes(body)
        artifacts[SCHEMA_ARTIFACT] = _json_bytes(
            FeatureSchema.infer(features, categorical=list(spec.categorical)).to_dict()
        )
        artifacts[PROFILE_ARTIFACT] = _json_bytes(
            DriftProfile(categorical=list(spec.categorical)).fit(features).to_dict()
        )
        artifacts[SPEC_ARTIFACT] = _json_bytes(spec.to_dict())
        notes: dict[str, Any] = {}
        if onnx:
            notes["onnx"] = _onnx_artifact(result, artifacts)
        return cls(
            artifacts=artifacts,
            metrics={k: float(v) for k, v in result.metrics.items()},
            hyperparameters=result.hyperparameters,
            estimator=spec.estimator,
            notes=notes,
        )


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

    @property
    def flavours(self) -> tuple[str, ...]:
        """Scoring flavours this version can be served with."""
        return ("sklearn", "onnx") if ONNX_ARTIFACT in self.artifacts else ("sklearn",)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flavours"] = list(self.flavours)
        return out

    @classmethod
    def from_manifest(cls, name: str, version: int, digests: Mapping[str, str]) -> VersionRecord:
        """The part of a record a :func:`serving_manifest` carries: name, version, artifacts."""
        artifacts = {
            artifact: {"sha256": digest, "key": artifact_key(name, digest, artifact)}
            for artifact, digest in digests.items()
        }
        return cls(
            name=name, version=version, status="", artifacts=artifacts, metrics={},
            hyperparameters={}, lineage={}, created_at="", created_by="",
        )  # fmt: skip

    @classmethod
    def _from_item(cls, name: str, item: Mapping[str, Any]) -> VersionRecord:
        body = json.loads(item["body"]["S"])
        return cls(
            name=name,
            version=int(item["version"]["N"]),
            status=item["status"]["S"],
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
        )


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


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class ModelRegistry:
    """Register, approve, alias, audit and load model versions.

    Parameters
    ----------
    table_name, bucket_name
        The registry table and artifact bucket (``SLUICE_REGISTRY_TABLE``/``_BUCKET``).
    """

    def __init__(self, *, table_name: str, bucket_name: str) -> None:
        if not table_name or not bucket_name:
            raise SluiceError("the registry needs a table name and a bucket name")
        self.table_name = table_name
        self.bucket_name = bucket_name
        self._caller: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        settings.require("registry_table", "registry_bucket")
        return cls(table_name=settings.registry_table, bucket_name=settings.registry_bucket)

    @property
    def _ddb(self) -> Any:
        return sluice_aws.client("dynamodb")

    @property
    def _s3(self) -> Any:
        return sluice_aws.client("s3")

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
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise SluiceError("idempotency_key must be 1-200 printable ASCII characters without spaces")
        if idempotency_key is not None:
            existing = self._idempotent_version(name, idempotency_key)
            if existing is not None:
                return self.get(name, version=existing)
        if lineage.parent_version is not None:
            self.get(name, version=lineage.parent_version)  # NotFound names the missing parent
        caller = self.caller()
        artifacts = self._put_artifacts(name, bundle.artifacts)
        lineage_dict = lineage.to_dict()
        lineage_dict["role"] = lineage.role or caller
        if not lineage_dict["hyperparameters"]:
            lineage_dict["hyperparameters"] = bundle.hyperparameters
        body = {
            "artifacts": artifacts,
            "metrics": bundle.metrics,
            "hyperparameters": bundle.hyperparameters,
            "lineage": lineage_dict,
            "created_by": caller,
            "parent_version": lineage.parent_version,
            "estimator": bundle.estimator,
            "notes": bundle.notes,
        }
        registered = {
            "parent_version": lineage.parent_version,
            "idempotency_key": idempotency_key,
            "data_sha256": lineage.data_sha256,
        }
        for attempt in range(_MAX_ATTEMPTS):
            latest = self._latest(name)
            version = latest + 1
            now = _now()
            items = [
                {"Update": self._head_update(name, latest, version, now)},
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": {
                            "pk": _s(_pk(name)),
                            "sk": _s(_vsk(version)),
                            "version": {"N": str(version)},
                            "status": _s(PENDING),
                            "created_at": _s(now),
                            "body": _s(json.dumps(body, sort_keys=True, default=str)),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Update": self._index_update(name, version, now)},
                {
                    "Put": self._event_put(
                        name, "registered", actor=caller, version=version, detail=registered
                    )
                },
            ]
            if idempotency_key is not None:
                items.append(
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                "pk": _s(_pk(name)),
                                "sk": _s(f"IDEMP#{idempotency_key}"),
                                "version": {"N": str(version)},
                                "created_at": _s(now),
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
            try:
                self._ddb.transact_write_items(TransactItems=items)
            except ClientError as err:
                if _code(err) not in ("TransactionCanceledException", "TransactionConflictException"):
                    raise
                if idempotency_key is not None:
                    existing = self._idempotent_version(name, idempotency_key)
                    if existing is not None:
                        return self.get(name, version=existing)
                _backoff(attempt)
                continue
            return self.get(name, version=version)
        raise Conflict(f"model {name!r}: could not take a version number after {_MAX_ATTEMPTS} attempts")

    def _head_update(self, name: str, latest: int, version: int, now: str) -> dict[str, Any]:
        # The condition is the whole race guard: HEAD must still hold the number we read.
        values: dict[str, Any] = {":v": {"N": str(version)}, ":t": _s(now)}
        if latest == 0:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "latest = :prev"
            values[":prev"] = {"N": str(latest)}
        return {
            "TableName": self.table_name,
            "Key": _key(name, _HEAD),
            "UpdateExpression": "SET latest = :v, updated_at = :t, created_at = if_not_exists(created_at, :t)",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }

    def _index_update(self, name: str, version: int, now: str) -> dict[str, Any]:
        # Unconditional: only the transaction that wins the HEAD condition commits it.
        return {
            "TableName": self.table_name,
            "Key": _index_key(name),
            "UpdateExpression": "SET model_name = :n, latest = :v, updated_at = :t, "
            "created_at = if_not_exists(created_at, :t), aliases = if_not_exists(aliases, :empty)",
            "ExpressionAttributeValues": {
                ":n": _s(name),
                ":v": {"N": str(version)},
                ":t": _s(now),
                ":empty": {"M": {}},
            },
        }

    def _put_artifacts(self, name: str, artifacts: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
        def put(item: tuple[str, bytes]) -> tuple[str, dict[str, Any]]:
            artifact, body = item
            digest = hashlib.sha256(body).hexdigest()
            key = artifact_key(name, digest, artifact)
            try:
                self._s3.head_object(Bucket=self.bucket_name, Key=key)
            except ClientError as err:
                if _code(err) not in ("404", "NoSuchKey", "NotFound"):
                    raise
                self._s3.put_object(
                    Bucket=self.bucket_name,
                    Key=key,
                    Body=bytes(body),
                    ChecksumAlgorithm="SHA256",
                    Metadata={"sha256": digest},
                )
            return artifact, {"sha256": digest, "size": len(body), "key": key}

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(put, sorted(artifacts.items())))

    def _idempotent_version(self, name: str, key: str) -> int | None:
        item = self._get_item(name, f"IDEMP#{key}")
        return int(item["version"]["N"]) if item else None

    def _latest(self, name: str) -> int:
        head = self._get_item(name, _HEAD)
        return int(head["latest"]["N"]) if head else 0

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
            version = self._latest(name)
            if version == 0:
                raise NotFound(f"model {name!r} not found")
        version = _check_version(version)
        item = self._get_item(name, _vsk(version))
        if item is None:
            if self._get_item(name, _HEAD) is None:
                raise NotFound(f"model {name!r} not found")
            raise NotFound(f"model {name!r} has no version {version}")
        return VersionRecord._from_item(name, item)

    def resolve_alias(self, name: str, alias: str) -> int:
        """The version ``alias`` points at."""
        _check_alias(alias)
        item = self._get_item(name, f"ALIAS#{alias}")
        if item is None:
            if self._get_item(name, _HEAD) is None:
                raise NotFound(f"model {name!r} not found")
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        return int(item["version"]["N"])

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name``."""
        return {
            item["sk"]["S"].removeprefix("ALIAS#"): int(item["version"]["N"])
            for item in self._query(name, "ALIAS#")
        }

    def list_versions(self, name: str) -> list[VersionRecord]:
        self._require_model(name)
        return [VersionRecord._from_item(name, item) for item in self._query(name, "V#")]

    def list_models(self) -> list[dict[str, Any]]:
        """Every model: name, latest version, aliases and timestamps, sorted by name."""
        models = []
        paginator = self._ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :index",
            ExpressionAttributeValues={":index": _s(_INDEX_PK)},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                models.append(
                    {
                        "name": item["model_name"]["S"],
                        "latest_version": int(item["latest"]["N"]),
                        "aliases": {k: int(v["N"]) for k, v in item.get("aliases", {}).get("M", {}).items()},
                        "created_at": item.get("created_at", {}).get("S", ""),
                        "updated_at": item.get("updated_at", {}).get("S", ""),
                    }
                )
        return sorted(models, key=lambda m: m["name"])

    def history(self, name: str) -> list[dict[str, Any]]:
        """The model's audit events, oldest first."""
        self._require_model(name)
        return [_event_from_item(item) for item in self._query(name, "EVENT#")]

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
        return self._fetch(self.get(name, version=version), artifact)

    def _fetch(self, record: VersionRecord, artifact: str) -> bytes:
        info = record.artifacts.get(artifact)
        where = f"artifact {artifact!r} of model {record.name!r} version {record.version}"
        if info is None:
            raise NotFound(
                f"model {record.name!r} version {record.version} has no artifact {artifact!r} "
                f"(it has {', '.join(sorted(record.artifacts))})"
            )
        try:
            body = self._s3.get_object(Bucket=self.bucket_name, Key=info["key"])["Body"].read()
        except ClientError as err:
            if _code(err) in ("NoSuchKey", "404", "NotFound"):
                raise IntegrityError(f"{where} is missing from the artifact bucket ({info['key']})") from None
            raise
        digest = hashlib.sha256(body).hexdigest()
        if digest != info["sha256"]:
            raise IntegrityError(
                f"{where} failed its integrity check: sha256 is {digest}, the registry recorded {info['sha256']}"
            )
        return body

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
        return self._load(record, wanted, flavour)

    def load_manifest(
        self, name: str, version: int, manifest: str, *, flavour: str = "sklearn"
    ) -> LoadedModel:
        """Like :meth:`load` for serving, from a :func:`serving_manifest` instead of the table.

        An endpoint's Lambda version carries the manifest of the model version it serves (bound
        at deploy), so its cold start fetches and verifies the artifacts without a DynamoDB
        client or round trip. The returned record holds the name, version and artifacts only.

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
        record = VersionRecord.from_manifest(name, int(version), digests)
        return self._load(record, serving_artifacts(record, flavour), flavour)

    def _load(self, record: VersionRecord, wanted: list[str], flavour: str) -> LoadedModel:
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            bodies = dict(zip(wanted, pool.map(lambda a: self._fetch(record, a), wanted), strict=True))

        from sluice.features import Preprocessor
        from sluice.schema import FeatureSchema

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

    # -- approval, aliases, events -----------------------------------------------------------

    def approve(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending version to Approved."""
        return self._decide(name, version, APPROVED, actor=actor, reason=reason)

    def reject(self, name: str, version: int, *, actor: str, reason: str = "") -> VersionRecord:
        """Move a Pending or Approved version to Rejected (final)."""
        return self._decide(name, version, REJECTED, actor=actor, reason=reason)

    def _decide(self, name: str, version: int, target: str, *, actor: str, reason: str) -> VersionRecord:
        _check_actor(actor)
        reason = _check_reason(reason)
        record = self.get(name, version=version)
        if target not in TRANSITIONS[record.status]:
            raise Conflict(
                f"model {name!r} version {record.version} is {record.status}; it cannot become {target}"
            )
        now = _now()
        kind = "approved" if target == APPROVED else "rejected"
        detail: dict[str, Any] = {"from": record.status, "to": target, "reason": reason}
        if target == REJECTED:
            left = sorted(a for a, v in self.aliases(name).items() if v == record.version)
            if left:
                detail["aliases"] = left
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": _key(name, _vsk(record.version)),
                            "UpdateExpression": "SET #st = :to, decided_at = :t, decided_by = :a, "
                            "decision_reason = :r",
                            "ConditionExpression": "#st = :from",
                            "ExpressionAttributeNames": {"#st": "status"},
                            "ExpressionAttributeValues": {
                                ":to": _s(target),
                                ":from": _s(record.status),
                                ":t": _s(now),
                                ":a": _s(actor),
                                ":r": _s(reason),
                            },
                        }
                    },
                    {"Put": self._event_put(name, kind, actor=actor, version=record.version, detail=detail)},
                ]
            )
        except ClientError as err:
            if _code(err) in ("TransactionCanceledException", "TransactionConflictException"):
                raise Conflict(
                    f"model {name!r} version {record.version} changed status concurrently; read it and retry"
                ) from None
            raise
        return self.get(name, version=record.version)

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> None:
        """Point ``alias`` at ``version`` (creating or moving it) and record ``alias_moved``.

        Raises
        ------
        Conflict
            If the version is Rejected, or the alias is ``champion`` and the version is not Approved.
        """
        _check_alias(alias)
        _check_actor(actor)
        record = self.get(name, version=version)
        if record.status == REJECTED:
            raise Conflict(
                f"model {name!r} version {record.version} is Rejected; alias {alias!r} cannot point at it"
            )
        if alias == CHAMPION and record.status != APPROVED:
            raise Conflict(
                f"model {name!r} version {record.version} is {record.status}; only an Approved version can be {alias!r}"
            )
        allowed = [_s(APPROVED)] if alias == CHAMPION else [_s(APPROVED), _s(PENDING)]
        for attempt in range(_MAX_ATTEMPTS):
            previous = self._get_item(name, f"ALIAS#{alias}")
            previous_version = int(previous["version"]["N"]) if previous else None
            if previous_version == record.version:
                return  # already there: nothing moved, nothing to record
            now = _now()
            alias_put: dict[str, Any] = {
                "TableName": self.table_name,
                "Item": {
                    "pk": _s(_pk(name)),
                    "sk": _s(f"ALIAS#{alias}"),
                    "version": {"N": str(record.version)},
                    "updated_at": _s(now),
                    "updated_by": _s(actor),
                },
            }
            if previous is None:
                alias_put["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                alias_put["ConditionExpression"] = "version = :prev"
                alias_put["ExpressionAttributeValues"] = {":prev": previous["version"]}
            placeholders = {f":s{i}": value for i, value in enumerate(allowed)}
            try:
                self._ddb.transact_write_items(
                    TransactItems=[
                        {"Put": alias_put},
                        {
                            "ConditionCheck": {
                                "TableName": self.table_name,
                                "Key": _key(name, _vsk(record.version)),
                                "ConditionExpression": f"#st IN ({', '.join(placeholders)})",
                                "ExpressionAttributeNames": {"#st": "status"},
                                "ExpressionAttributeValues": placeholders,
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": _index_key(name),
                                "UpdateExpression": "SET aliases.#a = :v, updated_at = :t",
                                "ConditionExpression": "attribute_exists(pk)",
                                "ExpressionAttributeNames": {"#a": alias},
                                "ExpressionAttributeValues": {
                                    ":v": {"N": str(record.version)},
                                    ":t": _s(now),
                                },
                            }
                        },
                        {
                            "Put": self._event_put(
                                name,
                                "alias_moved",
                                actor=actor,
                                version=record.version,
                                detail={"alias": alias, "from": previous_version, "to": record.version},
                            )
                        },
                    ]
                )
            except ClientError as err:
                if _code(err) not in ("TransactionCanceledException", "TransactionConflictException"):
                    raise
                # Either the alias moved concurrently (retry) or the version's status changed.
                current = self.get(name, version=record.version)
                if current.status == REJECTED or (alias == CHAMPION and current.status != APPROVED):
                    raise Conflict(
                        f"model {name!r} version {record.version} became {current.status} while moving {alias!r}"
                    ) from None
                _backoff(attempt)
                continue
            return
        raise Conflict(f"model {name!r}: could not move alias {alias!r} after {_MAX_ATTEMPTS} attempts")

    def require_deployable(self, name: str, version: int) -> VersionRecord:
        """The version's record if it is Approved.

        Raises
        ------
        Conflict
            If the version is Pending or Rejected.
        """
        record = self.get(name, version=version)
        if record.status != APPROVED:
            raise Conflict(
                f"model {name!r} version {record.version} is {record.status}; only Approved versions "
                "can be deployed or promoted"
            )
        return record

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        actor: str,
        version: int | None = None,
        detail: dict | None = None,
    ) -> None:
        """Append an audit event (e.g. ``deployed``, ``traffic``, ``promoted``, ``rolled_back``)."""
        if not isinstance(kind, str) or not EVENT_KIND.match(kind):
            raise SluiceError(f"event kind must match {EVENT_KIND.pattern}; got {kind!r}")
        if kind in REGISTRY_EVENTS:
            raise SluiceError(f"event kind {kind!r} is written by the registry itself")
        _check_actor(actor)
        if version is not None:
            version = self.get(name, version=version).version
        try:
            detail = json.loads(json.dumps(detail or {}))
        except (TypeError, ValueError):
            raise SluiceError("event detail must be JSON-serialisable") from None
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self.table_name,
                            "Key": _key(name, _HEAD),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {"Put": self._event_put(name, kind, actor=actor, version=version, detail=detail)},
                ]
            )
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                self._require_model(name)
            raise

    def _event_put(
        self, name: str, kind: str, *, actor: str, version: int | None, detail: Mapping[str, Any]
    ) -> dict[str, Any]:
        ts = _event_time()
        item: dict[str, Any] = {
            "pk": _s(_pk(name)),
            # The suffix keeps keys unique when two writers share a microsecond.
            "sk": _s(f"EVENT#{ts}#{uuid.uuid4().hex[:12]}"),
            "kind": _s(kind),
            "ts": _s(ts),
            "actor": _s(actor),
            "detail": _s(json.dumps(detail, sort_keys=True)),
        }
        if version is not None:
            item["version"] = {"N": str(version)}
        # Append-only: an event is never overwritten.
        return {"TableName": self.table_name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}

    # -- helpers -----------------------------------------------------------------------------

    def caller(self) -> str:
        """ARN of the principal this registry acts as (STS ``GetCallerIdentity``), cached."""
        if self._caller is None:
            try:
                self._caller = sluice_aws.client("sts").get_caller_identity()["Arn"]
            except Exception:  # no credentials or no STS endpoint: lineage says so
                self._caller = "unknown"
        return self._caller

    def _require_model(self, name: str) -> None:
        check_model_name(name)
        if self._get_item(name, _HEAD) is None:
            raise NotFound(f"model {name!r} not found")

    def _get_item(self, name: str, sk: str) -> dict[str, Any] | None:
        return self._ddb.get_item(TableName=self.table_name, Key=_key(name, sk), ConsistentRead=True).get(
            "Item"
        )

    def _query(self, name: str, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _s(_pk(name)), ":prefix": _s(prefix)},
            ConsistentRead=True,
        ):
            yield from page.get("Items", [])


# --------------------------------------------------------------------------------------------
# Module helpers
# --------------------------------------------------------------------------------------------


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
        if _code(err) != "ResourceInUseException":
            raise
    where = s3.meta.region_name
    location = {} if where == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": where}}
    try:
        s3.create_bucket(Bucket=bucket_name, **location)
    except ClientError as err:
        if _code(err) != "BucketAlreadyOwnedByYou":
            raise
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    return ModelRegistry(table_name=table_name, bucket_name=bucket_name)


def code_version() -> str:
    """``SLUICE_CODE_VERSION`` if set, else the package version and, in a git checkout, the commit."""
    configured = os.environ.get("SLUICE_CODE_VERSION")
    if configured:
        return configured
    version = f"sluice {__version__}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {commit})" if commit else version


def _onnx_artifact(result: TrainingResult, artifacts: dict[str, bytes]) -> dict[str, Any]:
    from sluice.onnx_export import check_parity, to_onnx

    try:
        graph = to_onnx(result.estimator, result.preprocessor.n_features_out_)
        parity = check_parity(result.estimator, graph, result.preprocessor.transform(result.holdout))
    except (SluiceError, ImportError) as err:
        return {"exported": False, "reason": str(err)}
    if not parity.ok:
        return {"exported": False, "reason": "parity check failed", "parity": parity.to_dict()}
    artifacts[ONNX_ARTIFACT] = graph
    return {"exported": True, "parity": parity.to_dict()}


def _describe_s3(uri: str) -> tuple[str, str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise SluiceError(f"training data URI {uri!r} must look like s3://bucket/key")
    s3 = sluice_aws.client("s3")
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if _code(err) in ("NoSuchKey", "NoSuchBucket", "404"):
            raise NotFound(f"training data {uri!r} not found") from None
        raise
    version = obj.get("VersionId") or ""
    if not version or version == "null":
        version = obj.get("ETag", "").strip('"')
    return uri, version, _sha256_stream(obj["Body"])


def _sha256_stream(stream: Any) -> str:
    digest = hashlib.sha256()
    with stream if hasattr(stream, "__enter__") else _nullcontext(stream) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _nullcontext:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _event_from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ts": item["ts"]["S"],
        "kind": item["kind"]["S"],
        "actor": item["actor"]["S"],
        "version": int(item["version"]["N"]) if "version" in item else None,
        "detail": json.loads(item.get("detail", {}).get("S", "{}")),
    }


_clock_lock = threading.Lock()
_last_event_us = 0


def _event_time() -> str:
    """UTC ISO timestamp with microseconds, strictly increasing within this process."""
    global _last_event_us
    with _clock_lock:
        now_us = max(time.time_ns() // 1000, _last_event_us + 1)
        _last_event_us = now_us
    stamp = datetime.fromtimestamp(now_us / 1_000_000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.005 * (2 ** min(attempt, 6)))))


def _json_bytes(value: Any) -> bytes:
    # Never sort keys: the preprocessing artifacts' key order is the model's column order.
    return json.dumps(value, indent=1).encode()


def _safe_artifact_name(name: str) -> bool:
    parts = name.split("/")
    return all(p and p not in (".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts)


def check_model_name(name: str) -> None:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise SluiceError(
            f"model name {name!r} is invalid: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        )


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_NAME.match(alias):
        raise SluiceError(f"alias {alias!r} is invalid: use 1-63 lower-case letters, digits or '-'")


def _check_version(version: Any) -> int:
    if isinstance(version, bool):
        raise SluiceError(f"version must be a positive integer; got {version!r}")
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise SluiceError(f"version must be a positive integer; got {version!r}") from None
    if number < 1 or str(number) != str(version).strip():
        raise SluiceError(f"version must be a positive integer; got {version!r}")
    return number


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 2048:
        raise SluiceError("actor must be a non-empty string (who is acting)")


def _check_reason(reason: str) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str) or len(reason) > 1000:
        raise SluiceError("reason must be a string of at most 1000 characters")
    return reason


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _pk(name: str) -> str:
    return f"MODEL#{name}"


def _vsk(version: int) -> str:
    return f"V#{version:010d}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _key(name: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": _s(_pk(name)), "sk": _s(sk)}


def _index_key(name: str) -> dict[str, dict[str, str]]:
    return {"pk": _s(_INDEX_PK), "sk": _s(_pk(name))}
