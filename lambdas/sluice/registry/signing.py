"""Signed statements: what a version's artifacts are, and that a person approved them.

The registry table can be written by several roles, so neither a version's ``status`` nor its
artifacts' sha256 digests are trusted as stored. Two KMS asymmetric keys (``SIGN_VERIFY``,
``ECC_NIST_P256``, ``ECDSA_SHA_256``) sign a canonical JSON statement
(``json.dumps(..., sort_keys=True, separators=(",", ":"))``), as a ``DIGEST`` of its sha256:

* the **manifest** statement ``{"kind": "sluice/manifest/v1", "model", "artifacts"}``, signed with
  the registry's manifest key at registration;
* the **approval** statement ``{"kind": "sluice/approval/v1", "model", "version", "artifacts",
  "approved_by"}``, signed with the approval key when a version is approved.

``artifacts`` maps every artifact of the version to its sha256. A version is loaded only if its
manifest verifies, and served only if its approval verifies, so a table writer without
``kms:Sign`` on the keys can neither change a digest nor make a version servable.
Signatures are stored base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sluice import aws as sluice_aws
from sluice.errors import IntegrityError, SluiceError

if TYPE_CHECKING:  # pragma: no cover
    from sluice.registry.records import VersionRecord

MANIFEST_KIND = "sluice/manifest/v1"
APPROVAL_KIND = "sluice/approval/v1"
KEY_SPEC = "ECC_NIST_P256"
ALGORITHM = "ECDSA_SHA_256"


@dataclass(frozen=True)
class Signature:
    """A KMS signature (base64) and the ARN of the key that made it."""

    signature: str
    key_arn: str


def digests(artifacts: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{artifact: sha256}`` of a record's artifacts (``{artifact: {"sha256": ...}}``)."""
    return {name: str(info.get("sha256", "")) for name, info in artifacts.items()}


def manifest_statement(model: str, artifacts: Mapping[str, str], *, registered_by: str) -> dict[str, Any]:
    """What the manifest key signs at registration: the model, every artifact's sha256 and who registered.

    ``registered_by`` is signed so that a table writer cannot rename the registrant and so slip
    past the refusal of self-approval.
    """
    return {
        "kind": MANIFEST_KIND,
        "model": model,
        "artifacts": dict(artifacts),
        "registered_by": registered_by,
    }


def approval_statement(
    model: str, version: int, artifacts: Mapping[str, str], *, approved_by: str
) -> dict[str, Any]:
    """What the approval key signs when ``approved_by`` approves ``version`` of ``model``."""
    return {
        "kind": APPROVAL_KIND,
        "model": model,
        "version": int(version),
        "artifacts": dict(artifacts),
        "approved_by": approved_by,
    }


def statement_digest(statement: Mapping[str, Any]) -> bytes:
    """The sha256 of the statement's canonical JSON: the ``DIGEST`` message KMS signs."""
    canonical = json.dumps(statement, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def sign(statement: Mapping[str, Any], *, key_id: str) -> Signature:
    """Sign ``statement`` with the KMS key ``key_id`` (id, ARN or alias)."""
    try:
        response = sluice_aws.client("kms").sign(
            KeyId=key_id,
            Message=statement_digest(statement),
            MessageType="DIGEST",
            SigningAlgorithm=ALGORITHM,
        )
    except ClientError as err:
        _missing_key(err, key_id)
        raise
    return Signature(base64.b64encode(response["Signature"]).decode(), str(response["KeyId"]))


def verify(statement: Mapping[str, Any], signature: str, *, key_id: str, what: str) -> None:
    """Check ``signature`` of ``statement`` with the KMS key ``key_id``.

    Raises
    ------
    IntegrityError
        Naming ``what`` (e.g. "model 'x' version 3: approval signature") if the signature is
        missing, malformed or does not verify with the key.
    """
    if not signature:
        raise IntegrityError(f"{what} is missing")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{what} is not base64") from None
    try:
        valid = sluice_aws.client("kms").verify(
            KeyId=key_id,
            Message=statement_digest(statement),
            MessageType="DIGEST",
            Signature=raw,
            SigningAlgorithm=ALGORITHM,
        )["SignatureValid"]
    except ClientError as err:
        # Real KMS raises on a bad signature; moto answers SignatureValid: False.
        if err.response.get("Error", {}).get("Code") != "KMSInvalidSignatureException":
            _missing_key(err, key_id)
            raise
        valid = False
    if not valid:
        raise IntegrityError(f"{what} does not verify with KMS key {key_id}")


def verify_manifest(record: VersionRecord, *, key_id: str) -> None:
    """Check the record's manifest signature against its artifacts' digests.

    Raises
    ------
    IntegrityError
        If the signature is missing or does not cover these digests (a changed digest).
    """
    verify(
        manifest_statement(record.name, digests(record.artifacts), registered_by=record.created_by),
        record.manifest_signature,
        key_id=key_id,
        what=f"model {record.name!r} version {record.version}: manifest signature",
    )


def verify_approval(record: VersionRecord, *, key_id: str) -> None:
    """Check the record's approval signature: its model, version, digests and approver.

    Promotion calls it with the source registry's approval key ARN (``key_id``).

    Raises
    ------
    IntegrityError
        If the signature is missing (e.g. ``status`` set to Approved by a raw table write)
        or does not cover this record.
    """
    statement = approval_statement(
        record.name, record.version, digests(record.artifacts), approved_by=record.decided_by
    )
    verify(
        statement,
        record.approval_signature,
        key_id=key_id,
        what=f"model {record.name!r} version {record.version}: approval signature",
    )


def _missing_key(err: ClientError, key_id: str) -> None:
    if err.response.get("Error", {}).get("Code") == "NotFoundException":
        raise SluiceError(
            f"KMS key {key_id} not found (the stateful stack, or create_storage locally, creates it)"
        ) from None
