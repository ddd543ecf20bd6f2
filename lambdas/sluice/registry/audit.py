"""The audit trail: append-only, time-ordered events of a model in the registry table.

The registry writes ``registered``, ``approved``, ``rejected`` and ``alias_moved`` itself, in
the transaction of the change they record. Other kinds (``deployed``, ``traffic``, ``promoted``,
``rolled_back``, ...) come through :func:`append_event`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from sluice.errors import SluiceError
from sluice.registry.table import HEAD, RegistryTable, error_code, key, pk, s
from sluice.registry.validation import check_actor, check_model_name

#: Audit event kinds written by the registry itself.
REGISTRY_EVENTS = ("registered", "approved", "rejected", "alias_moved")
EVENT_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_clock_lock = threading.Lock()
_last_event_us = 0


def event_put(
    table: str, model: str, kind: str, *, actor: str, version: int | None, detail: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``Put`` of one event item, for a transaction on table ``table``."""
    ts = _event_time()
    item: dict[str, Any] = {
        "pk": s(pk(model)),
        # The suffix keeps keys unique when two writers share a microsecond.
        "sk": s(f"EVENT#{ts}#{uuid.uuid4().hex[:12]}"),
        "kind": s(kind),
        "ts": s(ts),
        "actor": s(actor),
        "detail": s(json.dumps(detail, sort_keys=True)),
    }
    if version is not None:
        item["version"] = {"N": str(version)}
    # Append-only: an event is never overwritten.
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}


def append_event(
    table: RegistryTable,
    model: str,
    kind: str,
    *,
    actor: str,
    version: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append an event of a kind the registry does not write itself (see the module docstring)."""
    if not isinstance(kind, str) or not EVENT_KIND.match(kind):
        raise SluiceError(f"event kind must match {EVENT_KIND.pattern}; got {kind!r}")
    if kind in REGISTRY_EVENTS:
        raise SluiceError(f"event kind {kind!r} is written by the registry itself")
    check_actor(actor)
    if version is not None:
        check_model_name(model)
        version = table.record(model, version).version
    try:
        payload: dict[str, Any] = json.loads(json.dumps(detail or {}))
    except (TypeError, ValueError):
        raise SluiceError("event detail must be JSON-serialisable") from None
    check_head = {
        "TableName": table.name,
        "Key": key(model, HEAD),
        "ConditionExpression": "attribute_exists(pk)",
    }
    put = event_put(table.name, model, kind, actor=actor, version=version, detail=payload)
    try:
        table.ddb.transact_write_items(TransactItems=[{"ConditionCheck": check_head}, {"Put": put}])
    except ClientError as err:
        if error_code(err) == "TransactionCanceledException":
            table.require_model(model)
        raise


def read_history(table: RegistryTable, model: str) -> list[dict[str, Any]]:
    """The model's audit events, oldest first."""
    table.require_model(model)
    return [event_from_item(item) for item in table.query(model, "EVENT#")]


def event_from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ts": item["ts"]["S"],
        "kind": item["kind"]["S"],
        "actor": item["actor"]["S"],
        "version": int(item["version"]["N"]) if "version" in item else None,
        "detail": json.loads(item.get("detail", {}).get("S", "{}")),
    }


def _event_time() -> str:
    """UTC ISO timestamp with microseconds, strictly increasing within this process."""
    global _last_event_us
    with _clock_lock:
        now_us = max(time.time_ns() // 1000, _last_event_us + 1)
        _last_event_us = now_us
    stamp = datetime.fromtimestamp(now_us / 1_000_000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
