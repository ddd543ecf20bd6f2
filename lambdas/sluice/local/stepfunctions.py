"""Step Functions that execute on the embedded local AWS, including machines created by CloudFormation.

moto 5.2.5 has two Step Functions backends: ``moto.stepfunctions.models.stepfunctions_backends``
stores machines and fakes executions, and ``moto.stepfunctions.parser.models
.stepfunctions_parser_backends`` interprets ASL for real. Its HTTP layer
(``moto.stepfunctions.responses.get_backend``) picks the parser backend only when
``moto.core.config.default_user_config["stepfunctions"]["execute_state_machine"]`` is true, and
the interpreter calls other services (Lambda tasks, S3 item readers and result writers, SDK
integrations) through boto3 at ``http://localhost:$MOTO_PORT`` (``moto.settings.moto_server_port``)
when moto is a server. CloudFormation always creates machines in the non-executing backend.

:func:`enable` switches all of that on for one server and fills the gaps listed in
:data:`GAPS`; :meth:`StepFunctionsPatch.disable` undoes it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

#: What moto 5.2.5's ASL interpreter lacks or gets wrong, and what this module does about it.
#: Checked by ``tests/local/test_stepfunctions_local.py``; "filled" rows are patched here.
GAPS: dict[str, str] = {
    "execute_state_machine": "filled: off by default; enable() turns it on for the server",
    "MOTO_PORT": "filled: the interpreter's boto3 clients need it in server mode; enable() sets it",
    "cloudformation backend": (
        "filled: AWS::StepFunctions::StateMachine from CloudFormation lands in the non-executing "
        "backend; enable() creates, updates and deletes them in the parser backend and moves "
        "machines created earlier"
    ),
    "cloudformation Definition/DefinitionSubstitutions": (
        "filled: moto reads only DefinitionString; the object form and ${substitutions} are applied"
    ),
    "ResultWriter result files": (
        "filled: moto writes only manifest.json with empty ResultFiles; SUCCEEDED_0.json with "
        "one {Status, Output} record per item is written and listed in the manifest"
    ),
    "ItemReader InputType JSONL": "filled: read as JSON Lines (one item per non-empty line)",
    "ItemReader InputType MANIFEST/PARQUET": "open: moto reads only JSON and CSV objects "
    "and s3:listObjectsV2; use JSON, JSONL or CSV locally",
    "ItemBatcher": (
        "filled: moto's ASL grammar rejects it; it is taken out of the definition and items are "
        "grouped into {Items, BatchInput} batches of MaxItemsPerBatch (literal BatchInput only; "
        "MaxInputBytesPerBatch is ignored)"
    ),
    "ResultWriter WriterConfig": (
        "filled: moto's grammar rejects it; it is taken out and Transformation NONE/COMPACT/FLATTEN "
        "and OutputType JSON/JSONL are applied to the result file"
    ),
    "ToleratedFailurePercentage as an integer": "filled: the grammar wants a decimal; 10 becomes 10.0",
    "Distributed Map ExecutionType EXPRESS": "filled: the grammar allows only STANDARD; children run as STANDARD",
    "definitions moto cannot parse": (
        "filled for CloudFormation: the machine is still created (deploys do not break) and "
        "listed in UNPARSEABLE; starting it fails with InvalidDefinition naming the gap instead of "
        "hanging in RUNNING"
    ),
    "Lambda Task": "works: invokes go through the moto server's Lambda invoke path",
    "Map (inline and DISTRIBUTED), Parallel, Retry, Catch, Wait, Choice, Pass, Fail": "works",
    "Express workflows StartSyncExecution": "not checked",
    "Execution Status Change events": (
        "filled: finished executions (SUCCEEDED/FAILED/TIMED_OUT/ABORTED, not RUNNING) emit "
        "the aws.states event to EventBridge when sluice.local.events is installed"
    ),
}

logger = logging.getLogger(__name__)

_LOCK = threading.RLock()
_MARK = "__sluice_local_patch__"
# Map settings taken out of definitions (ItemBatcher, ResultWriter's WriterConfig):
# (account, region, machine, state) -> {"ItemBatcher": {...}, "WriterConfig": {...}}
_MAP_EXTRAS: dict[tuple[str, str, str, str], dict[str, Any]] = {}
#: State machines created from CloudFormation although moto cannot parse them: ARN -> error.
UNPARSEABLE: dict[str, str] = {}


@dataclass
class StepFunctionsPatch:
    """The switches :func:`enable` flipped, so :meth:`disable` can restore them."""

    endpoint_url: str
    previous_execute: bool
    previous_port: str | None
    originals: list[tuple[type, str, Any]] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    active: bool = True

    def disable(self) -> None:
        """Restore moto's configuration, MOTO_PORT and the patched methods (idempotent)."""
        with _LOCK:
            if not self.active:
                return
            _config()["stepfunctions"]["execute_state_machine"] = self.previous_execute
            if self.previous_port is None:
                os.environ.pop("MOTO_PORT", None)
            else:
                os.environ["MOTO_PORT"] = self.previous_port
            for owner, name, original in reversed(self.originals):
                setattr(owner, name, original)
            self.active = False


