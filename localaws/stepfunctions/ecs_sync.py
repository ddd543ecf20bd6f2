"""``arn:aws:states:::ecs:runTask[.sync]`` on moto's interpreter: parameter case, results, exit codes.

moto 5.2.5's ECS integration passes the state's parameters to boto3 as written in the ASL
(``Cluster``, ``TaskDefinition``, ...) where boto3 wants ``cluster``, ``taskDefinition``, and
reads boto3's camelCase response as if it were PascalCase, so every ECS task state fails. Its
``.sync`` also returns a stopped task whatever its containers' exit codes. The replacements here
(the two methods moto's ``StateTaskServiceEcs`` defines) call ECS with boto3's names, give the
state the task description in Step Functions' PascalCase, and, as in AWS, fail the state with
``States.TaskFailed`` (the task's description as the cause) when an essential container exits
non-zero, so a Catch can route it. And where moto lets a timed-out ``.sync`` state's task run
on, :func:`stop_on_timeout` stops it, as Step Functions does (hence ``ecs:StopTask`` in the
role). The tasks themselves run in local processes (:mod:`localaws.ecs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from localaws.patches import moto_symbol

_CALLBACK = "moto.stepfunctions.parser.asl.eval.callback.callback"
_BOTO_CLIENT = "moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for"


def recased(value: Any, *, upper: bool) -> Any:
    """``value`` with every dict key's first letter upper-cased (``upper``) or lower-cased."""
    if isinstance(value, dict):
        return {
            (key[:1].upper() if upper else key[:1].lower()) + key[1:]: recased(item, upper=upper)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [recased(item, upper=upper) for item in value]
    return value


def failed_containers(task: dict[str, Any]) -> list[str]:
    """``name: exit code`` of each container of a described task (PascalCase) that exited non-zero."""
    return [
        f"{container.get('Name')}: {container['ExitCode']}"
        for container in task.get("Containers") or []
        if container.get("ExitCode") not in (None, 0)
    ]


def _client(resource_runtime_part: Any, state_credentials: Any) -> Any:
    boto_client_for = moto_symbol(_BOTO_CLIENT, owner=__name__)
    return boto_client_for(
        region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
    )


def _described(client: Any, cluster: str, task: str) -> dict[str, Any]:
    described = client.describe_tasks(cluster=cluster, tasks=[task])
    described.pop("ResponseMetadata", None)
    return described


def eval_service_task(
    self: Any,
    env: Any,
    resource_runtime_part: Any,
    normalised_parameters: dict[str, Any],
    state_credentials: Any,
) -> None:
    """Call ECS; for ``runTask`` the state's result is the task's description (as in AWS)."""
    client = _client(resource_runtime_part, state_credentials)
    action = self._get_boto_service_action()
    response = getattr(client, action)(**recased(normalised_parameters, upper=False))
    response.pop("ResponseMetadata", None)
    if action == "run_task":
        task = response["tasks"][0]
        response = _described(client, task["clusterArn"], task["taskArn"])
    env.stack.append(json.loads(json.dumps(recased(response, upper=True), default=str)))


def build_sync_resolver(
    self: Any,
    env: Any,
    resource_runtime_part: Any,
    normalised_parameters: dict[str, Any],
    state_credentials: Any,
) -> Callable[[], Any]:
    """Poll the submitted task until it is STOPPED; a non-zero exit code fails the state."""
    client = _client(resource_runtime_part, state_credentials)
    submitted = env.stack.pop()["Tasks"][0]
    task_arn, cluster_arn = submitted["TaskArn"], submitted["ClusterArn"]

    def resolve() -> dict[str, Any] | None:
        (task,) = _described(client, cluster_arn, task_arn)["tasks"]
        if task["lastStatus"] != "STOPPED":
            return None
        described: dict[str, Any] = json.loads(json.dumps(recased(task, upper=True), default=str))
        if failed_containers(described):
            failure = moto_symbol(f"{_CALLBACK}.CallbackOutcomeFailure", owner=__name__)
            error = moto_symbol(f"{_CALLBACK}.CallbackOutcomeFailureError", owner=__name__)
            raise error(failure(callback_id=task_arn, error="States.TaskFailed", cause=json.dumps(described)))
        return described

    return resolve


#: The reason a timed-out ``.sync`` state gives ``StopTask``.
TIMEOUT_REASON = "Step Functions: the ecs:runTask.sync state timed out"


def stop_on_timeout(original: Callable[..., Any], ecs_service: type) -> Callable[..., Any]:
    """moto's ``_eval_integration_pattern``, which stops an ECS ``.sync`` state's task on timeout.

    moto raises the state's ``States.Timeout`` (a ``TimeoutError``) and leaves the task running;
    this stops it first. Other services' states pass through unchanged.
    """

    def eval_integration_pattern(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> None:
        submitted = env.stack[-1] if isinstance(self, ecs_service) and env.stack else None
        try:
            original(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        except TimeoutError:
            tasks = submitted.get("Tasks") if isinstance(submitted, dict) else None
            if tasks:
                _client(resource_runtime_part, state_credentials).stop_task(
                    cluster=tasks[0]["ClusterArn"], task=tasks[0]["TaskArn"], reason=TIMEOUT_REASON
                )
            raise

    return eval_integration_pattern
