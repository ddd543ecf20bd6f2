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
:data:`GAPS` with the patches in :data:`PATCHES` (CloudFormation:
:mod:`localaws.stepfunctions.cloudformation`; definitions moto rejects:
:mod:`localaws.stepfunctions.definitions`; result files:
:mod:`localaws.stepfunctions.result_writer`); :meth:`StepFunctionsPatch.disable` undoes it.
Finished executions emit their status change to EventBridge (:mod:`localaws.events.router`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from localaws.events.router import emit_service_event
from localaws.patches import Needs, Patch, moto_symbol
from localaws.stepfunctions import definitions, ecs_sync, result_writer
from localaws.stepfunctions.cloudformation import cfn_create, cfn_delete, cfn_update, wrap_start

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
        "listed in cloudformation.UNPARSEABLE; starting it fails with InvalidDefinition naming the gap instead of "
        "hanging in RUNNING"
    ),
    "Lambda Task": "works: invokes go through the moto server's Lambda invoke path",
    "ecs:runTask and ecs:runTask.sync": (
        "filled: moto passes PascalCase parameters to boto3, misreads the response and returns a "
        "stopped task whatever its exit code; parameters are recased, the result is the task's "
        "description and a non-zero exit code fails the state with States.TaskFailed (tasks run "
        "as local processes: localaws.ecs)"
    ),
    "Map (inline and DISTRIBUTED), Parallel, Retry, Catch, Wait, Choice, Pass, Fail": "works",
    "Express workflows StartSyncExecution": "not checked",
    "Execution Status Change events": (
        "filled: finished executions (SUCCEEDED/FAILED/TIMED_OUT/ABORTED, not RUNNING) emit "
        "the aws.states event to EventBridge when an EventRouter is installed"
    ),
}

logger = logging.getLogger(__name__)

_LOCK = threading.RLock()
_CONFIG = "moto.core.config.default_user_config"
_MODELS = "moto.stepfunctions.models"
_PARSER = "moto.stepfunctions.parser"
_STATE_MAP = "moto.stepfunctions.parser.asl.component.state.exec.state_map"
_ECS_TASK = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs"
    ".StateTaskServiceEcs"
)
_CALLBACK_TASK = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback"
    ".StateTaskServiceCallback"
)
#: moto names read here, besides the patch targets.
MOTO_NEEDS = Needs(
    owner=__name__,
    symbols=(_CONFIG, f"{_MODELS}.stepfunctions_backends", f"{_PARSER}.models.stepfunctions_parser_backends"),
    code=(
        ("moto.stepfunctions.responses.get_backend", "execute_state_machine"),
        (f"{_PARSER}.asl.utils.boto_client.boto_client_for", "moto_server_port"),
    ),
)


def _wrap_terminated(original: Any) -> Any:
    def terminated(self: Any) -> None:
        original(self)
        try:
            emit_status_change(self.execution)
        except Exception:  # an event must never change how the execution ended
            logger.exception("could not emit the status change of %s", self.execution.exec_arn)

    return terminated


def _patch(target: str, gap: str, replace: Any) -> Patch:
    return Patch(target=target, gap=gap, replace=replace, owner=__name__, name="stepfunctions")