def enable(*, endpoint_url: str) -> StepFunctionsPatch:
    """Make state machines on the moto server at ``endpoint_url`` (same process) execute.

    Patches nest like a stack: enabling for a second server points MOTO_PORT at it, and
    disabling that patch points it back at the first.

    Raises
    ------
    RuntimeError
        If a moto symbol this relies on moved (naming it), so an upgrade fails loudly.
    """
    port = urlparse(endpoint_url).port
    if port is None:
        raise ValueError(f"endpoint_url {endpoint_url!r} has no port")
    with _LOCK:
        config = _config()
        patch = StepFunctionsPatch(
            endpoint_url=endpoint_url,
            previous_execute=bool(config.get("stepfunctions", {}).get("execute_state_machine", False)),
            previous_port=os.environ.get("MOTO_PORT"),
        )
        check_moto()
        config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        # The interpreter's boto3 clients read this on every call (moto.settings.moto_server_port).
        os.environ["MOTO_PORT"] = str(port)

        for owner, name, replace in _patch_points():
            original = owner.__dict__[name]
            if getattr(getattr(original, "__func__", original), _MARK, False):
                continue  # already patched by an enclosing enable(); it restores moto's own
            replacement = replace(original)
            setattr(getattr(replacement, "__func__", replacement), _MARK, True)
            patch.originals.append((owner, name, original))
            setattr(owner, name, replacement)
        patch.moved = move_to_executing_backend()
    return patch


def check_moto() -> None:
    """Raise RuntimeError naming the first moto symbol :func:`enable` needs that has moved."""
    _symbol("moto.core.config", "default_user_config")
    _symbol("moto.stepfunctions.models", "stepfunctions_backends")
    _symbol("moto.stepfunctions.parser.models", "stepfunctions_parser_backends")
    responses = importlib.import_module("moto.stepfunctions.responses")
    source = getattr(responses.get_backend, "__code__", None)
    if source is None or "execute_state_machine" not in source.co_consts:
        raise RuntimeError(
            "moto.stepfunctions.responses.get_backend no longer reads 'execute_state_machine' "
            "(moto upgraded?); sluice.local.stepfunctions must be updated"
        )
    boto_client = importlib.import_module("moto.stepfunctions.parser.asl.utils.boto_client")
    if "moto_server_port" not in boto_client.boto_client_for.__code__.co_names:
        raise RuntimeError(
            "moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for no longer uses "
            "moto_server_port (moto upgraded?); sluice.local.stepfunctions must be updated"
        )
    for owner, name, _ in _patch_points():
        if name not in owner.__dict__:
            raise RuntimeError(
                f"{owner.__module__}.{owner.__qualname__}.{name} is gone (moto upgraded?); "
                "sluice.local.stepfunctions must be updated"
            )


