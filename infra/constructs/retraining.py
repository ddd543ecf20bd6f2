"""The retraining pipeline: preprocess → train → evaluate → register (pending approval), never deploy."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction
from infra.constructs.storage import bucket_in
from sluice.names import RETRAINING_STEPS

# Errors worth retrying: Lambda's own transient failures and throttling, not the step's errors.
TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "States.Timeout",
]
DEFAULT_DEBOUNCE = cdk.Duration.minutes(15)


class RetrainingPipeline(Construct):
    """A Step Functions retraining run per model, started by hand or by drift alarms.

    The steps run in the training image with the stage's non-personal training role. The state
    machine retries transient Lambda errors with exponential backoff and jitter; any final failure
    goes to a notification step and ends the run as failed, and because only the last step writes
    the registry (one transactional call), a failed run leaves no partial record.

    Alarms start runs through an EventBridge rule and a trigger function that enforces single
    flight: a lock item in the registry table and a deterministic execution name per
    ``debounce`` window, so duplicate alarm events start at most one run.

    Parameters
    ----------
    registry
        The stage's registry (read the champion, register the challenger).
    work_bucket
        Bucket for the staged split, candidate and comparison reports of each run.
    role
        Execution role of the steps (the stage's training role).
    model_name
        Registered model this pipeline retrains.
    data_uri
        Dataset the alarm-triggered runs train on (``s3://bucket/key.csv|parquet``); manual runs
        may name another.
    alarms
        Drift alarms whose change to ALARM starts a run. Default: none (manual only).
    debounce
        Window in which duplicate alarm events start at most one run. Default 15 minutes.
    notify_topic
        Topic told about results and failures; a KMS-encrypted topic is created if omitted.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        work_bucket: s3.IBucket,
        role: iam.IRole,
        model_name: str,
        data_uri: str,
        alarms: Sequence[cloudwatch.IAlarm] = (),
        debounce: cdk.Duration = DEFAULT_DEBOUNCE,
        notify_topic: sns.ITopic | None = None,
        retain_logs: bool = False,
    ) -> None:
        super().__init__(scope, id)
        if notify_topic is None:
            topic_key = kms.Key(
                self, "TopicKey", enable_key_rotation=True, description="Sluice retraining topic"
            )
            notify_topic = sns.Topic(self, "Notifications", master_key=topic_key, enforce_ssl=True)
        self.notify_topic = notify_topic
        work = bucket_in(self, work_bucket)

        self.steps = SluiceFunction(
            self,
            "Steps",
            handler="retrain",
            container="training",
            role=role,
            service="sluice-retraining",
            memory_mb=3008,
            timeout_s=900,
            retain_logs=retain_logs,
            environment={
                "SLUICE_REGISTRY_TABLE": registry.table.table_name,
                "SLUICE_REGISTRY_BUCKET": registry.bucket.bucket_name,
                "SLUICE_WORK_BUCKET": work.bucket_name,
                "SLUICE_NOTIFY_TOPIC_ARN": notify_topic.topic_arn,
            },
        ).function
        registry.grant_write(role)
        work.grant_read_write(role, "retraining/*")
        work.grant_read(role, "datasets/*")
        notify_topic.grant_publish(role)
        acknowledge_grant_wildcards(
            role, buckets=[work_bucket], object_prefixes=("retraining/", "datasets/"), xray=True
        )

        failed = sfn.Fail(self, "Failed", error="RetrainingFailed", cause="see the failure notification")
        notify_failure = self._step("NotifyFailure", "notify_failure").next(failed)
        chain: sfn.INextable | None = None
        first: sfn.IChainable | None = None
        for step in RETRAINING_STEPS:
            task = self._step(step.capitalize(), step)
            task.add_retry(
                errors=TRANSIENT_ERRORS,
                interval=cdk.Duration.seconds(2),
                max_attempts=3,
                backoff_rate=2.0,
                jitter_strategy=sfn.JitterType.FULL,
            )
            # Name the failed step for the notification, then notify and fail.
            failed_step = sfn.Pass(
                self,
                f"{step.capitalize()}Failed",
                result=sfn.Result.from_string(step),
                result_path="$.failed_step",
            ).next(notify_failure)
            task.add_catch(failed_step, errors=["States.ALL"], result_path="$.error")
            if chain is None:
                first = task
            else:
                chain.next(task)
            chain = task
        chain.next(sfn.Succeed(self, "RegisteredPendingApproval"))

        self.log_group = logs.LogGroup(
            self,
            "StateMachineLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(first),
            timeout=cdk.Duration.hours(2),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        acknowledge(
            self.state_machine,
            {
                f"AwsSolutions-IAM5[Resource::<{self._logical_id(self.steps)}.Arn>:*]": "Step Functions "
                "invokes the steps function by version or alias; CDK's LambdaInvoke grant adds the ':*' "
                "qualifier for that.",
                "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing and CloudWatch Logs delivery of the "
                "state machine support only resource '*' (AWS documents no narrower resource).",
            },
        )

        self.trigger = self._trigger(
            registry,
            model_name=model_name,
            data_uri=data_uri,
            debounce=debounce,
            alarms=alarms,
            retain_logs=retain_logs,
        )

    def _step(self, id: str, step: str) -> tasks.LambdaInvoke:
        return tasks.LambdaInvoke(
            self,
            id,
            lambda_function=self.steps,
            payload=sfn.TaskInput.from_object({"step": step, "state": sfn.JsonPath.object_at("$")}),
            payload_response_only=True,
            retry_on_service_exceptions=False,
        )

    @staticmethod
    def _logical_id(construct: Construct) -> str:
        stack = cdk.Stack.of(construct)
        return stack.resolve(stack.get_logical_id(construct.node.default_child))

    def _trigger(
        self,
        registry: Registry,
        *,
        model_name: str,
        data_uri: str,
        debounce: cdk.Duration,
        alarms: Sequence[cloudwatch.IAlarm],
        retain_logs: bool,
    ) -> SluiceFunction:
        role = iam.Role(
            self,
            "TriggerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Sluice retraining trigger: takes the single-flight lock and starts one run",
        )
        trigger = SluiceFunction(
            self,
            "Trigger",
            handler="retrain_trigger",
            role=role,
            service="sluice-retraining-trigger",
            retain_logs=retain_logs,
            environment={
                "SLUICE_REGISTRY_TABLE": registry.table.table_name,
                "SLUICE_RETRAIN_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
            },
        )
        registry.table.grant(role, "dynamodb:PutItem")
        self.state_machine.grant_start_execution(role)
        acknowledge(
            role,
            {
                "AwsSolutions-IAM5[Resource::*]": "X-Ray PutTraceSegments/PutTelemetryRecords support "
                "only resource '*'.",
            },
        )
        self.rule: events.Rule | None = None
        if alarms:
            self.rule = events.Rule(
                self,
                "OnDriftAlarm",
                description=f"Retrain {model_name} when a drift alarm enters ALARM",
                event_pattern=events.EventPattern(
                    source=["aws.cloudwatch"],
                    detail_type=["CloudWatch Alarm State Change"],
                    resources=[alarm.alarm_arn for alarm in alarms],
                    detail={"state": {"value": ["ALARM"]}},
                ),
                targets=[
                    targets.LambdaFunction(
                        trigger.function,
                        event=events.RuleTargetInput.from_object(
                            {
                                "model": model_name,
                                "data_uri": data_uri,
                                "alarm": events.EventField.from_path("$.detail.alarmName"),
                                "debounce_s": int(debounce.to_seconds()),
                            }
                        ),
                        retry_attempts=2,
                    )
                ],
            )
        return trigger
