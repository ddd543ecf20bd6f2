"""The local API Gateway's request validator: a body against a method's request model.

:func:`body_error` parses the body and validates it with a draft-04 JSON Schema validator
(one per model, cached). Its answer, the gateway's ``$context.error.validationErrorString``,
is bounded whatever the body: at most :data:`MAX_ERRORS` reasons (each the failing value's
path and jsonschema's reason, values shortened, never the body itself) and the count of the
rest, :data:`MAX_REASON` characters in all. A body nested too deeply for the parser or the
validator is a reason like any other (a 400), not a ``RecursionError``.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

MAX_ERRORS = 20
#: Errors counted before the count says "or more" (a 10 MB body could hold millions).
MAX_COUNTED = 1000
MAX_REASON = 2500
_MAX_ONE = 160
_TOO_DEEP = "the JSON is nested too deeply"
#: Reasons that name the schema's terms, never the value (safe to show as jsonschema words them).
_SAFE = {"required", "additionalProperties", "dependencies"}


def body_error(schema: str, body: bytes) -> str | None:
    """Why ``body`` fails ``schema`` (JSON text), bounded; ``None`` when it passes."""
    try:
        document = json.loads(body or b"null")
    except RecursionError:
        return _TOO_DEEP
    except ValueError as err:
        return _clip(f"body is not JSON: {err}", _MAX_ONE)
    try:
        errors = list(itertools.islice(_validator(schema).iter_errors(document), MAX_COUNTED + 1))
    except RecursionError:
        return _TOO_DEEP
    if not errors:
        return None
    reasons = [_reason(_best(error)) for error in errors[:MAX_ERRORS]]
    text = "; ".join(reasons)
    if len(errors) > 1:
        counted = f"{MAX_COUNTED} or more" if len(errors) > MAX_COUNTED else str(len(errors))
        shown = f", the first {MAX_ERRORS} shown" if len(errors) > MAX_ERRORS else ""
        text = f"{_clip(text, MAX_REASON - 60)} ({counted} errors{shown})"
    return _clip(text, MAX_REASON)


@functools.lru_cache(maxsize=64)
def _validator(schema: str) -> Any:
    """A draft-04 validator per request model (building one costs more than validating a body)."""
    import jsonschema

    return jsonschema.Draft4Validator(json.loads(schema))


def _best(error: Any) -> Any:
    """The most telling error inside ``error`` (an ``anyOf`` failure's best branch, say)."""
    import jsonschema

    return jsonschema.exceptions.best_match([error]) if error.context else error


def _reason(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator in _SAFE or _is_short(error.instance):
        said = str(error.message)
    else:  # the message would carry the value (a whole array, a long string): describe it instead
        said = f"{_describe(error.instance)} fails {error.validator!s} {_clip(json.dumps(error.validator_value), 60)}"
    where = where if len(where) <= 80 else "…" + where[-79:]
    return _clip(f"{where}: {said}" if where else said, _MAX_ONE)


def _is_short(value: Any) -> bool:
    if isinstance(value, dict | list):
        return False
    return not isinstance(value, str) or len(value) <= 40


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} properties"
    return f"a string of {len(value)} characters" if isinstance(value, str) else type(value).__name__


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
