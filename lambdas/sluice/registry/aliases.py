"""Aliases: names (``champion``, ``challenger``, ...) that point at a version of a model.

An alias never points at a Rejected version, and ``champion`` only at an Approved one. Moving
an alias is one transaction that checks the version's status, moves the alias only if it still
points where it was read, updates the model index and records ``alias_moved``.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sluice.errors import Conflict, NotFound
from sluice.registry.audit import commit, event_put
from sluice.registry.records import APPROVED, PENDING, REJECTED, VersionRecord
from sluice.registry.table import (
    MAX_ATTEMPTS,
    RegistryTable,
    backoff,
    index_key,
    is_conflict,
    key,
    now,
    s,
    vsk,
)
from sluice.registry.validation import check_alias

CHAMPION = "champion"


def resolve_alias(table: RegistryTable, model: str, alias: str) -> int:
    """The version ``alias`` points at; :class:`NotFound` names the model or the alias."""
    check_alias(alias)
    item = table.get_item(model, f"ALIAS#{alias}")
    if item is None:
        if not table.has_model(model):
            raise NotFound(f"model {model!r} not found")
        raise NotFound(f"model {model!r} has no alias {alias!r}")
    return int(item["version"]["N"])


def list_aliases(table: RegistryTable, model: str) -> dict[str, int]:
    """Alias -> version for ``model``."""
    return {
        item["sk"]["S"].removeprefix("ALIAS#"): int(item["version"]["N"])
        for item in table.query(model, "ALIAS#")
    }


def check_alias_target(record: VersionRecord, alias: str) -> None:
    """Raise :class:`Conflict` if ``alias`` may not point at ``record`` (see the module docstring)."""
    if record.status == REJECTED:
        raise Conflict(
            f"model {record.name!r} version {record.version} is Rejected; alias {alias!r} cannot point at it"
        )
    if alias == CHAMPION and record.status != APPROVED:
        raise Conflict(
            f"model {record.name!r} version {record.version} is {record.status}; "
            f"only an Approved version can be {alias!r}"
        )


def move_alias(table: RegistryTable, record: VersionRecord, alias: str, *, actor: str) -> None:
    """Point ``alias`` at ``record``'s version, retrying while other writers move it concurrently.

    Raises
    ------
    Conflict
        If the version's status no longer allows the alias, or the alias kept moving.
    """
    check_alias_target(record, alias)
    name = record.name
    for attempt in range(MAX_ATTEMPTS):
        previous = table.get_item(name, f"ALIAS#{alias}")
        if previous is not None and int(previous["version"]["N"]) == record.version:
            return  # already there: nothing moved, nothing to record
        try:
            commit(table, _alias_move(table.name, record, alias, previous, actor))
        except ClientError as err:
            if not is_conflict(err):
                raise
            # Either the alias moved concurrently (retry) or the version's status changed.
            current = table.record(name, record.version)
            if current.status == REJECTED or (alias == CHAMPION and current.status != APPROVED):
                raise Conflict(
                    f"model {name!r} version {record.version} became {current.status} while moving {alias!r}"
                ) from None
            backoff(attempt)
            continue
        return
    raise Conflict(f"model {name!r}: could not move alias {alias!r} after {MAX_ATTEMPTS} attempts")


def _alias_move(
    table: str, record: VersionRecord, alias: str, previous: dict[str, Any] | None, actor: str
) -> list[dict[str, Any]]:
    """The transaction moving ``alias`` from ``previous`` (its item as read, or ``None``) to ``record``."""
    name, version, stamp = record.name, {"N": str(record.version)}, now()
    put: dict[str, Any] = {
        "TableName": table,
        "Item": {
            **key(name, f"ALIAS#{alias}"),
            "version": version,
            "updated_at": s(stamp),
            "updated_by": s(actor),
        },
    }
    if previous is None:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        put["ConditionExpression"] = "version = :prev"
        put["ExpressionAttributeValues"] = {":prev": previous["version"]}
    allowed = [s(APPROVED)] if alias == CHAMPION else [s(APPROVED), s(PENDING)]
    placeholders = {f":s{i}": value for i, value in enumerate(allowed)}
    condition = f"#st IN ({', '.join(placeholders)})"
    if alias != CHAMPION:
        # A version registered without a status attribute is Pending (see VersionRecord.from_item).
        condition = f"attribute_exists(pk) AND (attribute_not_exists(#st) OR {condition})"
    status_check = {
        "TableName": table,
        "Key": key(name, vsk(record.version)),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": placeholders,
    }
    index_update = {
        "TableName": table,
        "Key": index_key(name),
        "UpdateExpression": "SET aliases.#a = :v, updated_at = :t",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeNames": {"#a": alias},
        "ExpressionAttributeValues": {":v": version, ":t": s(stamp)},
    }
    moved = {
        "alias": alias,
        "from": int(previous["version"]["N"]) if previous else None,
        "to": record.version,
    }
    event = event_put(table, name, "alias_moved", actor=actor, version=record.version, detail=moved)
    return [{"Put": put}, {"ConditionCheck": status_check}, {"Update": index_update}, {"Put": event}]
