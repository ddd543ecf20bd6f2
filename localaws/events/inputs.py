"""What EventBridge sends a target: the event shaped by the target's Input settings.

``Input`` is sent as is, ``InputPath`` selects part of the event, ``InputTransformer`` fills
its template; Step Functions targets get a deterministic execution name (:func:`execution_name`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from typing import Any

from sluice.errors import SluiceError

#: Keys of a Step Functions target's input that name the execution (first found wins).
EXECUTION_NAME_KEYS: tuple[str, ...] = ("executionName", "execution_name")


def target_input(target: dict[str, Any], event: dict[str, Any], *, rule_name: str = "") -> str:
    """The text EventBridge sends to ``target`` for ``event``.

    ``Input`` is sent as is; ``InputPath`` selects part of the event; ``InputTransformer``
    fills ``<name>`` placeholders of its template from ``InputPathsMap``. Inside a JSON string a
    placeholder becomes the raw text, elsewhere the JSON value, as EventBridge does. Without
    any of these the whole event is sent.
    """
    event = normalise_event(event)
    if target.get("Input") is not None:
        return str(target["Input"])
    if target.get("InputPath"):
        return json.dumps(json_path(event, target["InputPath"]))
    transformer = target.get("InputTransformer")
    if transformer:
        values = {
            name: json_path(event, path) for name, path in (transformer.get("InputPathsMap") or {}).items()
        }
        values.setdefault("aws.events.event.json", event)
        values.setdefault("aws.events.event", event)
        values.setdefault("aws.events.event.ingestion-time", event.get("ingestion-time"))
        values.setdefault("aws.events.rule-name", rule_name)
        return fill_template(transformer["InputTemplate"], values)
    return json.dumps(event)


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` whose ``time`` is ISO 8601 text (moto stores epoch seconds)."""
    out = dict(event)
    when = out.get("time")
    if isinstance(when, int | float):
        out["time"] = _iso(dt.datetime.fromtimestamp(float(when), dt.UTC))
    elif isinstance(when, dt.datetime):
        out["time"] = _iso(when)
    return out


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def fill_template(template: str, values: dict[str, Any]) -> str:
    """Replace ``<name>`` placeholders: raw text inside JSON strings, JSON values outside."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "\\" and in_string:
            out.append(template[i : i + 2])
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
            out.append(ch)
            i += 1
            continue
        match = _PLACEHOLDER.match(template, i) if ch == "<" else None
        if match and match.group(1) in values:
            value = values[match.group(1)]
            if in_string:
                text = value if isinstance(value, str) else json.dumps(value)
                out.append(json.dumps(text)[1:-1])
            else:
                out.append(json.dumps(value))
            i = match.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]")


def json_path(document: Any, path: str) -> Any:
    """Resolve the simple JSONPath EventBridge accepts (``$``, ``$.a.b``, ``$.a[0]``, ``$['a-b']``).

    Returns None when the path does not exist.
    """
    if not path.startswith("$"):
        raise SluiceError(f"InputPath {path!r} must start with '$'")
    node = document
    pos = 1
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            raise SluiceError(f"unsupported JSONPath {path!r} at position {pos}")
        key, index, quoted = match.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            node = node[int(index)]
        else:
            name = key if key is not None else quoted
            if not isinstance(node, dict) or name not in node:
                return None
            node = node[name]
        pos = match.end()
    return node


_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(payload: str, *, event: dict[str, Any], rule: str, target_id: str) -> str:
    """The Step Functions execution name for one delivery (at most 80 characters).

    The input's ``executionName`` (or ``execution_name``) when present, so duplicate events
    collapse into one execution; else the event id plus a short hash of rule and target, so
    a retried delivery of one event is idempotent while two rules still start two runs.
    """
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in EXECUTION_NAME_KEYS:
            if isinstance(parsed.get(key), str) and parsed[key]:
                return _NAME_OK.sub("-", parsed[key])[:80]
    digest = hashlib.sha256(f"{rule}/{target_id}".encode()).hexdigest()[:8]
    return _NAME_OK.sub("-", f"{event.get('id') or uuid.uuid4()}-{digest}")[:80]


def _iso(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
