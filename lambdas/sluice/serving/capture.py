"""Data capture: one row per scored row, partitioned by model, version, day and hour.

Layout in the capture bucket (the same in AWS, where Firehose dynamic partitioning and record
format conversion write it, and locally, where the direct-S3 writer or the patched local
Firehose writes it)::

    capture/model=<name>/version=<v>/dt=YYYY-MM-DD/hour=HH/<file>.parquet

One record per row, as :func:`capture_records` makes it and the reader gives it back::

    {"request_id": str, "row": int, "ts": "2026-11-25T10:00:00.123Z", "model": str,
     "version": int, "source": "endpoint" | "batch", "features": {name: value},
     "prediction": value, "probability": float | null}

plus ``"dropped_fields": int`` when the caller sent fields outside the model's input schema:
only schema features are stored (see :func:`capture_records`), never what else a caller sent.
The Parquet columns (one Glue table for every model of the stage, ``features`` as JSON text)
are in :mod:`sluice.serving.capture_parquet`; objects written before it are JSON lines
(``.jsonl``/``.jsonl.gz``) and are still read.

:class:`CaptureWriter` sends the rows; :mod:`sluice.serving.capture_reader` reads a window back.

This module imports with only the standard library, numpy and boto3 available (the zip scoring
flavour has no pandas or pyarrow and only sends to Firehose; without pyarrow the direct-S3
writer falls back to JSON lines), and the writer never lets a capture failure reach the
scoring request.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.serving.capture_parquet import PARQUET_SUFFIX, wire_record
from sluice.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

CAPTURE_PREFIX = "capture"
SOURCES = ("endpoint", "batch")
# Firehose PutRecordBatch limits: 500 records and 4 MiB per call, 1,000 KiB per record.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024
METRIC_NAMESPACE = "Sluice/Capture"


# ---------------------------------------------------------------------------------------------
# Records and keys
# ---------------------------------------------------------------------------------------------


def format_ts(moment: datetime) -> str:
    """``2026-11-25T10:00:00.123Z``: UTC, millisecond precision, sortable as a string."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(value: str) -> datetime:
    """Inverse of :func:`format_ts` (also accepts any ISO-8601 timestamp)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise SluiceError(f"timestamp {value!r} is not ISO-8601") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def partition_prefix(model: str, version: int, moment: datetime | None = None) -> str:
    """``capture/model=<m>/version=<v>/`` or, with ``moment``, down to its ``dt=.../hour=HH/``."""
    base = f"{CAPTURE_PREFIX}/model={model}/version={int(version)}/"
    if moment is None:
        return base
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{base}dt={moment:%Y-%m-%d}/hour={moment:%H}/"


def _plain(value: Any) -> Any:
    """numpy scalars/arrays to Python, NaN and infinities to ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if tolist is not None:
        return _plain(tolist())
    return str(value)


