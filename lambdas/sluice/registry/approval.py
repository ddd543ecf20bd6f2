"""Approval: the status of a version and the decisions that move it.

``PendingManualApproval`` -> ``Approved`` | ``Rejected``, and ``Approved`` -> ``Rejected``
(revoking an approval when a problem is found after the fact: the version stays in the audit
trail but can no longer be deployed or promoted). ``Rejected`` is final. Only ``Approved``
versions pass :func:`ensure_deployable`, and the ``champion`` alias is only moved onto an
Approved version (:mod:`sluice.registry.aliases`). Rejecting an aliased version leaves the alias
where it is (serving keeps working until someone moves it) and names the alias in the
``rejected`` event.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sluice.errors import Conflict
from sluice.registry.aliases import list_aliases
from sluice.registry.audit import commit, event_put
from sluice.registry.records import APPROVED, PENDING, REJECTED, VersionRecord
from sluice.registry.signing import (
    Signature,
    approval_statement,
    digests,
    sign,
    verify_approval,
    verify_manifest,
)
from sluice.registry.table import RegistryTable, is_conflict, key, now, s, vsk
from sluice.registry.validation import check_actor, check_model_name, check_reason

#: Valid status transitions (see the module docstring).
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({REJECTED}),
    REJECTED: frozenset(),
}


def decide(
    table: RegistryTable,
    model: str,
    version: int,
    target: str,
    *,
    actor: str,
    reason: str,
    manifest_key: str,
    approval_key: str,
) -> int:
    """Move a version to status ``target`` and record an ``approved`` or ``rejected`` event.

    An approval first checks the version's manifest signature with ``manifest_key``, then signs
    the approval statement (:func:`sluice.registry.signing.approval_statement`) with
    ``approval_key`` and stores the signature with the status. Returns the version number.

    Raises
    ------
    Conflict
        If the transition is not allowed, the status changed concurrently, or ``actor`` is the
        principal that registered the version (:func:`same_principal`) and ``target`` is Approved.
    IntegrityError
        If an approval meets a version whose manifest signature does not verify.
    """
    check_actor(actor)
    reason = check_reason(reason)
    check_model_name(model)
    record = table.record(model, version)
    name = record.name
    if target not in TRANSITIONS[record.status]:
        raise Conflict(
            f"model {name!r} version {record.version} is {record.status}; it cannot become {target}"
        )
    kind = "approved" if target == APPROVED else "rejected"
    detail: dict[str, Any] = {"from": record.status, "to": target, "reason": reason}
    signature = None
    if target == APPROVED:
        signature = _sign_approval(record, actor=actor, manifest_key=manifest_key, approval_key=approval_key)
    else:
        left = sorted(a for a, v in list_aliases(table, name).items() if v == record.version)
        if left:
            detail["aliases"] = left
    update = _status_update(table.name, record, target, actor=actor, reason=reason, signature=signature)
    event = event_put(table.name, name, kind, actor=actor, version=record.version, detail=detail)
    try:
        commit(table, [{"Update": update}, {"Put": event}])
    except ClientError as err:
        if is_conflict(err):
            raise Conflict(
                f"model {name!r} version {record.version} changed status concurrently; read it and retry"
            ) from None
        raise
    return record.version


def ensure_deployable(record: VersionRecord, *, approval_key: str) -> VersionRecord:
    """``record`` if it is Approved and its approval signature verifies with ``approval_key``.

    Raises
    ------
    Conflict
        If the version is Pending or Rejected.
    IntegrityError
        If the approval signature is missing or does not cover the record.
    """
    if record.status != APPROVED:
        raise Conflict(
            f"model {record.name!r} version {record.version} is {record.status}; only Approved versions "
            "can be deployed or promoted"
        )
    verify_approval(record, key_id=approval_key)
    return record


def same_principal(a: str, b: str) -> bool:
    """Whether two caller ARNs are the same principal.

    Equal ARNs are; so are two ``arn:aws:sts::<account>:assumed-role/<role>/<session>`` of the
    same account and session name, whatever the role: a person's session name follows them
    across the roles they assume.
    """
    if a == b:
        return True
    left, right = _assumed_session(a), _assumed_session(b)
    return left is not None and left == right


def _assumed_session(arn: str) -> tuple[str, str] | None:
    # arn:<partition>:sts::<account>:assumed-role/<role>/<session> -> (account, session)
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "sts" or not parts[5].startswith("assumed-role/"):
        return None
    resource = parts[5].split("/")
    return (parts[4], resource[2]) if len(resource) == 3 and resource[2] else None


def _sign_approval(record: VersionRecord, *, actor: str, manifest_key: str, approval_key: str) -> Signature:
    """Refuse a tampered manifest and self-approval, then sign the approval statement.

    The manifest is verified first: it signs the registrant, so a rewritten ``created_by`` fails
    there instead of letting the registrant approve.
    """
    verify_manifest(record, key_id=manifest_key)
    if same_principal(actor, record.created_by):
        raise Conflict(
            f"model {record.name!r} version {record.version} was registered by {record.created_by}; "
            "a different principal must approve it"
        )
    statement = approval_statement(record.name, record.version, digests(record.artifacts), approved_by=actor)
    return sign(statement, key_id=approval_key)


def _status_update(
    table: str,
    record: VersionRecord,
    target: str,
    *,
    actor: str,
    reason: str,
    signature: Signature | None,
) -> dict[str, Any]:
    # Conditional on the status read: a concurrent decision makes this one fail, not overwrite it.
    # Registration writes no status, so a pending version may have none.
    expression = "SET #st = :to, decided_at = :t, decided_by = :a, decision_reason = :r"
    values = {":to": s(target), ":from": s(record.status), ":t": s(now()), ":a": s(actor), ":r": s(reason)}
    if signature is not None:
        expression += ", approval_signature = :sig, approval_key = :key"
        values.update({":sig": s(signature.signature), ":key": s(signature.key_arn)})
    condition = "#st = :from"
    if record.status == PENDING:
        condition = "attribute_not_exists(#st) OR #st = :from"
    return {
        "TableName": table,
        "Key": key(record.name, vsk(record.version)),
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": values,
    }