def _patch_points() -> list[tuple[type, str, Any]]:
    """(moto class, attribute, replacement factory taking the original) for every patch."""
    execution = "moto.stepfunctions.parser.backend.execution"
    return [
        (
            _symbol("moto.stepfunctions.models", "StateMachine"),
            "create_from_cloudformation_json",
            lambda _: classmethod(_cfn_create),
        ),
        (
            _symbol("moto.stepfunctions.models", "StateMachine"),
            "update_from_cloudformation_json",
            lambda _: classmethod(_cfn_update),
        ),
        (
            _symbol("moto.stepfunctions.models", "StateMachine"),
            "delete_from_cloudformation_json",
            lambda _: classmethod(_cfn_delete),
        ),
        (_parser_backend_class(), "create_state_machine", _wrap_create),
        (_parser_backend_class(), "update_state_machine", _wrap_update),
        (_parser_backend_class(), "start_execution", _wrap_start),
        (_symbol(execution, "BaseExecutionWorkerCommunication"), "terminated", _wrap_terminated),
        (_distributed_component_class(), "_map_run", _wrap_map_run),
        (_json_items_class(), "_eval_body", _wrap_json_items),
        (_result_writer_class(), "_handle_put_object", lambda _: staticmethod(_result_writer_put_object)),
    ]


def move_to_executing_backend() -> list[str]:
    """Move machines from moto's non-executing backend into the parser backend; return their ARNs."""
    plain = _symbol("moto.stepfunctions.models", "stepfunctions_backends")
    parser = _symbol("moto.stepfunctions.parser.models", "stepfunctions_parser_backends")
    moved = []
    for account, regions in list(plain.items()):
        for region, backend in list(regions.items()):
            if not backend.state_machines:
                continue
            target = parser[account][region]
            known = {sm.arn for sm in target.state_machines}
            for machine in list(backend.state_machines):
                if machine.arn not in known:
                    machine.backend = target
                    target.state_machines.append(machine)
                    moved.append(machine.arn)
                backend.state_machines.remove(machine)
    return moved


# -- CloudFormation, creating in the executing backend -----------------------------------------


def _parser_backend(account_id: str, region_name: str) -> Any:
    return _symbol("moto.stepfunctions.parser.models", "stepfunctions_parser_backends")[account_id][
        region_name
    ]


def _definition(properties: dict[str, Any]) -> str:
    definition = properties.get("DefinitionString")
    if definition is None and properties.get("Definition") is not None:
        definition = json.dumps(properties["Definition"])
    definition = definition or ""
    for key, value in (properties.get("DefinitionSubstitutions") or {}).items():
        definition = definition.replace("${" + key + "}", str(value))
    return definition


def _cfn_create(
    cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
) -> Any:
    from moto.stepfunctions.utils import cfn_to_api_tags

    properties = cloudformation_json["Properties"]
    backend = _parser_backend(account_id, region_name)
    args = (
        properties.get("StateMachineName", resource_name),
        _definition(properties),
        properties.get("RoleArn", ""),
    )
    kwargs = {
        "tags": cfn_to_api_tags(properties.get("Tags", [])),
        "sm_type": properties.get("StateMachineType"),
    }
    try:
        return backend.create_state_machine(*args, **kwargs)
    except Exception as err:
        if type(err).__name__ != "InvalidDefinition":
            raise
        # Deploy anyway, as AWS would have accepted it; executions of this machine fail.
        plain_create = _symbol("moto.stepfunctions.models", "StepFunctionBackend").create_state_machine
        machine = plain_create(backend, *args, **kwargs)
        UNPARSEABLE[machine.arn] = str(err)
        logger.warning("state machine %s cannot be interpreted locally: %s", machine.arn, err)
        return machine


def _cfn_delete(
    cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
) -> None:
    backend = _parser_backend(account_id, region_name)
    arn = resource_name
    if not arn.startswith("arn:"):
        found = next((sm for sm in backend.state_machines if sm.name == resource_name), None)
        if found is None:
            return
        arn = found.arn
    backend.delete_state_machine(arn)


