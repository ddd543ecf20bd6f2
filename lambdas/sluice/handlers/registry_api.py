"""Registry API: list, describe, history and approve/reject model versions.

Trigger: API Gateway REST proxy (IAM auth), routes defined in ``infra/constructs/registry_api.py``::

    GET  /models
    GET  /models/{name}
    GET  /models/{name}/history
    GET  /models/{name}/versions/{version}
    POST /models/{name}/versions/{version}/approve   {"comment": "..."}
    POST /models/{name}/versions/{version}/reject    {"comment": "..."}

Errors a caller can cause answer 4xx with ``{"error": "<message>"}``; the decision's actor is
the caller's IAM identity from the request context.

Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.errors import SluiceError
from sluice.registry.records import VersionRecord
from sluice.registry.store import ModelRegistry
from sluice.settings import Settings

logger = Logger()
app = APIGatewayRestResolver()

_lock = threading.Lock()
_registries: dict[tuple[str, str], ModelRegistry] = {}


def registry() -> ModelRegistry:
    """The registry named by the environment, reused across warm invocations."""
    settings = Settings.from_env()
    key = (settings.registry_table, settings.registry_bucket)
    with _lock:
        if key not in _registries:
            _registries[key] = ModelRegistry.from_settings(settings)
        return _registries[key]


@app.get("/models")
def list_models() -> dict[str, Any]:
    return {"models": registry().list_models()}


@app.get("/models/<name>")
def describe_model(name: str) -> dict[str, Any]:
    reg = registry()
    versions = reg.list_versions(name)
    return {
        "name": name,
        "aliases": reg.aliases(name),
        "versions": [_summary(r) for r in versions],
    }


@app.get("/models/<name>/history")
def history(name: str) -> dict[str, Any]:
    return {"name": name, "events": registry().history(name)}


@app.get("/models/<name>/versions/<version>")
def describe_version(name: str, version: str) -> dict[str, Any]:
    return registry().get(name, version=_version(version)).to_dict()


@app.post("/models/<name>/versions/<version>/approve")
def approve(name: str, version: str) -> dict[str, Any]:
    return registry().approve(name, _version(version), actor=_actor(), reason=_comment()).to_dict()


@app.post("/models/<name>/versions/<version>/reject")
def reject(name: str, version: str) -> dict[str, Any]:
    return registry().reject(name, _version(version), actor=_actor(), reason=_comment()).to_dict()


# powertools' exception_handler is not annotated, so mypy cannot see that it returns the function.
@app.exception_handler(SluiceError)  # type: ignore[untyped-decorator]
def user_error(err: SluiceError) -> Response[str]:
    logger.info("request refused", extra={"status": err.status, "error": str(err)})
    return Response(
        status_code=err.status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": str(err)}),
    )


@app.not_found
def not_found(_: Exception) -> Response[str]:
    event = app.current_event
    return Response(
        status_code=404,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": f"no route {event.http_method} {event.path}"}),
    )


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


def _summary(record: VersionRecord) -> dict[str, Any]:
    return {
        "version": record.version,
        "status": record.status,
        "metrics": record.metrics,
        "created_at": record.created_at,
        "parent_version": record.parent_version,
        "flavours": list(record.flavours),
    }


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SluiceError(f"version must be a positive integer; got {text!r}")
    return int(text)


def _actor() -> str:
    identity = app.current_event.request_context.identity
    return identity.user_arn or identity.caller or identity.user or "unknown-caller"


def _comment() -> str:
    event = app.current_event
    raw = event.body or ""
    if not raw:
        return ""
    try:
        text = base64.b64decode(raw, validate=True).decode() if event.is_base64_encoded else raw
        body = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise SluiceError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SluiceError('request body must be an object like {"comment": "..."}')
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise SluiceError("comment must be a string")
    return comment
