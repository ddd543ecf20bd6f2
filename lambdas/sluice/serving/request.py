"""The scoring request contract: parse a request body, refuse a bad one with a 4xx naming the field.

Request (``POST``, ``application/json``)::

    {"instances": [{"age": 42, "plan": "gold", ...}, ...]}

One row is a list of one instance. A request holds at most :data:`MAX_INSTANCES` instances and
:data:`MAX_BODY_BYTES` bytes, which keeps request and response under Lambda's 6 MB synchronous
payload limit. A refused request raises :class:`RequestError`, whose ``to_dict`` is the error
response body.

Besides the standard library it needs only :class:`~sluice.models.validation.FeatureError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sluice.errors import SluiceError
from sluice.models.validation import FeatureError
from sluice.names import MAX_INSTANCES

# Lambda's synchronous payload limit is 6 MB for the event (body + headers) and the response.
MAX_BODY_BYTES = 5 * 1024 * 1024
# Errors listed in a 400 response, so one bad batch cannot produce a huge body.
MAX_LISTED_ERRORS = 10


class RequestError(SluiceError):
    """A scoring request that cannot be scored; ``errors`` lists each problem for the response.

    Each item is ``{"field": "instances[3].age", "code": "type", "message": "..."}``.
    """

    def __init__(self, message: str, *, errors: Sequence[Mapping[str, Any]] = (), status: int = 400) -> None:
        super().__init__(message, status=status)
        self.errors = [dict(e) for e in errors]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": str(self), "status": self.status}
        if self.errors:
            body["errors"] = self.errors
        return body


def request_error(field: str, code: str, message: str, *, status: int = 400) -> RequestError:
    """A :class:`RequestError` with one problem, naming ``field``."""
    text = f"{field}: {message}"
    return RequestError(text, errors=[{"field": field, "code": code, "message": text}], status=status)


def parse_request(body: str | bytes | Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The ``instances`` of a scoring request body.

    Raises
    ------
    RequestError
        400 naming ``body`` (empty, malformed JSON, not an object, unknown fields) or
        ``instances`` (absent, not a list, empty); 413 when the body or the batch is too large.
    """
    if body is None or (isinstance(body, str | bytes) and not body.strip()):
        raise request_error("body", "empty", 'empty request; expected {"instances": [{...}, ...]}')
    if isinstance(body, str | bytes):
        size = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", "surrogatepass"))
        if size > MAX_BODY_BYTES:
            raise request_error(
                "body", "too_large", f"{size} bytes is more than the limit of {MAX_BODY_BYTES}", status=413
            )
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, too many digits, nesting
            raise request_error("body", "malformed_json", f"malformed JSON ({_short(err)})") from None
    if not isinstance(body, Mapping):
        raise request_error(
            "body", "type", f'expected a JSON object {{"instances": [...]}}, got {_json_type(body)}'
        )
    extra = sorted(str(k) for k in body if k != "instances")
    if extra:
        raise request_error(
            "body", "unknown_field", f"unknown field(s) {', '.join(map(repr, extra[:5]))}; only 'instances'"
        )
    if "instances" not in body:
        raise request_error("instances", "missing", "required (a list of feature objects)")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise request_error("instances", "type", f"expected a list of objects, got {_json_type(instances)}")
    if not instances:
        raise request_error("instances", "empty", "expected at least one instance")
    if len(instances) > MAX_INSTANCES:
        raise request_error(
            "instances",
            "too_large",
            f"{len(instances)} instances is more than the limit of {MAX_INSTANCES} per request",
            status=413,
        )
    return instances


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def feature_errors(errors: Sequence[FeatureError]) -> RequestError:
    """One 400 error for schema violations; the message names the first offending fields."""
    items = []
    for e in errors[:MAX_LISTED_ERRORS]:
        field = str(e).split(":", 1)[0] if e.feature or e.code == "record" else "instances"
        items.append({"field": field, "feature": e.feature, "code": e.code, "message": str(e)})
    message = "; ".join(str(e) for e in errors[:3])
    if len(errors) > 3:
        message += f"; and {len(errors) - 3} more problem(s)"
    return RequestError(message, errors=items)
