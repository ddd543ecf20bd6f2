"""Reading data capture back: the captured rows of one model version over a time window.

The objects are the ones :mod:`sluice.serving.capture` lays out (Firehose or the direct S3
writer), listed hour partition by hour partition; drift monitoring and the lifecycle read them
in bounded chunks with :func:`iter_capture`.

This module imports with only the standard library and boto3 available.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.serving.capture import format_ts, partition_prefix

if TYPE_CHECKING:
    from concurrent.futures import Future

logger = logging.getLogger(__name__)


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _capture_objects(
    bucket: str, *, model: str, version: int, start: datetime, end: datetime
) -> Iterator[tuple[str, int]]:
    client = aws.client("s3")
    paginator = client.get_paginator("list_objects_v2")
    for hour in _hours(_utc(start), _utc(end) + timedelta(hours=1)):
        prefix = partition_prefix(model, version, hour)
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item.get("Size", 0))


def capture_keys(bucket: str, *, model: str, version: int, start: datetime, end: datetime) -> Iterator[str]:
    """Keys of the capture objects whose hour partition overlaps ``[start, end)``.

    The hour after ``end`` is listed too: Firehose partitions by arrival time, which can fall
    just after the scoring timestamp the rows carry.
    """
    for key, _ in _capture_objects(bucket, model=model, version=version, start=start, end=end):
        yield key


def _lines(body: Any, key: str) -> Iterator[bytes]:
    if key.endswith(".gz"):
        with gzip.GzipFile(fileobj=body) as unzipped:
            yield from unzipped
    else:
        yield from body.iter_lines()


def _read_lines(client: Any, bucket: str, key: str) -> list[bytes]:
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return (gzip.decompress(body) if key.endswith(".gz") else body).splitlines()


# Small objects (the direct writer's one per request, or Firehose's on a quiet stream) are
# fetched PREFETCH at a time in threads: S3 latency, not parsing, dominates them. Objects above
# STREAM_ABOVE bytes are streamed line by line, so memory stays bounded whatever the window.
PREFETCH = 8
STREAM_ABOVE = 4 * 1024 * 1024


def _object_lines(
    client: Any, bucket: str, objects: Iterable[tuple[str, int]]
) -> Iterator[tuple[str, Iterable[bytes]]]:
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=PREFETCH) as pool:
        pending: deque[tuple[str, Future[list[bytes]]]] = deque()
        for key, size in objects:
            if size > STREAM_ABOVE:
                while pending:
                    done_key, future = pending.popleft()
                    yield done_key, future.result()
                yield key, _lines(client.get_object(Bucket=bucket, Key=key)["Body"], key)
                continue
            pending.append((key, pool.submit(_read_lines, client, bucket, key)))
            if len(pending) >= PREFETCH:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        while pending:
            done_key, future = pending.popleft()
            yield done_key, future.result()


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

    Memory depends on ``chunk_rows`` and a few objects in flight, not on the window: small
    objects are prefetched a few at a time, large ones streamed line by line. Lines that are
    not valid JSON are skipped with a warning.
    """
    if chunk_rows < 1:
        raise SluiceError(f"chunk_rows must be at least 1, got {chunk_rows}")
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise SluiceError(f"capture window end {end.isoformat()} is not after its start {start.isoformat()}")
    low, high = format_ts(start), format_ts(end)
    client = aws.client("s3")
    chunk: list[dict[str, Any]] = []
    objects = _capture_objects(bucket, model=model, version=version, start=start, end=end)
    for key, lines in _object_lines(client, bucket, objects):
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("skipping a malformed capture line in s3://%s/%s", bucket, key)
                continue
            if not low <= str(record.get("ts", "")) < high:
                continue
            chunk.append(record)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
