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
from sluice.registry.audit import event_put
from sluice.registry.records import APPROVED, PENDING, REJECTED, VersionRecord
from sluice.registry.table import RegistryTable, is_conflict, key, now, s, vsk
from sluice.registry.validation import check_actor, check_model_name, check_reason

#: Valid status transitions (see the module docstring).
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({REJECTED}),
    REJECTED: frozenset(),
}


def decide(table: RegistryTable, model: str, version: int, target: str, *, actor: str, reason: str) -> int:
    """Move a version to status ``target`` and record an ``approved`` or ``rejected`` event.

    Returns the version number.

    Raises
    ------
    Conflict
        If the transition is not allowed, or the status changed concurrently.
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
    if target == REJECTED:
        left = sorted(a for a, v in list_aliases(table, name).items() if v == record.version)
        if left:
            detail["aliases"] = left
    update = _status_update(table.name, record, target, actor=actor, reason=reason)
    event = event_put(table.name, name, kind, actor=actor, version=record.version, detail=detail)
    try:
        table.ddb.transact_write_items(TransactItems=[{"Update": update}, {"Put": event}])
    except ClientError as err:
        if is_conflict(err):
            raise Conflict(
                f"model {name!r} version {record.version} changed status concurrently; read it and retry"
            ) from None
        raise
    return record.version


def ensure_deployable(record: VersionRecord) -> VersionRecord:
    """``record`` if it is Approved.

    Raises
    ------
    Conflict
        If the version is Pending or Rejected.
    """
    if record.status != APPROVED:
        raise Conflict(
            f"model {record.name!r} version {record.version} is {record.status}; only Approved versions "
            "can be deployed or promoted"
        )
    return record


def _status_update(
    table: str, record: VersionRecord, target: str, *, actor: str, reason: str
) -> dict[str, Any]:
    # Conditional on the status read: a concurrent decision makes this one fail, not overwrite it.
    return {
        "TableName": table,
        "Key": key(record.name, vsk(record.version)),
        "UpdateExpression": "SET #st = :to, decided_at = :t, decided_by = :a, decision_reason = :r",
        "ConditionExpression": "#st = :from",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": {
            ":to": s(target),
            ":from": s(record.status),
            ":t": s(now()),
            ":a": s(actor),
            ":r": s(reason),
        },
    }
