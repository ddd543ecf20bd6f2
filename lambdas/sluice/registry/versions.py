"""Version numbers: each registration takes the next one in a single DynamoDB transaction.

The transaction moves ``HEAD.latest`` from the value read to that value + 1 (conditional) and
creates the version item, the idempotency item and the ``registered`` event (each conditional on
not existing). Two writers that read the same ``latest`` cannot both commit, so numbers are
consecutive, with no gaps and no duplicates; the loser re-reads and retries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from sluice.errors import Conflict
from sluice.registry.audit import commit, event_put
from sluice.registry.bundle import ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.signing import Signature
from sluice.registry.table import (
    HEAD,
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


def version_body(
    bundle: ModelBundle,
    lineage: Lineage,
    artifacts: Mapping[str, dict[str, Any]],
    *,
    caller: str,
    manifest: Signature,
) -> dict[str, Any]:
    """What a version item stores besides its status: artifacts, numbers, lineage, creator.

    ``manifest`` is the signature of the artifacts' manifest statement
    (:func:`sluice.registry.signing.manifest_statement`) and the key that made it.
    """
    lineage_dict = lineage.to_dict()
    lineage_dict["role"] = lineage.role or caller
    if not lineage_dict["hyperparameters"]:
        lineage_dict["hyperparameters"] = bundle.hyperparameters
    return {
        "artifacts": dict(artifacts),
        "metrics": bundle.metrics,
        "hyperparameters": bundle.hyperparameters,
        "lineage": lineage_dict,
        "created_by": caller,
        "parent_version": lineage.parent_version,
        "estimator": bundle.estimator,
        "notes": bundle.notes,
        "manifest_signature": manifest.signature,
        "manifest_key": manifest.key_arn,
    }


def idempotent_version(table: RegistryTable, model: str, idempotency_key: str) -> int | None:
    """The version a registration with ``idempotency_key`` created, if any."""
    item = table.get_item(model, f"IDEMP#{idempotency_key}")
    return int(item["version"]["N"]) if item else None


def take_version(
    table: RegistryTable,
    model: str,
    body: Mapping[str, Any],
    *,
    caller: str,
    registered: Mapping[str, Any],
    idempotency_key: str | None,
) -> int:
    """Commit a new pending version of ``model`` holding ``body``; return its number.

    With ``idempotency_key``, a lost race against a writer with the same key returns that
    writer's version instead of retrying.
    """
    for attempt in range(MAX_ATTEMPTS):
        latest = table.latest(model)
        version = latest + 1
        stamp = now()
        items = [
            {"Update": _head_update(table.name, model, latest, version, stamp)},
            {"Put": _version_put(table.name, model, version, body, stamp)},
            {"Update": _index_update(table.name, model, version, stamp)},
            {
                "Put": event_put(
                    table.name, model, "registered", actor=caller, version=version, detail=registered
                )
            },
        ]
        if idempotency_key is not None:
            items.append({"Put": _idempotency_put(table.name, model, idempotency_key, version, stamp)})
        try:
            commit(table, items)
        except ClientError as err:
            if not is_conflict(err):
                raise
            if idempotency_key is not None:
                existing = idempotent_version(table, model, idempotency_key)
                if existing is not None:
                    return existing
            backoff(attempt)
            continue
        return version
    raise Conflict(f"model {model!r}: could not take a version number after {MAX_ATTEMPTS} attempts")


def _head_update(table: str, model: str, latest: int, version: int, stamp: str) -> dict[str, Any]:
    # The condition is the whole race guard: HEAD must still hold the number we read.
    values: dict[str, Any] = {":v": {"N": str(version)}, ":t": s(stamp)}
    if latest == 0:
        condition = "attribute_not_exists(pk)"
    else:
        condition = "latest = :prev"
        values[":prev"] = {"N": str(latest)}
    return {
        "TableName": table,
        "Key": key(model, HEAD),
        "UpdateExpression": "SET latest = :v, updated_at = :t, created_at = if_not_exists(created_at, :t)",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }


def _version_put(table: str, model: str, version: int, body: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {
            **key(model, vsk(version)),
            "version": {"N": str(version)},
            # No status (nor any approval attribute): a version without one is pending, and only
            # the approval path may write them (sluice.names.APPROVAL_ATTRIBUTES).
            "created_at": s(stamp),
            "body": s(json.dumps(body, sort_keys=True, default=str)),
        },
        "ConditionExpression": "attribute_not_exists(pk)",
    }


def _index_update(table: str, model: str, version: int, stamp: str) -> dict[str, Any]:
    # Unconditional: only the transaction that wins the HEAD condition commits it.
    return {
        "TableName": table,
        "Key": index_key(model),
        "UpdateExpression": "SET model_name = :n, latest = :v, updated_at = :t, "
        "created_at = if_not_exists(created_at, :t), aliases = if_not_exists(aliases, :empty)",
        "ExpressionAttributeValues": {
            ":n": s(model),
            ":v": {"N": str(version)},
            ":t": s(stamp),
            ":empty": {"M": {}},
        },
    }


def _idempotency_put(
    table: str, model: str, idempotency_key: str, version: int, stamp: str
) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {
            **key(model, f"IDEMP#{idempotency_key}"),
            "version": {"N": str(version)},
            "created_at": s(stamp),
        },
        "ConditionExpression": "attribute_not_exists(pk)",
    }
