"""Ground-truth labels for concept drift.

Triggers: API Gateway REST proxy ``POST /labels`` with body
``{"model": "<name>", "labels": [{"request_id": "...", "label": ..., "row": 0}]}`` (202 with the
count; 400 naming the field on bad input), and S3 object-created events (S3 notifications or
EventBridge ``Object Created``) for CSV/JSON-lines files dropped under ``labels/incoming/<model>/``.

Env: SLUICE_CAPTURE_BUCKET (labels are stored next to the captured predictions),
SLUICE_LABEL_MODELS (comma-separated: the stage's models; labels of any other model are refused
with a 400 naming ``model``, and with none listed every label is refused).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.errors import SluiceError
from sluice.monitoring.labels import ingest_label_object, ingest_labels
from sluice.names import MAX_LABELS, QUALITY_NAMESPACE
from sluice.settings import Settings

logger = Logger()
metrics = Metrics(namespace=QUALITY_NAMESPACE)


def _known_models(settings: Settings) -> frozenset[str]:
    return frozenset(name.strip() for name in settings.label_models.split(",") if name.strip())


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def _api(event: APIGatewayProxyEvent, settings: Settings) -> dict[str, Any]:
    raw = event.body or ""
    try:
        text = base64.b64decode(raw, validate=True).decode() if event.is_base64_encoded else raw
        payload = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise SluiceError("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise SluiceError("request body must be an object with 'model' and 'labels'")
    labels = payload.get("labels")
    if isinstance(labels, list) and len(labels) > MAX_LABELS:
        raise SluiceError(f"'labels' holds {len(labels)} items; send at most {MAX_LABELS} per request")
    count = ingest_labels(
        settings, model=payload.get("model"), labels=labels, known_models=_known_models(settings)
    )
    metrics.add_dimension(name="Model", value=payload["model"])
    metrics.add_metric(name="LabelsReceived", unit=MetricUnit.Count, value=count)
    return _response(202, {"model": payload["model"], "accepted": count})


def _objects(event: dict[str, Any]) -> list[tuple[str, str]]:
    if event.get("source") == "aws.s3":  # EventBridge "Object Created"
        detail = event.get("detail") or {}
        return [(detail["bucket"]["name"], detail["object"]["key"])]
    return [(r.s3.bucket.name, unquote_plus(r.s3.get_object.key)) for r in S3Event(event).records]


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    if event.get("source") == "aws.s3" or "Records" in event:
        results: dict[str, int | str] = {}
        for bucket, key in _objects(event):
            try:
                results[key] = ingest_label_object(
                    settings, bucket=bucket, key=key, known_models=_known_models(settings)
                )
            except SluiceError as error:  # a bad file must not be retried forever
                logger.warning("label file rejected", extra={"key": key, "error": str(error)})
                metrics.add_metric(name="LabelFilesRejected", unit=MetricUnit.Count, value=1)
                results[key] = str(error)
            else:
                metrics.add_metric(name="LabelFiles", unit=MetricUnit.Count, value=1)
        logger.info("label files", extra={"results": results})
        return {"files": results}
    try:
        return _api(APIGatewayProxyEvent(event), settings)
    except SluiceError as error:
        metrics.add_metric(name="LabelRequestsRejected", unit=MetricUnit.Count, value=1)
        return _response(error.status, {"error": str(error)})
