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

With ``DataFormatConversionConfiguration`` enabled (the capture stream converts to Parquet),
each group becomes one Parquet object instead, with the columns of the Glue table the
conversion names: the local stage's emulated ``AWS::Glue::Table``, or a table in moto's Glue.
As the OpenX JSON deserializer does, keys match columns case-insensitively, absent keys are
null and other keys are dropped; a value that does not fit its column sends the record under
the error prefix as ``format-conversion-failed``.

The embedded local AWS (:class:`localaws.LocalAws`) calls :func:`install` before serving. It is
idempotent and raises if moto's symbol moved, so an upgrade fails loudly (:data:`PUT_S3_RECORDS`,
through :mod:`localaws.patches`).
"""

from __future__ import annotations

import base64
import gzip
import io
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
        groups = _group(s3_destination, [_data(r) for r in records], arrival)
        conversion = conversion_of(s3_destination)
        bodies = (
            _parquet_groups(groups, conversion, s3_destination, arrival, self.account_id, self.region_name)
            if conversion
            else _joined_groups(groups, s3_destination)
        )
        bucket = s3_destination["BucketARN"].split(":")[-1]
        backend = moto_symbol("moto.s3.models.s3_backends", owner=__name__)[self.account_id][self.partition]
        for key_prefix, (body, extension) in bodies.items():
            name = (
                f"{delivery_stream_name}-{version_id}-{arrival:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}{extension}"
            )
            backend.put_object(bucket, f"{key_prefix}{name}", body)
        return [{"RecordId": str(uuid.uuid4())} for _ in records]

    return put_s3_records


def _error_prefix(destination: Mapping[str, Any], arrival: datetime, error_type: str) -> str:
    prefix = destination.get("ErrorOutputPrefix") or "errors/!{firehose:error-output-type}/"
    return evaluate_prefix(prefix, data=None, arrival=arrival, queries={}, error_type=error_type)


def _group(destination: Mapping[str, Any], records: list[bytes], arrival: datetime) -> dict[str, list[bytes]]:
    """Records by their evaluated prefix (the error prefix for those without their keys)."""
    prefix = destination.get("Prefix", "") or ""
    queries = metadata_queries(destination)
    groups: dict[str, list[bytes]] = {}
    for data in records:
        try:
            key_prefix = evaluate_prefix(prefix, data=data, arrival=arrival, queries=queries)
        except _RecordError:
            key_prefix = _error_prefix(destination, arrival, "processing-failed")
        groups.setdefault(key_prefix, []).append(data)
    return groups


def _joined_groups(
    groups: Mapping[str, list[bytes]], destination: Mapping[str, Any]
) -> dict[str, tuple[bytes, str]]:
    gzipped = destination.get("CompressionFormat") == "GZIP"
    extension = destination.get("FileExtension") or (".gz" if gzipped else "")
    out = {}
    for key_prefix, parts in groups.items():
        body = b"".join(parts)
        out[key_prefix] = (gzip.compress(body) if gzipped else body, extension)
    return out


def conversion_of(destination: Mapping[str, Any]) -> dict[str, Any] | None:
    """The destination's enabled ``DataFormatConversionConfiguration``, or ``None``."""
    conversion = destination.get("DataFormatConversionConfiguration") or {}
    if not conversion or str(conversion.get("Enabled", True)).lower() == "false":
        return None
    return dict(conversion)


def table_columns(schema: Mapping[str, Any], *, account: str, region: str) -> list[tuple[str, str]]:
    """``[(name, hive type)]`` of the Glue table a conversion's ``SchemaConfiguration`` names.

    Raises
    ------
    KeyError
        If neither the local stage nor moto's Glue has that table.
    """
    from localaws.cloudformation.support import emulated_resources

    database, name = schema.get("DatabaseName"), schema.get("TableName")
    for resource in emulated_resources("AWS::Glue::Table"):
        table = resource.properties.get("TableInput") or {}
        if name in (table.get("Name"), resource.physical_id):
            return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    backend = moto_symbol("moto.glue.models.glue_backends", owner=__name__)[account][region]
    try:
        found = backend.get_table(database, name).as_dict()
    except Exception as err:
        raise KeyError(f"no Glue table {database}.{name} for the format conversion") from err
    return [(c["Name"], c["Type"]) for c in found["StorageDescriptor"]["Columns"]]


def _parquet_groups(
    groups: Mapping[str, list[bytes]],
    conversion: Mapping[str, Any],
    destination: Mapping[str, Any],
    arrival: datetime,
    account: str,
    region: str,
) -> dict[str, tuple[bytes, str]]:
    """Each group as one Parquet object of the table's columns; misfits under the error prefix."""
    columns = table_columns(conversion.get("SchemaConfiguration") or {}, account=account, region=region)
    serde = ((conversion.get("OutputFormatConfiguration") or {}).get("Serializer") or {}).get("ParquetSerDe")
    compression = str((serde or {}).get("Compression") or "SNAPPY").lower()
    extension = destination.get("FileExtension") or ".parquet"
    out: dict[str, tuple[bytes, str]] = {}
    failed: list[bytes] = []
    for key_prefix, parts in groups.items():
        if key_prefix.startswith(_error_prefix(destination, arrival, "processing-failed")):
            out[key_prefix] = (b"".join(parts), "")
            continue
        rows = []
        for data in parts:
            try:
                rows.append(_convert(data, columns))
            except (ValueError, TypeError):
                failed.append(data)
        if rows:
            out[key_prefix] = (_parquet(rows, columns, compression), extension)
    if failed:
        out[_error_prefix(destination, arrival, "format-conversion-failed")] = (b"".join(failed), "")
    return out


def _convert(data: bytes, columns: list[tuple[str, str]]) -> dict[str, Any]:
    """One JSON record as a row of ``columns`` (raises ValueError/TypeError if it does not fit)."""
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    lowered = {str(k).lower(): v for k, v in record.items()}
    return {name: _cell(lowered.get(name.lower()), hive) for name, hive in columns}


def _cell(value: Any, hive: str) -> Any:
    if value is None:
        return None
    if hive == "string":
        if isinstance(value, Mapping | list):
            return json.dumps(value, separators=(",", ":"))
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if hive in ("int", "bigint", "smallint", "tinyint"):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if hive in ("double", "float"):
        return float(value)
    if hive == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a boolean")
        return value
    return json.dumps(value) if isinstance(value, Mapping | list) else str(value)


def _parquet(rows: list[dict[str, Any]], columns: list[tuple[str, str]], compression: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "int": pa.int32(),
        "bigint": pa.int64(),
        "smallint": pa.int16(),
        "tinyint": pa.int8(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
    }
    schema = pa.schema([pa.field(name, types.get(hive, pa.string())) for name, hive in columns])
    table = pa.table({f.name: pa.array([r[f.name] for r in rows], f.type) for f in schema}, schema=schema)
    out = io.BytesIO()
    pq.write_table(table, out, compression="none" if compression == "uncompressed" else compression)
    return out.getvalue()


PUT_S3_RECORDS = Patch(
    target="moto.firehose.models.FirehoseBackend.put_s3_records",
    gap="S3 delivery ignores the !{...} expressions of dynamic partitioning prefixes",
    replace=_partitioned_put_s3_records,
    owner=__name__,
    name="dynamic_partitioning",
    params=("self", "delivery_stream_name", "version_id", "s3_destination", "records"),
    requires=("moto.core.utils.utcnow", "moto.s3.models.s3_backends", "moto.glue.models.glue_backends"),
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
