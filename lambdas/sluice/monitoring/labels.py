"""Ground-truth labels for concept drift: checked, stored, read back.

Labels arrive later than the predictions (``POST /labels`` or a CSV / JSON-lines file dropped
under ``labels/incoming/<model>/``) and are stored as JSON lines under
``labels/model=<m>/dt=YYYY-MM-DD/`` in the capture bucket, one line per label:
``{"request_id", "row", "label", "received_at"}``. The zip labels function imports this module
alone: it needs boto3 only, no pandas, numpy or scipy.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.serving.capture import format_ts
from sluice.settings import Settings

LABELS_PREFIX = "labels"
LABELS_INCOMING = "labels/incoming/"


def _label_value(value: Any, where: str) -> Any:
    if isinstance(value, bool | int | float | str) and value == value and value != "":
        return value
    raise SluiceError(f"{where}: 'label' must be a number, a string or a boolean, got {value!r}")


def validate_labels(labels: Any, *, where: str = "labels") -> list[dict[str, Any]]:
    """``[{"request_id", "label", "row"?}]`` checked and normalised (``row`` defaults to 0)."""
    if not isinstance(labels, list) or not labels:
        raise SluiceError(f"'{where}' must be a non-empty list of {{request_id, label}} objects")
    out = []
    for i, item in enumerate(labels):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise SluiceError(f"{at} must be an object with 'request_id' and 'label'")
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise SluiceError(f"{at}: 'request_id' must be a non-empty string")
        if "label" not in item:
            raise SluiceError(f"{at}: 'label' is missing")
        row = item.get("row", 0)
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise SluiceError(f"{at}: 'row' must be an integer >= 0, got {row!r}")
        out.append({"request_id": request_id, "row": row, "label": _label_value(item["label"], at)})
    return out


def _check_model(model: Any, known: Collection[str] | None) -> str:
    if not isinstance(model, str) or not model or "/" in model or "=" in model:
        raise SluiceError(f"'model' must be a model name, got {model!r}")
    if known is not None and model not in known:
        served = ", ".join(sorted(known)) or "none"
        raise SluiceError(f"'model': {model!r} is not a model of this stage (it takes labels for: {served})")
    return model


def ingest_labels(
    settings: Settings,
    *,
    model: Any,
    labels: Any,
    now: datetime | None = None,
    known_models: Collection[str] | None = None,
) -> int:
    """Store ground-truth labels for captured requests; returns how many were stored.

    ``model`` and ``labels`` are checked here (a ``SluiceError`` names the bad field), so they
    may come straight from a request body. With ``known_models``, labels of any other model are
    refused before anything is stored (labels feed a model's concept-drift alarm).

    They go to ``labels/model=<model>/dt=<day received>/<time>-<uuid>.jsonl`` in the capture
    bucket, one JSON line each: ``{"request_id", "row", "label", "received_at"}``.
    """
    model = _check_model(model, known_models)
    clean = validate_labels(labels)
    settings.require("capture_bucket")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    received = format_ts(moment)
    body = "".join(json.dumps({**item, "received_at": received}) + "\n" for item in clean)
    key = f"{LABELS_PREFIX}/model={model}/dt={moment:%Y-%m-%d}/{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}.jsonl"
    aws.client("s3").put_object(Bucket=settings.capture_bucket, Key=key, Body=body.encode())
    return len(clean)


def _csv_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    return {"true": True, "false": False}.get(lowered, text)


def _csv_labels(text: str, key: str, models: set[str]) -> list[Any]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"request_id", "label"} - set(reader.fieldnames or ())
    if missing:
        raise SluiceError(f"label file {key}: CSV header lacks {sorted(missing)}")
    labels: list[Any] = []
    for line in reader:
        item: dict[str, Any] = {"request_id": line["request_id"], "label": _csv_value(line["label"])}
        if line.get("row") not in (None, ""):
            item["row"] = _csv_value(line["row"])
        if line.get("model"):
            models.add(line["model"])
        labels.append(item)
    return labels


def _json_lines_labels(text: str, key: str, models: set[str]) -> list[Any]:
    labels: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise SluiceError(f"label file {key}: line {number} is not JSON") from None
        if isinstance(item, Mapping) and item.get("model"):
            models.add(str(item["model"]))
            item = {k: v for k, v in item.items() if k != "model"}
        labels.append(item)
    return labels


def parse_label_file(body: bytes, *, key: str) -> tuple[str | None, list[Any]]:
    """Labels of a dropped file: CSV (header ``request_id,label[,row][,model]``) or JSON lines.

    Returns the model named in the file (``model`` column or field, if any) and the raw labels,
    unchecked (see :func:`validate_labels`).
    """
    text = body.decode("utf-8-sig")
    models: set[str] = set()
    parse = _csv_labels if key.endswith(".csv") else _json_lines_labels
    labels = parse(text, key, models)
    if len(models) > 1:
        raise SluiceError(f"label file {key} names several models {sorted(models)}; use one file per model")
    return (models.pop() if models else None), labels


def ingest_label_object(
    settings: Settings,
    *,
    bucket: str,
    key: str,
    now: datetime | None = None,
    known_models: Collection[str] | None = None,
) -> int:
    """Ingest a label file dropped at ``labels/incoming/<model>/<file>.csv|.jsonl``.

    ``now`` and ``known_models`` are as in :func:`ingest_labels`.

    Keys outside ``labels/incoming/`` (for example the normalised labels this module writes) are
    ignored and return 0, so an S3 notification on ``labels/`` cannot loop.
    """
    if not key.startswith(LABELS_INCOMING):
        return 0
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    named, labels = parse_label_file(body, key=key)
    parts = key[len(LABELS_INCOMING) :].split("/")
    model = named or (parts[0] if len(parts) > 1 else None)
    if not model:
        raise SluiceError(f"label file {key}: put it under labels/incoming/<model>/ or add a 'model' column")
    return ingest_labels(
        settings, model=model, labels=validate_labels(labels, where=key), now=now, known_models=known_models
    )


def iter_labels(bucket: str, *, model: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Stored labels of ``model`` received on the days from ``start`` to ``end`` (inclusive)."""
    client = aws.client("s3")
    paginator = client.get_paginator("list_objects_v2")
    day = start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        prefix = f"{LABELS_PREFIX}/model={model}/dt={day:%Y-%m-%d}/"
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                for line in body.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        day += timedelta(days=1)
