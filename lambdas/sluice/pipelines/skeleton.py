"""What every pipeline shares: run ids, starting and following a run, the in-process runner, notices.

A pipeline (batch scoring, retraining) is a Step Functions state machine whose steps are plain
functions of a small JSON-able state, each run by one Lambda task. The same steps run in this
process (:func:`run_steps`) for the CLI's ``--here``, the bench and the tests. A run is named by
its run id, which is also the execution name; :func:`start_execution` starts it and
:func:`follow_execution` reports its states as they are entered and left. Failures and results
reach people through the stage's notification topic (:func:`notify`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

State = dict[str, Any]
# One step of a pipeline: the state the previous step returned → the state for the next.
Step = Callable[[State], State]
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


# -- run ids ---------------------------------------------------------------------------------


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name an execution and an S3 prefix; else a :class:`SluiceError`."""
    if not _RUN_ID.match(run_id):
        raise SluiceError("run_id must be 1-80 characters of letters, digits, '-' or '_'")
    return run_id


def timestamped_run_id(model: str, moment: datetime, *, suffix: str = "") -> str:
    """``<model>-<YYYYmmddTHHMMSS>[-<suffix>]``, cut to the 80 characters an execution name allows."""
    return f"{model}-{moment:%Y%m%dT%H%M%S}{'-' + suffix if suffix else ''}"[:80]


# -- the registry ----------------------------------------------------------------------------


def load_registry(settings: Settings, registry: ModelRegistry | None = None) -> ModelRegistry:
    """``registry`` if given, else the stage's (imported here, so steps without one never load it)."""
    if registry is not None:
        return registry
    from sluice.registry.store import ModelRegistry

    return ModelRegistry.from_settings(settings)


# -- starting and following a run on Step Functions ------------------------------------------


def start_execution(
    state_machine_arn: str, run_id: str, body: Mapping[str, Any], *, exists_ok: bool = False
) -> str | None:
    """Start one execution named ``run_id`` with ``body`` as its input; return its ARN.

    With ``exists_ok``, an execution of that name that already exists (Step Functions refuses a
    second one) returns ``None`` instead of raising: the run has started already.
    """
    sfn = aws.client("stepfunctions")
    try:
        execution = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=run_id, input=json.dumps(body)
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        if exists_ok:
            return None
        raise
    return str(execution["executionArn"])


def follow_execution(
    execution_arn: str,
    on_state: Callable[[str, bool], None],
    *,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Poll an execution until it stops running; return its last ``describe_execution``.

    Each poll calls ``on_state(state_name, entered)`` for every state entered (``True``) or left
    (``False``) so far, in history order, then ``on_poll()``.
    """
    sfn = aws.client("stepfunctions")
    while True:
        status: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        for event in sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]:
            details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
            if details.get("name"):
                on_state(details["name"], event["type"].endswith("StateEntered"))
        if on_poll:
            on_poll()
        if status["status"] != "RUNNING":
            return status
        time.sleep(poll_s)


# -- the in-process runner -------------------------------------------------------------------


def run_steps(
    steps: Sequence[tuple[str, Step]],
    state: State | None = None,
    *,
    on_step: Callable[[str, float], None] | None = None,
) -> State:
    """Run ``steps`` in order in this process, as the state machine would, each on the state the
    previous one returned; ``on_step(name, seconds)`` after each."""
    current: State = state if state is not None else {}
    for name, step in steps:
        started = time.perf_counter()
        current = step(current)
        if on_step:
            on_step(name, time.perf_counter() - started)
    return current


def with_retries(
    call: Callable[[], State], *, retry_on: type[Exception] | tuple[type[Exception], ...], attempts: int
) -> State:
    """Retry ``retry_on`` errors as the state machine's Retry does (without its backoff: this is local)."""
    for attempt in range(attempts):
        try:
            return call()
        except retry_on:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# -- notices ---------------------------------------------------------------------------------


def notify(
    settings: Settings, subject: str, message: Mapping[str, Any], *, indent: int | None = None
) -> bool:
    """Publish ``message`` as JSON to the stage's notification topic; ``False`` if it has none."""
    if not settings.notify_topic_arn:
        return False
    aws.client("sns").publish(
        TopicArn=settings.notify_topic_arn,
        Subject=subject[:100],
        Message=json.dumps(message, indent=indent, default=str),
    )
    return True


def error_cause(cause: Any, *, limit: int = 500) -> str:
    """The message of a caught error's ``Cause`` (a Lambda error's JSON, or plain text), shortened."""
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
            return str(parsed.get("errorMessage", cause))[:limit]
        except (ValueError, AttributeError):
            return cause[:limit]
    return str(cause)[:limit]


def execution_cause(status: Mapping[str, Any]) -> str:
    """Why a finished execution failed, from its ``describe_execution``: its error and cause."""
    error, cause = status.get("error"), status.get("cause")
    if not error and not cause:
        return f"execution ended {status.get('status', 'FAILED')} without a cause"
    return ": ".join(str(part) for part in (error, error_cause(cause) if cause else "") if part)