def _cfn_update(
    cls: Any,
    original_resource: Any,
    new_resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
) -> Any:
    from moto.stepfunctions.utils import cfn_to_api_tags

    properties = cloudformation_json.get("Properties", {})
    name = properties.get("StateMachineName", original_resource.name)
    if name != original_resource.name:
        new = _cfn_create(cls, name, cloudformation_json, account_id, region_name)
        _cfn_delete(cls, original_resource.arn, cloudformation_json, account_id, region_name)
        return new
    backend = _parser_backend(account_id, region_name)
    machine = backend.update_state_machine(
        original_resource.arn,
        definition=_definition(properties) or None,
        role_arn=properties.get("RoleArn"),
    )
    backend.tagger.tag_resource(machine.arn, cfn_to_api_tags(properties.get("Tags", [])))
    return machine


# -- definitions moto's grammar rejects -----------------------------------------------------------


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


def _remember_extras(backend: Any, machine: str, extras: dict[str, dict[str, Any]]) -> None:
    for key in [k for k in _MAP_EXTRAS if k[:3] == (backend.account_id, backend.region_name, machine)]:
        del _MAP_EXTRAS[key]
    for state, settings in extras.items():
        _MAP_EXTRAS[(backend.account_id, backend.region_name, machine, state)] = settings


def _extras_for(env: Any, state: str) -> dict[str, Any]:
    """The Map settings taken out of the running machine's definition for ``state``."""
    machine = env.states.context_object.context_object_data["StateMachine"]
    arn = machine["Id"].split(":")
    return _MAP_EXTRAS.get((arn[4], arn[3], machine["Name"], state), {})


def _wrap_create(original: Any) -> Any:
    def create_state_machine(
        self: Any, name: str, definition: str, roleArn: str, *args: Any, **kwargs: Any
    ) -> Any:
        definition, extras = normalise_definition(definition)
        machine = original(self, name, definition, roleArn, *args, **kwargs)
        _remember_extras(self, name, extras)
        return machine

    return create_state_machine


def _wrap_update(original: Any) -> Any:
    def update_state_machine(self: Any, arn: str, definition: Any = None, *args: Any, **kwargs: Any) -> Any:
        extras: dict[str, dict[str, Any]] | None = None
        if definition is not None:
            definition, extras = normalise_definition(definition)
        machine = original(self, arn, definition, *args, **kwargs)
        if extras is not None:
            _remember_extras(self, machine.name, extras)
        return machine

    return update_state_machine


def _wrap_start(original: Any) -> Any:
    def start_execution(self: Any, state_machine_arn: str, *args: Any, **kwargs: Any) -> Any:
        # An execution moto cannot parse would stay RUNNING forever; say so instead.
        error = UNPARSEABLE.get(":".join(str(state_machine_arn).split(":")[:7]))
        if error is not None:
            aws_error = _symbol("moto.core.exceptions", "AWSError")
            raise aws_error(
                f"the embedded local AWS cannot interpret {state_machine_arn} "
                f"(moto's ASL grammar: {error}); see sluice.local.stepfunctions.GAPS",
                exception_type="InvalidDefinition",
            )
        return original(self, state_machine_arn, *args, **kwargs)

    return start_execution


def _wrap_map_run(original: Any) -> Any:
    def _map_run(self: Any, env: Any, eval_input: Any) -> None:
        settings = _extras_for(env, eval_input.state_name).get("ItemBatcher")
        if settings is not None:
            items = env.stack.pop()
            env.stack.append(batch_items(items, settings))
        original(self, env, eval_input)

    return _map_run


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


def _wrap_terminated(original: Any) -> Any:
    def terminated(self: Any) -> None:
        original(self)
        try:
            emit_status_change(self.execution)
        except Exception:  # an event must never change how the execution ended
            logger.exception("could not emit the status change of %s", self.execution.exec_arn)

    return terminated


