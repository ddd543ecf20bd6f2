"""Make moto's Firehose deliver to S3 the way Firehose dynamic partitioning does.

moto 5.2 writes every ``PutRecord(Batch)`` to ``<Prefix>/YYYY/MM/DD/HH/<name>`` and ignores the
``!{...}`` expressions of the prefix. The capture stream (``infra/constructs/capture.py``)
relies on them to lay data out as ``capture/model=<m>/version=<v>/dt=.../hour=.../``, so
locally captured data would land where the drift job never looks.

:func:`install` replaces ``FirehoseBackend.put_s3_records`` with a version that, for a
destination whose prefix holds ``!{...}`` expressions, evaluates the prefix per record:

- ``!{partitionKeyFromQuery:<key>}`` from the destination's ``MetadataExtraction`` JQ query
  (the subset ``{"key": .a.b, "key2": .c|tostring}``; a key without a query reads the
  top-level field of that name);
- ``!{timestamp:<java pattern>}`` from the arrival time, in UTC;
- ``!{firehose:random-string}`` and, on the error prefix, ``!{firehose:error-output-type}``.

Records are grouped by their evaluated prefix and each group becomes one object, GZIP
compressed if the destination says so, named ``<stream>-<version>-<time>-<uuid><FileExtension>``.
A record that is not JSON or lacks a key goes under the error prefix as
``processing-failed``, as Firehose does. Other destinations keep moto's behaviour.

The embedded local AWS (:class:`localaws.LocalAws`) calls :func:`install` before serving. It is
idempotent and raises if moto's symbol moved, so an upgrade fails loudly (:data:`PUT_S3_RECORDS`,
through :mod:`localaws.patches`).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from localaws.patches import Patch, moto_symbol

_EXPRESSION = re.compile(r"!\{([a-zA-Z]+):([^}]*)\}")
_QUERY_PAIR = re.compile(r'"?([A-Za-z_][\w-]*)"?\s*:\s*(\.[\w.]*)\s*(\|\s*tostring)?')
# Java DateTimeFormatter letters Firehose accepts in !{timestamp:...}, longest first.
_JAVA_TIME = (
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)


class _RecordError(Exception):
    pass


def java_time(pattern: str, moment: datetime) -> str:
    """Format ``moment`` with a Firehose timestamp pattern such as ``yyyy-MM-dd``."""
    out = pattern
    for java, strf in _JAVA_TIME:
        out = out.replace(java, moment.strftime(strf))
    return out


def metadata_queries(destination: Mapping[str, Any]) -> dict[str, tuple[list[str], bool]]:
    """``{key: (path, tostring)}`` from the destination's MetadataExtraction processor."""
    processing = destination.get("ProcessingConfiguration") or {}
    for processor in processing.get("Processors") or []:
        if processor.get("Type") != "MetadataExtraction":
            continue
        for parameter in processor.get("Parameters") or []:
            if parameter.get("ParameterName") == "MetadataExtractionQuery":
                return {
                    key: ([p for p in path.split(".") if p], bool(tostring))
                    for key, path, tostring in _QUERY_PAIR.findall(parameter.get("ParameterValue", ""))
                }
    return {}


def _extract(record: Mapping[str, Any], key: str, queries: Mapping[str, tuple[list[str], bool]]) -> str:
    path, _ = queries.get(key, ([key], True))
    value: Any = record
    for part in path:
        if not isinstance(value, Mapping) or part not in value or value[part] is None:
            raise _RecordError(key)
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def evaluate_prefix(
    prefix: str,
    *,
    data: bytes | None,
    arrival: datetime,
    queries: Mapping[str, tuple[list[str], bool]],
    error_type: str = "",
) -> str:
    """The S3 prefix of one record (``data`` is its bytes, parsed as JSON when a key needs it).

    Raises ``_RecordError`` when the record is not JSON or lacks a partition key.
    """
    parsed: Any = None

    def substitute(match: re.Match) -> str:
        nonlocal parsed
        namespace, argument = match.group(1), match.group(2)
        if namespace == "timestamp":
            return java_time(argument, arrival)
        if namespace == "partitionKeyFromQuery":
            if parsed is None:
                try:
                    parsed = json.loads(data or b"")
                except ValueError:
                    raise _RecordError("not JSON") from None
            return _extract(parsed, argument, queries)
        if namespace == "firehose" and argument == "error-output-type":
            return error_type
        if namespace == "firehose" and argument == "random-string":
            return uuid.uuid4().hex[:11]
        return match.group(0)

    return _EXPRESSION.sub(substitute, prefix)


def _data(record: Mapping[str, Any]) -> bytes:
    data = record["Data"]
    return base64.b64decode(data) if isinstance(data, str) else bytes(data)


def _partitioned_put_s3_records(original: Callable) -> Callable:
    def put_s3_records(
        self: Any,
        delivery_stream_name: str,
        version_id: str,
        s3_destination: dict[str, Any],
        records: list[dict[str, bytes]],
    ) -> list[dict[str, str]]:
        prefix = s3_destination.get("Prefix", "") or ""
        if "!{" not in prefix:
            return original(self, delivery_stream_name, version_id, s3_destination, records)
        arrival = moto_symbol("moto.core.utils.utcnow", owner=__name__)().replace(tzinfo=UTC)
        queries = metadata_queries(s3_destination)
        error_prefix = s3_destination.get("ErrorOutputPrefix") or "errors/!{firehose:error-output-type}/"
        groups: dict[str, list[bytes]] = {}
        for record in records:
            data = _data(record)
            try:
                key_prefix = evaluate_prefix(prefix, data=data, arrival=arrival, queries=queries)
            except _RecordError:
                key_prefix = evaluate_prefix(
                    error_prefix, data=None, arrival=arrival, queries={}, error_type="processing-failed"
                )
            groups.setdefault(key_prefix, []).append(data)

        bucket = s3_destination["BucketARN"].split(":")[-1]
        gzipped = s3_destination.get("CompressionFormat") == "GZIP"
        extension = s3_destination.get("FileExtension") or (".gz" if gzipped else "")
        backend = moto_symbol("moto.s3.models.s3_backends", owner=__name__)[self.account_id][self.partition]
        for key_prefix, parts in groups.items():
            body = b"".join(parts)
            if gzipped:
                body = gzip.compress(body)
            name = (
                f"{delivery_stream_name}-{version_id}-{arrival:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}{extension}"
            )
            backend.put_object(bucket, f"{key_prefix}{name}", body)
        return [{"RecordId": str(uuid.uuid4())} for _ in records]

    return put_s3_records


PUT_S3_RECORDS = Patch(
    target="moto.firehose.models.FirehoseBackend.put_s3_records",
    gap="S3 delivery ignores the !{...} expressions of dynamic partitioning prefixes",
    replace=_partitioned_put_s3_records,
    owner=__name__,
    name="dynamic_partitioning",
    params=("self", "delivery_stream_name", "version_id", "s3_destination", "records"),
    requires=("moto.core.utils.utcnow", "moto.s3.models.s3_backends"),
)


def install() -> None:
    """Patch moto's Firehose S3 delivery to honour dynamic-partitioning prefixes (idempotent).

    Raises
    ------
    RuntimeError
        If ``FirehoseBackend.put_s3_records`` is missing or its parameters changed.
    """
    PUT_S3_RECORDS.apply()


def uninstall() -> None:
    """Restore moto's own delivery (tests)."""
    PUT_S3_RECORDS.undo()
