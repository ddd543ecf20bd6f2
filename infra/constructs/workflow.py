"""Pieces the Step Functions pipelines share: Lambda steps, transient retries, a logged state machine, a topic."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

# Errors worth retrying: Lambda's own transient failures and throttling, not the step's errors.
TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "States.Timeout",
]


def encrypted_topic(scope: Construct, id: str, *, description: str) -> tuple[kms.Key, sns.Topic]:
    """An SNS topic ``id`` encrypted with its own rotating KMS key ``TopicKey``, TLS only."""
    key = kms.Key(scope, "TopicKey", enable_key_rotation=True, description=description)
    return key, sns.Topic(scope, id, master_key=key, enforce_ssl=True)


def lambda_step(
    scope: Construct,
    id: str,
    function: lambda_.IFunction,
    payload: sfn.TaskInput | None = None,
    *,
    result_path: str | None = None,
) -> tasks.LambdaInvoke:
    """Invoke ``function`` and pass on its response only; retries are the caller's to add."""
    return tasks.LambdaInvoke(
        scope,
        id,
        lambda_function=function,
        payload=payload,
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=result_path,
    )


def retry_transient(task: tasks.LambdaInvoke, *, max_attempts: int = 3, jitter: bool = True) -> None:
    """Retry :data:`TRANSIENT_ERRORS` from 2 s, doubling, with full jitter unless ``jitter`` is off."""
    task.add_retry(
        errors=TRANSIENT_ERRORS,
        interval=cdk.Duration.seconds(2),
        max_attempts=max_attempts,
        backoff_rate=2.0,
        jitter_strategy=sfn.JitterType.FULL if jitter else None,
    )


def logged_state_machine(
    scope: Construct,
    definition: sfn.IChainable,
    *,
    timeout: cdk.Duration,
    retain_logs: bool,
    state_machine_name: str | None = None,
    include_execution_data: bool = False,
) -> tuple[logs.LogGroup, sfn.StateMachine]:
    """A traced state machine ``StateMachine`` logging every event to its own ``StateMachineLogs``.

    States' inputs and outputs (model inputs, run state) enter the log only with
    ``include_execution_data``, which the stage turns on for dev alone (``<stage>:logExecutionData``).
    """
    log_group = logs.LogGroup(
        scope,
        "StateMachineLogs",
        retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
    )
    state_machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=state_machine_name,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        timeout=timeout,
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=include_execution_data
        ),
    )
    return log_group, state_machine
