"""The audit trail: append-only, time-ordered events of a model, kept where no role can rewrite them.

The registry writes ``registered``, ``approved``, ``rejected`` and ``alias_moved`` itself, in
the transaction of the change they record. Other kinds (``deployed``, ``traffic``, ``promoted``,
``rolled_back``, ...) come through :func:`append_event`.

Every registry transaction goes through :func:`commit`: once DynamoDB has committed it, each
``EVENT#`` item it put is written as one JSON object to the audit bucket (S3 Object Lock in
compliance mode), ``events/<model>/<ts>-<suffix>.json`` with the item's timestamp and suffix,
created only if absent (``If-None-Match: *``) and with a SHA-256 checksum. Compliance mode
keeps every version of those objects until its retention ends, whoever asks, so the first
version of each key is the event as it was recorded.

The ``EVENT#`` items stay in the registry table as an index, but several roles can write that
table, so :func:`read_history` (``ModelRegistry.history``) reads the audit bucket only:

* it takes the oldest version of each key; a key with later versions or delete markers is
  someone's attempt to rewrite or hide the event, so the original is returned with
  ``"rewrites": n`` (the number of those later writes);
* an event item in the table without its object (forged with a raw ``PutItem``, or recorded by
  a transaction whose audit write then failed, which :func:`commit` reports) is not returned;
* a registered model with no object at all, or a missing audit bucket, raises an error naming
  the bucket rather than falling back to the table: a trail that anyone could have rewritten
  must not pass for the protected one.

What the audit bucket cannot prevent is a writer of the bucket adding new event objects: it is
append-only, not signed.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from sluice import aws as sluice_aws
from sluice.errors import IntegrityError, SluiceError
from sluice.names import audit_event_prefix
from sluice.registry.table import HEAD, RegistryTable, error_code, key, pk, s
from sluice.registry.validation import check_actor, check_model_name

#: Audit event kinds written by the registry itself.
REGISTRY_EVENTS = ("registered", "approved", "rejected", "alias_moved")
EVENT_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Parallel reads of event objects in :func:`read_history`.
_READERS = 8

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


def commit(table: RegistryTable, transact_items: Sequence[Mapping[str, Any]]) -> None:
    """Run a registry transaction, then write each event it recorded to the audit bucket.

    Parameters
    ----------
    table
        The registry table; its ``audit_bucket`` receives the events.
    transact_items
        The ``TransactItems`` of ``TransactWriteItems``; each ``Put`` of an ``EVENT#`` item
        (see :func:`event_put`) becomes one audit object, in order.

    Raises
    ------
    botocore.exceptions.ClientError
        The transaction's error, unchanged (then nothing was written anywhere), or an audit
        write's (then the change is committed and its event is only in the table index).
    SluiceError
        If the transaction committed but the audit bucket does not exist.
    IntegrityError
        If another object already holds an event's key.
    """
    table.ddb.transact_write_items(TransactItems=list(transact_items))
    for entry in transact_items:
        put = entry.get("Put")
        if put is not None and put["Item"]["sk"]["S"].startswith("EVENT#"):
            write_event(table, put["Item"])


def write_event(table: RegistryTable, item: Mapping[str, Any]) -> None:
    """Write the event item ``item`` (committed to the table) to the audit bucket, once."""
    model = item["pk"]["S"].removeprefix("MODEL#")
    object_key = event_key(model, item["sk"]["S"])
    body = json.dumps({"model": model, **event_from_item(item)}, sort_keys=True).encode()
    s3 = sluice_aws.client("s3")
    try:
        s3.put_object(
            Bucket=table.audit_bucket,
            Key=object_key,
            Body=body,
            ContentType="application/json",
            IfNoneMatch="*",
            ChecksumAlgorithm="SHA256",
        )
    except ClientError as err:
        code = error_code(err)
        if code == "NoSuchBucket":
            raise SluiceError(
                f"model {model!r}: the change is recorded in table {table.name!r} but audit bucket "
                f"{table.audit_bucket!r} does not exist (SLUICE_AUDIT_BUCKET)"
            ) from None
        # A retried put whose first attempt landed finds its own bytes: nothing to do.
        if code == "PreconditionFailed" and _read_original(s3, table.audit_bucket, object_key) == body:
            return
        if code == "PreconditionFailed":
            raise IntegrityError(
                f"audit bucket {table.audit_bucket!r} already holds another object at {object_key!r}"
            ) from None
        raise


def event_key(model: str, sk: str) -> str:
    """The audit object key of the event item with sort key ``sk`` (``EVENT#<ts>#<suffix>``)."""
    ts, _, suffix = sk.removeprefix("EVENT#").partition("#")
    return f"{_prefix(model)}{ts}-{suffix}.json"


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
        commit(table, [{"ConditionCheck": check_head}, {"Put": put}])
    except ClientError as err:
        if error_code(err) == "TransactionCanceledException":
            table.require_model(model)
        raise


def read_history(table: RegistryTable, model: str) -> list[dict[str, Any]]:
    """The model's audit events from the audit bucket, oldest first.

    Each event is ``{ts, kind, actor, version, detail}``, plus ``rewrites`` (the number of
    later versions and delete markers of its object) when someone tried to rewrite it.

    Raises
    ------
    NotFound
        If the model is not registered.
    IntegrityError
        If the audit bucket holds no event of the registered model, or an unreadable one.
    SluiceError
        If the audit bucket does not exist.
    """
    table.require_model(model)
    s3 = sluice_aws.client("s3")  # created here: worker threads do not see an assumed role
    originals = _originals(s3, table.audit_bucket, _prefix(model))
    if not originals:
        raise IntegrityError(
            f"model {model!r} has no events in audit bucket {table.audit_bucket!r}; its audit trail is missing"
        )

    def read(entry: tuple[str, tuple[str, int]]) -> tuple[str, dict[str, Any]]:
        object_key, (version_id, rewrites) = entry
        event = _parse_event(object_key, _get(s3, table.audit_bucket, object_key, version_id))
        if rewrites:
            event["rewrites"] = rewrites
        return object_key, event

    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        events = list(pool.map(read, originals.items()))
    return [event for _, event in sorted(events, key=lambda pair: (pair[1]["ts"], pair[0]))]


def event_from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An event item of the registry table as ``{ts, kind, actor, version, detail}``."""
    return {
        "ts": item["ts"]["S"],
        "kind": item["kind"]["S"],
        "actor": item["actor"]["S"],
        "version": int(item["version"]["N"]) if "version" in item else None,
        "detail": json.loads(item.get("detail", {}).get("S", "{}")),
    }


def _prefix(model: str) -> str:
    return audit_event_prefix(model)


def _originals(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """Key -> (its oldest version id, its later writes) of each audit object under ``prefix``."""
    versions: dict[str, list[tuple[datetime, int, str]]] = {}
    markers: dict[str, int] = {}
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            # S3 lists the versions of a key newest first: the listing order breaks ties.
            for version in page.get("Versions", []):
                found = versions.setdefault(version["Key"], [])
                found.append((version["LastModified"], -len(found), version["VersionId"]))
            for marker in page.get("DeleteMarkers", []):
                markers[marker["Key"]] = markers.get(marker["Key"], 0) + 1
    except ClientError as err:
        if error_code(err) == "NoSuchBucket":
            raise SluiceError(f"audit bucket {bucket!r} does not exist (SLUICE_AUDIT_BUCKET)") from None
        raise
    return {
        object_key: (min(found)[2], len(found) - 1 + markers.get(object_key, 0))
        for object_key, found in versions.items()
    }


def _read_original(s3: Any, bucket: str, object_key: str) -> bytes | None:
    """The bytes of the oldest version of ``object_key``, or ``None`` if it has none."""
    found = _originals(s3, bucket, object_key).get(object_key)
    return _get(s3, bucket, object_key, found[0]) if found else None


def _get(s3: Any, bucket: str, object_key: str, version_id: str) -> bytes:
    response = s3.get_object(Bucket=bucket, Key=object_key, VersionId=version_id, ChecksumMode="ENABLED")
    data: bytes = response["Body"].read()
    return data


def _parse_event(object_key: str, data: bytes) -> dict[str, Any]:
    """The event an audit object holds, in the shape of :func:`event_from_item`."""
    try:
        stored = json.loads(data)
        event = {name: stored[name] for name in ("ts", "kind", "actor", "version", "detail")}
    except (ValueError, TypeError, KeyError):
        raise IntegrityError(f"audit object {object_key!r} is not an event") from None
    return event


def _event_time() -> str:
    """UTC ISO timestamp with microseconds, strictly increasing within this process."""
    global _last_event_us
    with _clock_lock:
        now_us = max(time.time_ns() // 1000, _last_event_us + 1)
        _last_event_us = now_us
    stamp = datetime.fromtimestamp(now_us / 1_000_000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