def capture_records(
    *,
    request_id: str,
    model: str,
    version: int,
    rows: Sequence[Mapping[str, Any]],
    predictions: Sequence[Any] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray | None = None,
    source: str = "endpoint",
    ts: datetime | None = None,
    plain_rows: bool = False,
    fields: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The capture lines of one scored request, one per row, in row order.

    Parameters
    ----------
    rows
        The feature dicts as received (after parsing, before preprocessing).
    fields
        The model's input features (``FeatureSchema.names``). Only these are stored, in this
        order; a row's other keys are dropped and counted in the record's ``dropped_fields``,
        so a caller's extra fields (an identifier, a free-text note) never reach the capture
        bucket. ``None`` stores ``rows`` as they are, for callers that pass schema rows only.
    plain_rows
        ``rows`` hold only JSON types already (as :func:`~sluice.pipelines.batch_scorers.json_records` makes them),
        so they are used as they are; :func:`encode_line` still nulls a stray NaN or infinity.
    predictions, probabilities
        One value per row; ``probabilities`` (of the positive class) may be ``None``.
    ts
        Scoring time, default now. All rows of a request share it.
    """
    if source not in SOURCES:
        raise SluiceError(f"capture source must be one of {SOURCES}, got {source!r}")
    predictions = _per_row(predictions, len(rows), "predictions")
    if probabilities is not None:
        probabilities = _per_row(probabilities, len(rows), "probabilities")
    stamp = format_ts(ts or datetime.now(UTC))
    version = int(version)
    records: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        kept = row if fields is None else {name: row[name] for name in fields if name in row}
        record = {
            "request_id": str(request_id),
            "row": i,
            "ts": stamp,
            "model": model,
            "version": version,
            "source": source,
            "features": kept if plain_rows else _plain(kept),
            "prediction": predictions[i],
            "probability": None if probabilities is None else probabilities[i],
        }
        if len(kept) < len(row):
            record["dropped_fields"] = len(row) - len(kept)
        records.append(record)
    return records


def _per_row(values: Sequence[Any] | np.ndarray, rows: int, what: str) -> list[Any]:
    """``values`` as a plain list, checked to hold one value per row."""
    plain: list[Any] = _plain(list(values) if not hasattr(values, "tolist") else values)
    if len(plain) != rows:
        raise SluiceError(f"capture got {rows} rows but {len(plain)} {what}")
    return plain


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One record as the newline-terminated JSON line Firehose converts to a table row.

    ``features`` is JSON text and ``prediction`` text, as their columns hold them
    (:func:`~sluice.serving.capture_parquet.wire_record`); NaN becomes null.
    """
    try:
        text = json.dumps(wire_record(record), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        text = json.dumps(wire_record(_plain(record)), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


class CaptureWriter:
    """Sends capture records to Firehose (``stream_name``) or straight to S3 (``bucket_name``).

    With neither it is disabled and ``put`` does nothing. ``put`` never raises: a failure is
    logged, counted in ``failed`` and published as the ``CaptureFailures`` metric through an
    Embedded Metric Format log line (no extra AWS call on the request path).

    Parameters
    ----------
    stream_name
        Firehose delivery stream; preferred when both are given.
    bucket_name
        Capture bucket for the direct writer: one Parquet object per request and partition
        (JSON lines where pyarrow is missing).
    """

    def __init__(self, *, stream_name: str = "", bucket_name: str = "") -> None:
        self.stream_name = stream_name
        self.bucket_name = bucket_name
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CaptureWriter:
        """``SLUICE_CAPTURE_STREAM`` (Firehose) or ``SLUICE_CAPTURE_BUCKET`` (direct S3)."""
        return cls(
            stream_name=getattr(settings, "capture_stream", "") or "",
            bucket_name=settings.capture_bucket or "",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.stream_name or self.bucket_name)

    @property
    def mode(self) -> str:
        return "firehose" if self.stream_name else "s3" if self.bucket_name else "disabled"

    def put(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Send ``records``; return how many were accepted. Never raises."""
        if not records or not self.enabled:
            return 0
        try:
            if self.stream_name:
                accepted = self._put_lines([encode_line(r) for r in records])
            else:
                accepted = self._put_s3(records)
        except Exception:  # capture must never fail a scoring request
            logger.exception("capture of %d record(s) to %s failed", len(records), self.mode)
            accepted = 0
        return self._count(str(records[0].get("model", "")), len(records), accepted)

    def _count(self, model: str, total: int, accepted: int) -> int:
        self.sent += accepted
        lost = total - accepted
        if lost:
            self.failed += lost
            self._emit_failures(model, lost)
        return accepted

    def _put_lines(self, lines: Sequence[bytes]) -> int:
        """Send encoded lines to the Firehose stream, in PutRecordBatch-sized batches."""
        client = aws.client("firehose")
        accepted = 0
        for batch in _batches(lines):
            # Records Firehose rejects (throttling, a transient internal error) are retried once;
            # the normal path stays one call per batch.
            for attempt in range(2):
                response = client.put_record_batch(
                    DeliveryStreamName=self.stream_name, Records=[{"Data": data} for data in batch]
                )
                results = response.get("RequestResponses", [])
                if not int(response.get("FailedPutCount", 0)):
                    accepted += len(batch)
                    break
                failed = [
                    data for data, result in zip(batch, results, strict=False) if result.get("ErrorCode")
                ]
                accepted += len(batch) - len(failed)
                codes = sorted({r["ErrorCode"] for r in results if r.get("ErrorCode")})
                logger.warning(
                    "firehose rejected %d capture record(s) (attempt %d): %s", len(failed), attempt + 1, codes
                )
                batch = failed
        return accepted

    def _put_s3(self, records: Sequence[Mapping[str, Any]]) -> int:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        prefixes: dict[tuple[str, int, str], str] = {}  # the rows of one request share model, version and ts
        for record in records:
            where = (record["model"], record["version"], record["ts"])
            prefix = prefixes.get(where)
            if prefix is None:
                prefix = prefixes[where] = partition_prefix(where[0], where[1], parse_ts(where[2]))
            groups.setdefault(prefix, []).append(record)
        request = str(records[0].get("request_id", ""))
        accepted = 0
        for prefix, group in groups.items():
            self._put_object(prefix, request, _group_body(group))
            accepted += len(group)
        return accepted

    def _put_object(self, prefix: str, request: str, body: tuple[bytes, str]) -> None:
        name = request[:64].replace("/", "_")
        key = f"{prefix}{time.time_ns()}-{name}-{uuid.uuid4().hex[:8]}{body[1]}"
        aws.client("s3").put_object(Bucket=self.bucket_name, Key=key, Body=body[0])

    def put_frame(
        self,
        *,
        request_id: str,
        model: str,
        version: int,
        features: pd.DataFrame,
        predictions: Sequence[Any] | np.ndarray,
        probabilities: Sequence[float] | np.ndarray | None = None,
        source: str = "batch",
        ts: datetime | None = None,
    ) -> int:
        """Capture a scored frame column by column: one Parquet object, no dict per row.

        :meth:`begin_frame`, :meth:`FrameCapture.scored` and :meth:`FrameCapture.send` in one
        call. Same result as :meth:`put` of :func:`capture_records`; never raises.
        """
        with self.begin_frame(
            request_id=request_id, model=model, version=version, features=features, source=source, ts=ts
        ) as pending:
            pending.scored(predictions, probabilities)
            return pending.send()

    def begin_frame(
        self,
        *,
        request_id: str,
        model: str,
        version: int,
        features: pd.DataFrame,
        source: str = "batch",
        ts: datetime | None = None,
    ) -> FrameCapture:
        """Start capturing a frame before it is scored (the batch step's path).

        ``features`` holds the schema's columns only (pandas and pyarrow present). The features'
        JSON text is built on a worker thread while the caller scores; see :class:`FrameCapture`.
        """
        return FrameCapture(
            self,
            request_id=str(request_id),
            model=str(model),
            version=int(version),
            features=features,
            source=source,
            moment=ts or datetime.now(UTC),
        )

    @staticmethod
    def _emit_failures(model: str, count: int) -> None:
        document = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": METRIC_NAMESPACE,
                        "Dimensions": [["Model"]],
                        "Metrics": [{"Name": "CaptureFailures", "Unit": "Count"}],
                    }
                ],
            },
            "Model": str(model),
            "CaptureFailures": count,
        }
        print(json.dumps(document), flush=True)


class FrameCapture:
    """One scored frame's capture, encoded on a worker thread while the step goes on.

    Arrow's kernels and the Parquet writer release the GIL, so the encoding overlaps the
    caller's scoring and its own output write (the batch score function has 2 vCPUs at
    2,048 MB). The order of effects is kept: :meth:`send` puts the object, so a step that
    writes its output first and sends after never captures a shard it failed to store.
    Use it as a context manager (the worker stops on exit); nothing here raises.
    """

    def __init__(
        self,
        writer: CaptureWriter,
        *,
        request_id: str,
        model: str,
        version: int,
        features: pd.DataFrame,
        source: str,
        moment: datetime,
    ) -> None:
        self.writer, self.request_id, self.model, self.version = writer, request_id, model, version
        self.source, self.moment, self.rows = source, moment, len(features)
        self._pool: ThreadPoolExecutor | None = None
        self._text: Future[Any] | None = None
        self._body: Future[Any] | None = None
        if writer.enabled and self.rows:
            from sluice.serving.capture_parquet import features_json

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
            self._text = self._pool.submit(features_json, features)

    def scored(
        self,
        predictions: Sequence[Any] | np.ndarray,
        probabilities: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Add the model's answers, one per row; the object's bytes are built on the worker."""
        if self._pool is not None and self._text is not None:
            self._body = self._pool.submit(self._encode, self._text, predictions, probabilities)

    def _encode(self, text: Future[Any], predictions: Any, probabilities: Any) -> Any:
        from sluice.serving.capture_parquet import frame_table, parquet_bytes

        table = frame_table(
            request_id=self.request_id,
            ts=format_ts(self.moment),
            source=self.source,
            features=text.result(),
            predictions=predictions,
            probabilities=probabilities,
        )
        if self.writer.stream_name:
            wire = {"model": self.model, "version": self.version}
            return [_line({**row, **wire}) for row in table.to_pylist()]
        return parquet_bytes(table)

    def send(self) -> int:
        """Put the encoded rows (Firehose or one S3 object); return how many were accepted."""
        if self._body is None:
            return 0
        writer = self.writer
        try:
            body = self._body.result()
            if writer.stream_name:
                accepted = writer._put_lines(body)
            else:
                prefix = partition_prefix(self.model, self.version, self.moment)
                writer._put_object(prefix, self.request_id, (body, PARQUET_SUFFIX))
                accepted = self.rows
        except Exception:  # capture must never fail a scoring run
            logger.exception("capture of %d row(s) to %s failed", self.rows, writer.mode)
            accepted = 0
        finally:
            self._body = None
        return writer._count(self.model, self.rows, accepted)

    def __enter__(self) -> FrameCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _line(row: Mapping[str, Any]) -> bytes:
    return (json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _group_body(group: Sequence[Mapping[str, Any]]) -> tuple[bytes, str]:
    """One partition's records as a Parquet object, or JSON lines where pyarrow is missing."""
    from sluice.serving.capture_parquet import parquet_bytes, rows_table

    try:
        import pyarrow  # noqa: F401
    except ImportError:  # the zip scoring flavour: no pyarrow; the reader reads both
        return b"".join(encode_line(r) for r in group), ".jsonl"
    return parquet_bytes(rows_table(wire_record(r) for r in group)), PARQUET_SUFFIX


def _batches(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Group lines into PutRecordBatch calls within the record-count and byte limits."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > MAX_RECORD_BYTES:
            logger.warning("capture record of %d bytes exceeds the Firehose limit; dropped", len(line))
            continue
        if batch and (len(batch) == MAX_BATCH_RECORDS or size + len(line) > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch
