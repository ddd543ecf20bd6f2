"""Reading data capture back: the captured rows of one model version over a time window.

The objects are the ones :mod:`sluice.serving.capture` lays out (Firehose or the direct S3
writer): Parquet (:mod:`sluice.serving.capture_parquet`), or JSON lines written before it.
They are listed hour partition by hour partition and read in bounded chunks: as record dicts
(:func:`iter_capture`, the labels join and the lifecycle), as Arrow tables
(:func:`iter_capture_tables`) or with the features as a DataFrame (:func:`iter_capture_frames`,
for the drift job's sketch).

This module imports with only the standard library and boto3 available; reading Parquet
objects needs pyarrow (the monitoring functions have it).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.serving.capture import format_ts, partition_prefix
from sluice.serving.capture_parquet import (
    PARQUET_SUFFIX,
    arrow_schema,
    features_frame,
    from_row,
    rows_table,
    table_records,
    wire_record,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def capture_objects(
    bucket: str, *, model: str, version: int, start: datetime, end: datetime
) -> Iterator[tuple[str, int]]:
    """``(key, size in bytes)`` of each capture object whose hour overlaps ``[start, end)``.

    The hour after ``end`` is listed too: Firehose partitions by arrival time, which can fall
    just after the scoring timestamp the rows carry.
    """
    client = aws.client("s3")
    paginator = client.get_paginator("list_objects_v2")
    for hour in _hours(_utc(start), _utc(end) + timedelta(hours=1)):
        prefix = partition_prefix(model, version, hour)
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item.get("Size", 0))


def capture_keys(bucket: str, *, model: str, version: int, start: datetime, end: datetime) -> Iterator[str]:
    """Keys of the capture objects whose hour partition overlaps ``[start, end)`` (see :func:`capture_objects`)."""
    for key, _ in capture_objects(bucket, model=model, version=version, start=start, end=end):
        yield key


def _lines(body: Any, key: str) -> Iterator[bytes]:
    if key.endswith(".gz"):
        with gzip.GzipFile(fileobj=body) as unzipped:
            yield from unzipped
    else:
        yield from body.iter_lines()


def _read_body(client: Any, bucket: str, key: str) -> bytes:
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return gzip.decompress(body) if key.endswith(".gz") else body


def _is_parquet(key: str) -> bool:
    return key.endswith(PARQUET_SUFFIX)


# Small objects (the direct writer's one per request, or Firehose's on a quiet stream) are
# fetched PREFETCH at a time in threads: S3 latency, not parsing, dominates them. JSON-lines
# objects above STREAM_ABOVE bytes are streamed line by line; a Parquet object is read whole
# (its footer is at the end) and decoded a row group batch at a time.
PREFETCH = 8
STREAM_ABOVE = 4 * 1024 * 1024


def _object_bodies(
    client: Any, bucket: str, objects: Iterable[tuple[str, int]]
) -> Iterator[tuple[str, bytes | Iterable[bytes]]]:
    """``(key, body)`` in listing order: the bytes, or a line iterator for a large JSON object."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=PREFETCH) as pool:
        pending: deque[tuple[str, Future[bytes]]] = deque()
        for key, size in objects:
            if size > STREAM_ABOVE and not _is_parquet(key):
                while pending:
                    done_key, future = pending.popleft()
                    yield done_key, future.result()
                yield key, _lines(client.get_object(Bucket=bucket, Key=key)["Body"], key)
                continue
            pending.append((key, pool.submit(_read_body, client, bucket, key)))
            if len(pending) >= PREFETCH:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        while pending:
            done_key, future = pending.popleft()
            yield done_key, future.result()