_CFN_GAP = "CloudFormation creates state machines in the non-executing backend"
_GRAMMAR_GAP = "moto's ASL grammar rejects ItemBatcher, WriterConfig, integer percentages, EXPRESS children"
RESULT_WRITER = _patch(
    f"{_STATE_MAP}.result_writer.resource_eval.resource_eval_s3.ResourceEvalS3._handle_put_object",
    "ResultWriter writes only manifest.json, with empty ResultFiles",
    lambda _: staticmethod(result_writer.put_object),
)
#: Every patch :func:`enable` applies, in order.
PATCHES: tuple[Patch, ...] = (
    _patch(f"{_MODELS}.StateMachine.create_from_cloudformation_json", _CFN_GAP, lambda _: classmethod(cfn_create)),
    _patch(f"{_MODELS}.StateMachine.update_from_cloudformation_json", _CFN_GAP, lambda _: classmethod(cfn_update)),
    _patch(f"{_MODELS}.StateMachine.delete_from_cloudformation_json", _CFN_GAP, lambda _: classmethod(cfn_delete)),
    _patch(f"{_PARSER}.models.StepFunctionsParserBackend.create_state_machine", _GRAMMAR_GAP, definitions.wrap_create),
    _patch(f"{_PARSER}.models.StepFunctionsParserBackend.update_state_machine", _GRAMMAR_GAP, definitions.wrap_update),
    _patch(
        f"{_PARSER}.models.StepFunctionsParserBackend.start_execution",
        "an execution of a definition moto cannot parse stays RUNNING forever",
        wrap_start,
    ),
    _patch(
        f"{_PARSER}.backend.execution.BaseExecutionWorkerCommunication.terminated",
        "finished executions emit no Execution Status Change event",
        _wrap_terminated,
    ),
    _patch(
        f"{_STATE_MAP}.iteration.distributed_iteration_component.DistributedIterationComponent._map_run",
        "ItemBatcher is rejected by the grammar; items must be batched at run time",
        definitions.wrap_map_run,
    ),
    _patch(
        f"{_STATE_MAP}.item_reader.eval.resource_output_transformer.transformer_json"
        ".ResourceOutputTransformerJson._eval_body",
        "ItemReader reads no JSON Lines",
        definitions.wrap_json_items,
    ),
    RESULT_WRITER,
    _patch(
        f"{_ECS_TASK}._eval_service_task",
        "ECS task states pass PascalCase parameters to boto3 and misread its response",
        lambda _: ecs_sync.eval_service_task,
    ),
    _patch(
        f"{_ECS_TASK}._build_sync_resolver",
        "ecs:runTask.sync misreads DescribeTasks and succeeds whatever the container's exit code",
        lambda _: ecs_sync.build_sync_resolver,
    ),
    Patch(
        target=f"{_CALLBACK_TASK}._eval_integration_pattern",
        gap="a .sync state that times out leaves its ECS task running",
        replace=lambda original: ecs_sync.stop_on_timeout(original, moto_symbol(_ECS_TASK, owner=__name__)),
        owner=__name__,
        name="stepfunctions",
        requires=(_ECS_TASK,),
    ),
)


@dataclass
class StepFunctionsPatch:
    """The switches :func:`enable` flipped, so :meth:`disable` can restore them."""

    endpoint_url: str
    previous_execute: bool
    previous_port: str | None
    originals: list[tuple[Patch, str, Any]] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    active: bool = True

    def disable(self) -> None:
        """Restore moto's configuration, MOTO_PORT and the patched methods (idempotent)."""
        with _LOCK:
            if not self.active:
                return
            moto_symbol(_CONFIG, owner=__name__)["stepfunctions"]["execute_state_machine"] = self.previous_execute
            if self.previous_port is None:
                os.environ.pop("MOTO_PORT", None)
            else:
                os.environ["MOTO_PORT"] = self.previous_port
            for patch, _, _ in reversed(self.originals):
                patch.undo()
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
        config = moto_symbol(_CONFIG, owner=__name__)
        patch = StepFunctionsPatch(
            endpoint_url=endpoint_url,
            previous_execute=bool(config.get("stepfunctions", {}).get("execute_state_machine", False)),
            previous_port=os.environ.get("MOTO_PORT"),
        )
        check()
        config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        # The interpreter's boto3 clients read this on every call (moto.settings.moto_server_port).
        os.environ["MOTO_PORT"] = str(port)
        for each in PATCHES:
            original = each.apply()  # None: already applied by an enclosing enable(), which undoes it
            if original is not None:
                patch.originals.append((each, each.target.rsplit(".", 1)[1], original))
        patch.moved = move_to_executing_backend()
    return patch


def check() -> None:
    """Raise RuntimeError naming the first moto symbol :func:`enable` needs that has moved."""
    MOTO_NEEDS.check()
    for each in PATCHES:
        each.check()


def move_to_executing_backend() -> list[str]:
    """Move machines from moto's non-executing backend into the parser backend; return their ARNs."""
    plain = moto_symbol(f"{_MODELS}.stepfunctions_backends", owner=__name__)
    parser = moto_symbol(f"{_PARSER}.models.stepfunctions_parser_backends", owner=__name__)
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


def emit_status_change(execution: Any) -> list[str]:
    """Emit "Step Functions Execution Status Change" for a finished execution (as AWS does).

    Only the final statuses are emitted (SUCCEEDED, FAILED, TIMED_OUT, ABORTED), not RUNNING.
    """
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
