"""Model endpoint. Trigger: API Gateway REST proxy (``POST /predict``), through the ``live`` alias.

Env: SLUICE_MODEL_NAME, SLUICE_MODEL_VERSION, SLUICE_MODEL_FLAVOUR (``sklearn`` | ``python`` in
the container image, ``onnx`` in the zip; a python version's class comes from SLUICE_PROJECT,
the project baked into the image),
SLUICE_MODEL_ARTIFACTS and SLUICE_MODEL_APPROVAL (every artifact's sha256 and the approval
signature over them, so a cold start skips the registry table), bound per Lambda version by
``sluice endpoint deploy``; SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_APPROVAL_KEY
(default: the alias derived from the table); SLUICE_CAPTURE_STREAM (Firehose) or SLUICE_CAPTURE_BUCKET (direct S3) for data capture.

Capture is sent after the response, by an internal Lambda extension registered at import
(:mod:`sluice.serving.extension`), so the Firehose call is not on the caller's path; outside a
Lambda runtime it is sent inline before returning.

Responses are JSON. A request the client got wrong is a 4xx naming the field; a model that
cannot be loaded is a 503 (counted in ``Errors``, which the canary alarm watches). Metrics go
out as Embedded Metric Format, namespace ``Sluice/Endpoint``: Invocations, Rows, Latency,
Errors, ClientErrors and the prediction distribution (PositiveProbability, PredictedPositive or
PredictionMean) with dimensions Model and Version, and Errors, Latency and PositiveProbability
again with dimension Model alone, for the alarms.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from sluice.errors import SluiceError
from sluice.names import ENDPOINT_NAMESPACE
from sluice.serving.capture import CaptureWriter, capture_records
from sluice.serving.extension import AfterResponse
from sluice.serving.request import RequestError
from sluice.serving.scoring import CHAMPION_ALIAS, Scored, Scorer, get_scorer
from sluice.settings import Settings

logger = Logger()
# Per model version (A/B evidence, the local canary's health checks): dimensions Model, Version.
metrics = Metrics(namespace=ENDPOINT_NAMESPACE)
# Per model, whatever version served (the alarms of the CodeDeploy deployment group, which
# cannot follow a changing Version dimension): dimension Model. Its own state, its own EMF line.
model_metrics = EphemeralMetrics(namespace=ENDPOINT_NAMESPACE)

_state: dict[str, Any] = {}


def _settings() -> Settings:
    # The environment of a Lambda version never changes: read it once per process.
    found: Settings | None = _state.get("settings")
    if found is None:
        found = _state["settings"] = Settings.from_env()
    return found


def _capture(settings: Settings) -> CaptureWriter:
    found: CaptureWriter | None = _state.get("capture")
    if found is None:
        found = _state["capture"] = CaptureWriter.from_settings(settings)
    return found


# Registered during init (this import), as the Extensions API requires; None without capture or
# outside a Lambda runtime.
after_response = AfterResponse.start("sluice-capture") if _capture(_settings()).enabled else None


def _response(status: int, body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {
            "Content-Type": "application/json",
            "X-Sluice-Model": settings.model_name,
            "X-Sluice-Model-Version": settings.model_version,
        },
        "body": json.dumps(body, separators=(",", ":")),
    }


def _body(event: dict[str, Any]) -> str | bytes | None:
    if not isinstance(event, dict):
        raise RequestError(
            "event: expected an API Gateway proxy event (an object with a body)",
            errors=[{"field": "event", "code": "type", "message": "not an API Gateway proxy event"}],
        )
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                "body: not valid base64 although isBase64Encoded is true",
                errors=[{"field": "body", "code": "encoding", "message": "body is not valid base64"}],
            ) from None
    return body


def _request_id(event: dict[str, Any], context: Any) -> str:
    context_block = event.get("requestContext") if isinstance(event, dict) else None
    found = context_block.get("requestId") if isinstance(context_block, dict) else None
    return str(found or getattr(context, "aws_request_id", "") or "")


def _both(name: str, unit: MetricUnit, value: float) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)
    model_metrics.add_metric(name=name, unit=unit, value=value)


def _record_prediction_metrics(scored: Scored) -> None:
    rows = len(scored.predictions)
    metrics.add_metric(name="Rows", unit=MetricUnit.Count, value=rows)
    positive = scored.positive_probabilities
    if positive is not None:
        # The prediction distribution, per version: what A/B comparisons and the quality alarm watch.
        _both("PositiveProbability", MetricUnit.NoUnit, float(positive.mean()))
        metrics.add_metric(
            name="PredictedPositive", unit=MetricUnit.Count, value=int((positive >= 0.5).sum())
        )
    elif scored.predictions.dtype.kind in "fiu":
        metrics.add_metric(
            name="PredictionMean", unit=MetricUnit.NoUnit, value=float(scored.predictions.mean())
        )


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        response: dict[str, Any] = _handle(event, context)  # the powertools decorators return Any
        return response
    finally:
        # Last, after the metrics are printed: from here the extension thread competes for the GIL.
        if after_response is not None:
            after_response.done()


@metrics.log_metrics
@model_metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    settings = _settings()
    request_id = _request_id(event, context)
    metrics.add_dimension(name="Model", value=settings.model_name or "unbound")
    metrics.add_dimension(name="Version", value=settings.model_version or CHAMPION_ALIAS)
    model_metrics.add_dimension(name="Model", value=settings.model_name or "unbound")
    _both("Invocations", MetricUnit.Count, 1)
    try:
        scorer = get_scorer(
            settings.model_name,
            settings.model_version,
            settings.model_flavour or "sklearn",
            manifest=settings.model_artifacts,
            approval=settings.model_approval,
        )
    except Exception as err:  # the client cannot fix this: 503, never a stack trace
        logger.exception("model %s version %s cannot be loaded", settings.model_name, settings.model_version)
        _both("Errors", MetricUnit.Count, 1)
        message = (
            str(err) if isinstance(err, SluiceError) else f"{type(err).__name__} while loading the model"
        )
        body = {"error": f"model unavailable: {message}", "status": 503, "request_id": request_id}
        return _response(503, body, settings)
    scored = _score(scorer, event, request_id, settings)
    if isinstance(scored, dict):  # the error response
        return scored
    _capture_after_response(scored, request_id, settings, fields=scorer.schema.names)
    _record_prediction_metrics(scored)
    _both("Latency", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
    return _response(200, scored.to_dict(), settings)


def _score(
    scorer: Scorer, event: dict[str, Any], request_id: str, settings: Settings
) -> Scored | dict[str, Any]:
    """The scored request, or the 4xx/500 response that refuses it."""
    try:
        return scorer.score(_body(event), request_id=request_id)
    except RequestError as err:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
        return _response(err.status, {**err.to_dict(), "request_id": request_id}, settings)
    except SluiceError as err:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
        return _response(
            err.status, {"error": str(err), "status": err.status, "request_id": request_id}, settings
        )
    except Exception:
        logger.exception("scoring failed")
        _both("Errors", MetricUnit.Count, 1)
        body = {"error": "internal error while scoring", "status": 500, "request_id": request_id}
        return _response(500, body, settings)


def _capture_after_response(
    scored: Scored, request_id: str, settings: Settings, *, fields: tuple[str, ...]
) -> None:
    """Queue the capture records of the schema ``fields`` for after the response (inline outside Lambda)."""
    writer = _capture(settings)
    if not writer.enabled:
        return
    ts = datetime.now(UTC)  # scoring time, whenever the records are sent

    def capture() -> None:
        writer.put(
            capture_records(
                request_id=request_id,
                model=scored.model,
                version=scored.version,
                rows=scored.instances,
                predictions=scored.predictions,
                probabilities=scored.positive_probabilities,
                source="endpoint",
                ts=ts,
                fields=fields,
            )
        )

    if after_response is not None:
        after_response.defer(capture)
    else:
        capture()