def emit_status_change(execution: Any) -> list[str]:
    """Emit "Step Functions Execution Status Change" for a finished execution (as AWS does).

    Only the final statuses are emitted (SUCCEEDED, FAILED, TIMED_OUT, ABORTED), not RUNNING.
    """
    from sluice.local.events import emit_service_event

    def millis(when: Any) -> int | None:
        return int(when.timestamp() * 1000) if when is not None else None

    status = getattr(execution.exec_status, "value", execution.exec_status)
    output = getattr(execution, "output", None)
    detail = {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine.arn,
        "name": execution.name,
        "status": status,
        "startDate": millis(execution.start_date),
        "stopDate": millis(execution.stop_date),
        "input": getattr(execution, "execution_input", None),
        "output": output if isinstance(output, str) or output is None else json.dumps(output),
        "error": getattr(execution, "error", None),
        "cause": getattr(execution, "cause", None),
    }
    return emit_service_event(
        source="aws.states",
        detail_type="Step Functions Execution Status Change",
        detail=detail,
        resources=[execution.exec_arn],
        account=execution.account_id,
        region=execution.region_name,
    )


def _wrap_json_items(original: Any) -> Any:
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


def _json_items_class() -> Any:
    return _symbol(
        "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval."
        "resource_output_transformer.transformer_json",
        "ResourceOutputTransformerJson",
    )


def _parser_backend_class() -> Any:
    return _symbol("moto.stepfunctions.parser.models", "StepFunctionsParserBackend")


def _distributed_component_class() -> Any:
    return _symbol(
        "moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component",
        "DistributedIterationComponent",
    )


# -- Distributed Map ResultWriter -----------------------------------------------------------------


def _result_writer_class() -> Any:
    return _symbol(
        "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval."
        "resource_eval_s3",
        "ResourceEvalS3",
    )


def _result_writer_put_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    """moto's handler, plus the result file it leaves as a TODO (SUCCEEDED_0.json or .jsonl).

    Honours the WriterConfig taken out of the definition: ``Transformation`` NONE (execution
    records with ``Output`` text), COMPACT (the outputs) or FLATTEN (array outputs flattened),
    and ``OutputType`` JSON or JSONL.
    """
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    parameters = env.stack.pop()
    results = env.stack.pop()
    s3 = boto_client_for(
        service="s3", region=resource_runtime_part.region, state_credentials=state_credentials
    )
    map_run_record = env.map_run_record_pool_manager.get_all().pop()
    map_run_uuid = map_run_record.map_run_arn.split(":")[-1]
    prefix = parameters.get("Prefix", "") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    bucket = parameters["Bucket"]
    items = results if isinstance(results, list) else [results]
    state = env.states.context_object.context_object_data.get("State", {}).get("Name", "")
    config = _extras_for(env, state).get("WriterConfig") or {}
    transformation = config.get("Transformation", "NONE")
    if transformation == "COMPACT":
        records: list[Any] = list(items)
    elif transformation == "FLATTEN":
        records = [x for item in items for x in (item if isinstance(item, list) else [item])]
    else:
        records = [
            {
                "ExecutionArn": f"{map_run_record.map_run_arn}:{index}",
                "Status": "SUCCEEDED",
                "Output": json.dumps(item),
            }
            for index, item in enumerate(items)
        ]
    if config.get("OutputType") == "JSONL":
        succeeded_key = f"{prefix}{map_run_uuid}/SUCCEEDED_0.jsonl"
        body = "".join(json.dumps(record) + "\n" for record in records).encode("utf8")
    else:
        succeeded_key = f"{prefix}{map_run_uuid}/SUCCEEDED_0.json"
        body = json.dumps(records).encode("utf8")
    s3.put_object(Bucket=bucket, Key=succeeded_key, Body=body)
    manifest = {
        "DestinationBucket": bucket,
        "MapRunArn": map_run_record.map_run_arn,
        "ResultFiles": {
            "FAILED": [],
            "PENDING": [],
            "SUCCEEDED": [{"Key": succeeded_key, "Size": len(body)}],
        },
    }
    key = f"{prefix}{map_run_uuid}/manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=2).encode("utf8"))
    env.stack.append(
        {"MapRunArn": map_run_record.map_run_arn, "ResultWriterDetails": {"Bucket": bucket, "Key": key}}
    )


# -- helpers ------------------------------------------------------------------------------------------


def _config() -> Any:
    return _symbol("moto.core.config", "default_user_config")


def _symbol(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f"{module}.{name} cannot be found ({err}); moto upgraded? sluice.local.stepfunctions must be updated"
        ) from err