def _json_rows(body: bytes | Iterable[bytes], bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines object (the layout before Parquet); bad lines are skipped."""
    lines = body.splitlines() if isinstance(body, bytes) else body
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            logger.warning("skipping a malformed capture line in s3://%s/%s", bucket, key)


def _parquet_tables(body: bytes, batch_rows: int) -> Iterator[pa.Table]:
    """A Parquet object's rows in the capture schema, ``batch_rows`` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    for batch in pq.ParquetFile(io.BytesIO(body)).iter_batches(batch_size=batch_rows):
        columns = {
            f.name: (
                batch.column(f.name).cast(f.type)
                if f.name in batch.schema.names
                else pa.nulls(batch.num_rows, f.type)
            )
            for f in schema
        }
        yield pa.table(columns, schema=schema)


def _in_window(table: pa.Table, low: str, high: str) -> pa.Table:
    import pyarrow.compute as pc

    ts = table.column("ts")
    return table.filter(pc.and_(pc.greater_equal(ts, low), pc.less(ts, high)))


def _window(start: datetime, end: datetime, chunk_rows: int) -> tuple[datetime, datetime]:
    if chunk_rows < 1:
        raise SluiceError(f"chunk_rows must be at least 1, got {chunk_rows}")
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise SluiceError(f"capture window end {end.isoformat()} is not after its start {start.isoformat()}")
    return start, end


def _partition_of(key: str) -> dict[str, Any]:
    """``{"model", "version"}`` from a key under ``capture/model=<m>/version=<v>/``."""
    found = _KEY.search(key)
    if found is None:
        return {"model": "", "version": 0}
    return {"model": found.group(1), "version": int(found.group(2))}


_KEY = re.compile(r"model=([^/]+)/version=(\d+)/")


def _object_records(
    key: str, body: bytes | Iterable[bytes], bucket: str, low: str, high: str, batch_rows: int
) -> Iterator[dict[str, Any]]:
    where = _partition_of(key)
    if _is_parquet(key) and isinstance(body, bytes):
        for table in _parquet_tables(body, batch_rows):
            yield from table_records(_in_window(table, low, high), **where)
    else:
        for row in _json_rows(body, bucket, key):
            if low <= str(row.get("ts", "")) < high:
                yield from_row(row, **where)


def _object_tables(
    key: str, body: bytes | Iterable[bytes], bucket: str, low: str, high: str, batch_rows: int
) -> Iterator[pa.Table]:
    if _is_parquet(key) and isinstance(body, bytes):
        for table in _parquet_tables(body, batch_rows):
            yield _in_window(table, low, high)
    else:
        where = _partition_of(key)
        rows = (r for r in _json_rows(body, bucket, key) if low <= str(r.get("ts", "")) < high)
        yield rows_table(wire_record(from_row(r, **where)) for r in rows)


def read_object(bucket: str, key: str) -> list[dict[str, Any]]:
    """Every record of one capture object (Parquet or JSON lines), whatever its time."""
    body = _read_body(aws.client("s3"), bucket, key)
    return list(_object_records(key, body, bucket, "", "\uffff", 50_000))


def iter_objects(
    bucket: str,
    objects: Iterable[tuple[str, int]],
    *,
    start: datetime,
    end: datetime,
    chunk_rows: int = 50_000,
) -> Iterator[list[dict[str, Any]]]:
    """The records of the given capture objects (``(key, size)``, as listed) scored in ``[start, end)``.

    Each record is what :func:`~sluice.serving.capture.capture_records` made (``features`` a
    dict, ``prediction`` a number or a label; ``model`` and ``version`` from the key). Reads
    Parquet objects and the JSON-lines objects written before them; JSON lines that are not
    valid JSON are skipped with a warning. Memory depends on ``chunk_rows`` and a few objects
    in flight, not on how many objects there are.
    """
    start, end = _window(start, end, chunk_rows)
    low, high = format_ts(start), format_ts(end)
    chunk: list[dict[str, Any]] = []
    for key, body in _object_bodies(aws.client("s3"), bucket, objects):
        for record in _object_records(key, body, bucket, low, high, chunk_rows):
            chunk.append(record)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def iter_object_tables(
    bucket: str,
    objects: Iterable[tuple[str, int]],
    *,
    start: datetime,
    end: datetime,
    chunk_rows: int = 50_000,
) -> Iterator[pa.Table]:
    """The rows of :func:`iter_objects` as Arrow tables of the capture schema, ≤ ``chunk_rows`` each.

    Columns are :data:`~sluice.serving.capture_parquet.COLUMNS` (``features`` JSON text,
    ``prediction`` text); JSON-lines objects are converted to the same columns.
    """
    import pyarrow as pa

    start, end = _window(start, end, chunk_rows)
    low, high = format_ts(start), format_ts(end)
    pending: list[pa.Table] = []
    size = 0
    for key, body in _object_bodies(aws.client("s3"), bucket, objects):
        for table in _object_tables(key, body, bucket, low, high, chunk_rows):
            pending.append(table)
            size += table.num_rows
            while size >= chunk_rows:
                whole = pa.concat_tables(pending)
                yield whole.slice(0, chunk_rows)
                pending, size = [whole.slice(chunk_rows)], whole.num_rows - chunk_rows
    if size:
        yield pa.concat_tables(pending)


def iter_capture(
    bucket: str,
    *,
    model: str,
    version: int,
    start: datetime,
    end: datetime,
    chunk_rows: int = 50_000,
) -> Iterator[list[dict[str, Any]]]:
    """Captured rows of one model version scored in ``[start, end)``, in chunks of ≤ ``chunk_rows``.

    The records of :func:`iter_objects` over the version's listed objects. For a columnar read
    (features as a DataFrame), use :func:`iter_capture_frames`.
    """
    start, end = _window(start, end, chunk_rows)
    objects = capture_objects(bucket, model=model, version=version, start=start, end=end)
    yield from iter_objects(bucket, objects, start=start, end=end, chunk_rows=chunk_rows)


def iter_capture_tables(
    bucket: str,
    *,
    model: str,
    version: int,
    start: datetime,
    end: datetime,
    chunk_rows: int = 50_000,
) -> Iterator[pa.Table]:
    """The rows of :func:`iter_capture` as Arrow tables (see :func:`iter_object_tables`)."""
    start, end = _window(start, end, chunk_rows)
    objects = capture_objects(bucket, model=model, version=version, start=start, end=end)
    yield from iter_object_tables(bucket, objects, start=start, end=end, chunk_rows=chunk_rows)


@dataclass
class CaptureFrame:
    """One chunk of captured rows, columnar.

    Attributes
    ----------
    table
        The rows in the capture schema (``request_id``, ``row``, ``ts``, ``prediction``...).
    features
        One column per feature (those asked for, in that order), parsed from the JSON text.
    probability
        The served probability per row, NaN where there was none.
    """

    table: pa.Table
    features: pd.DataFrame
    probability: np.ndarray


def frames_of(tables: Iterable[pa.Table], columns: Sequence[str] | None = None) -> Iterator[CaptureFrame]:
    """Capture tables (:func:`iter_object_tables`, :func:`iter_capture_tables`) as :class:`CaptureFrame`."""
    for table in tables:
        probability = table.column("probability").to_numpy(zero_copy_only=False)
        yield CaptureFrame(table, features_frame(table, columns), probability.astype(float))


def iter_capture_frames(
    bucket: str,
    *,
    model: str,
    version: int,
    start: datetime,
    end: datetime,
    columns: Sequence[str] | None = None,
    chunk_rows: int = 50_000,
) -> Iterator[CaptureFrame]:
    """The rows of :func:`iter_capture` as :class:`CaptureFrame` chunks, for the drift job's sketch.

    The columnar path: ``profile.partial(frame.features)`` needs no dict per row, and the
    feature JSON of a whole chunk is parsed by pyarrow in one call. ``columns`` selects and
    orders the features (absent ones are all missing); ``None`` keeps what the rows hold.
    For a listed group of objects: ``frames_of(iter_object_tables(bucket, objects, ...))``.
    """
    tables = iter_capture_tables(
        bucket, model=model, version=version, start=start, end=end, chunk_rows=chunk_rows
    )
    yield from frames_of(tables, columns)


def _object_lines(
    client: Any, bucket: str, objects: Iterable[tuple[str, int]]
) -> Iterator[tuple[str, Iterable[bytes]]]:
    """Each object's rows as record JSON lines (Parquet ones converted).

    Kept only for :mod:`sluice.monitoring.window`, which read through it before
    :func:`iter_objects` existed; new code calls :func:`iter_objects`.
    """
    for key, body in _object_bodies(client, bucket, objects):
        if _is_parquet(key) and isinstance(body, bytes):
            where = _partition_of(key)
            records = (r for t in _parquet_tables(body, 50_000) for r in table_records(t, **where))
            yield key, (json.dumps(r, separators=(",", ":")).encode() for r in records)
        else:
            yield key, body.splitlines() if isinstance(body, bytes) else body
