"""State machine definitions moto's ASL grammar rejects, rewritten; the Map settings taken out.

moto 5.2.5's grammar rejects ``ItemBatcher``, ResultWriter's ``WriterConfig``, an integer
``ToleratedFailurePercentage`` and EXPRESS children of a Distributed Map, all valid in AWS.
:func:`normalise_definition` rewrites a definition before moto parses it and keeps what it took
out per machine and state; the wrappers below apply it when the execution runs.
"""

from __future__ import annotations

import json
from typing import Any

# Map settings taken out of definitions (ItemBatcher, ResultWriter's WriterConfig):
# (account, region, machine, state) -> {"ItemBatcher": {...}, "WriterConfig": {...}}
_MAP_EXTRAS: dict[tuple[str, str, str, str], dict[str, Any]] = {}


def normalise_definition(definition: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """Rewrite what moto's ASL grammar rejects but AWS accepts; return it and the ItemBatchers taken out.

    Map states lose ``ItemBatcher`` (returned by state name, applied at run time), an integer
    ``ToleratedFailurePercentage`` becomes a decimal, and a Distributed Map's ``EXPRESS``
    children become ``STANDARD``. Definitions that are not JSON are returned unchanged.
    """
    try:
        document = json.loads(definition)
    except (TypeError, ValueError):
        return definition, {}
    extras: dict[str, dict[str, Any]] = {}
    changed = _normalise_states(document, extras)
    return (json.dumps(document) if changed else definition), extras


def _normalise_states(node: Any, extras: dict[str, dict[str, Any]]) -> bool:
    if not isinstance(node, dict):
        return False
    changed = False
    for name, state in (node.get("States") or {}).items():
        if not isinstance(state, dict):
            continue
        if state.get("Type") == "Map":
            if "ItemBatcher" in state:
                extras.setdefault(name, {})["ItemBatcher"] = state.pop("ItemBatcher") or {}
                changed = True
            writer = state.get("ResultWriter")
            if isinstance(writer, dict) and "WriterConfig" in writer:
                extras.setdefault(name, {})["WriterConfig"] = writer.pop("WriterConfig") or {}
                changed = True
            if isinstance(state.get("ToleratedFailurePercentage"), int):
                state["ToleratedFailurePercentage"] = float(state["ToleratedFailurePercentage"])
                changed = True
            reader = (state.get("ItemReader") or {}).get("ReaderConfig") or {}
            if reader.get("InputType") == "JSONL":
                reader["InputType"] = "JSON"  # the JSON reader below also reads JSON Lines
                changed = True
            config = (state.get("ItemProcessor") or {}).get("ProcessorConfig") or {}
            if config.get("ExecutionType") == "EXPRESS":
                config["ExecutionType"] = "STANDARD"
                changed = True
            for key in ("ItemProcessor", "Iterator"):
                changed = _normalise_states(state.get(key), extras) or changed
        for branch in state.get("Branches") or []:
            changed = _normalise_states(branch, extras) or changed
    return changed


def remember_extras(backend: Any, machine: str, extras: dict[str, dict[str, Any]]) -> None:
    for key in [k for k in _MAP_EXTRAS if k[:3] == (backend.account_id, backend.region_name, machine)]:
        del _MAP_EXTRAS[key]
    for state, settings in extras.items():
        _MAP_EXTRAS[(backend.account_id, backend.region_name, machine, state)] = settings


def extras_for(env: Any, state: str) -> dict[str, Any]:
    """The Map settings taken out of the running machine's definition for ``state``."""
    machine = env.states.context_object.context_object_data["StateMachine"]
    arn = machine["Id"].split(":")
    return _MAP_EXTRAS.get((arn[4], arn[3], machine["Name"], state), {})


def batch_items(items: list[Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Group Map items as ``ItemBatcher`` does: ``{"Items": [...], "BatchInput": {...}}`` each."""
    size = int(settings.get("MaxItemsPerBatch") or len(items) or 1)
    batch_input = settings.get("BatchInput")
    batches = []
    for start in range(0, len(items), max(size, 1)):
        batch: dict[str, Any] = {"Items": items[start : start + size]}
        if batch_input is not None:
            batch["BatchInput"] = batch_input
        batches.append(batch)
    return batches


def wrap_create(original: Any) -> Any:
    def create_state_machine(
        self: Any, name: str, definition: str, roleArn: str, *args: Any, **kwargs: Any
    ) -> Any:
        definition, extras = normalise_definition(definition)
        machine = original(self, name, definition, roleArn, *args, **kwargs)
        remember_extras(self, name, extras)
        return machine

    return create_state_machine


def wrap_update(original: Any) -> Any:
    def update_state_machine(self: Any, arn: str, definition: Any = None, *args: Any, **kwargs: Any) -> Any:
        extras: dict[str, dict[str, Any]] | None = None
        if definition is not None:
            definition, extras = normalise_definition(definition)
        machine = original(self, arn, definition, *args, **kwargs)
        if extras is not None:
            remember_extras(self, machine.name, extras)
        return machine

    return update_state_machine


def wrap_map_run(original: Any) -> Any:
    def _map_run(self: Any, env: Any, eval_input: Any) -> None:
        settings = extras_for(env, eval_input.state_name).get("ItemBatcher")
        if settings is not None:
            items = env.stack.pop()
            env.stack.append(batch_items(items, settings))
        original(self, env, eval_input)

    return _map_run


def wrap_json_items(original: Any) -> Any:
    def _eval_body(self: Any, env: Any) -> None:
        body = env.stack[-2] if len(env.stack) >= 2 else None
        if isinstance(body, bytes):
            body = body.decode()
        if isinstance(body, str) and not body.lstrip().startswith("["):
            try:
                items = [json.loads(line) for line in body.splitlines() if line.strip()]
            except ValueError:
                items = None  # not JSON Lines either: let moto report it
            if items is not None:
                env.stack[-2] = json.dumps(items)
        original(self, env)

    return _eval_body
