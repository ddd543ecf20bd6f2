"""The retraining pipeline: preprocess → train → evaluate → register (pending approval), never deploy."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards, logical_id
from infra.constructs.registry import Registry
from infra.constructs.runtime import ModelImage, SluiceFunction
from infra.constructs.storage import bucket_in
from infra.constructs.training_compute import FargateTraining, SageMakerTraining, TrainingNetwork, amd64_image
from infra.constructs.workflow import (
    TRANSIENT_ERRORS,
    encrypted_topic,
    lambda_step,
    logged_state_machine,
    retry_transient,
)
from sluice.names import RETRAINING_STEPS, staged_train_keys

__all__ = [
    "DEFAULT_DEBOUNCE",
    "TRAINING_COMPUTE",
    "TRANSIENT_ERRORS",
    "RetrainingPipeline",
    "staged_candidate_guard",
]

DEFAULT_DEBOUNCE = cdk.Duration.minutes(15)
#: Where the train step can run (a model's ``trainingCompute``).
TRAINING_COMPUTE = ("lambda", "fargate", "sagemaker")
#: How long a train step outside Lambda may run (the state machine allows 2 hours in all).
TRAIN_TIMEOUT = cdk.Duration.minutes(90)


def staged_candidate_guard(bucket: s3.IBucket, *, model: str, writer_arn: str) -> iam.PolicyStatement:
    """A work-bucket policy statement: only ``writer_arn`` writes ``model``'s staged candidate.

    The evaluate and register steps load the staged candidate, a pickle (code runs as it
    loads). On the Lambda path they check its bytes against the digest the train step put in
    the execution's state; a train step outside Lambda hands its digest back through
    ``train-output.json`` beside the candidate, so whoever could write both could choose the code
    those steps run. This denies every other principal (an administrator's, the steps' own
    role, another model's task) writing or deleting either file, so the digest read back is
    the train role's word.
    """
    return iam.PolicyStatement(
        sid="OnlyTheTrainRoleStages" + "".join(part.capitalize() for part in model.split("-")),
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
        resources=[bucket.arn_for_objects(key) for key in staged_train_keys(model)],
        conditions={"ArnNotEquals": {"aws:PrincipalArn": writer_arn}},
    )


class RetrainingPipeline(Construct):
    """A Step Functions retraining run per model, started by hand or by drift alarms.

    The steps run in the training image (or the model's own ``image``) with a non-personal role of
    the model's own, which reads and registers only this model. The state machine retries transient Lambda errors with exponential backoff and jitter; any final failure
    goes to a notification step and ends the run as failed, and because only the last step writes
    the registry (one transactional call), a failed run leaves no partial record.

    Alarms start runs through an EventBridge rule and a trigger function that enforces single
    flight: a lock item in ``lock_table`` and a deterministic execution name per
    ``debounce`` window, so duplicate alarm events start at most one run.

    Parameters
    ----------
    registry
        The stage's registry (read the champion, register the challenger).
    work_bucket
        Bucket for the staged split, candidate and comparison reports of each run.
    lock_table
        The single-flight lock table (partition key ``pk``): the trigger may put items there and
        touches no other table.
    model_name
        Registered model this pipeline retrains.
    data_uri
        Dataset the alarm-triggered runs train on (``s3://bucket/key.csv|parquet``); manual runs
        may name another.
    image
        The model's image (:class:`~infra.constructs.runtime.ModelImage`) for the steps. Default
        ``None``: the ``training`` image.
    alarms
        Drift alarms whose change to ALARM starts a run. Default: none (manual only).
    debounce
        Window in which duplicate alarm events start at most one run. Default 15 minutes.
    notify_topic
        Topic told about results and failures; a KMS-encrypted topic is created if omitted.
    retain_logs
        Keep the functions' and the state machine's log groups when the stack is deleted.
    log_execution_data
        Include states' inputs and outputs in the state machine's log. Default ``False``; the
        stage sets it from ``cdk.json`` (dev only).
    training_compute
        Where the train step runs: ``"lambda"`` (default, the steps function), ``"fargate"``
        (an ECS task, :class:`~infra.constructs.training_compute.FargateTraining`) or
        ``"sagemaker"`` (a training job); the last two run the steps' image and are followed by
        a ``collect`` Lambda step that takes the task's result from the work bucket.
    network
        The Fargate task's network. Default: the stack's shared
        :class:`~infra.constructs.training_compute.TrainingNetwork`.
    train_role_name
        Physical name of the Fargate task's or SageMaker job's role, which the work bucket's
        :func:`staged_candidate_guard` names. Default generated (no guard can name it).
    steps_role_name
        Physical name of the steps' role (``steps_role``, this model's own), which the work
        bucket's :func:`staged_candidate_guard` names when the train step runs in Lambda. Default
        generated.

    Attributes
    ----------
    topic_key, notify_topic, steps_role, steps, training, log_group, state_machine, trigger_role,
    trigger, rule
        Everything created; ``steps`` is the function running every step (but a train step
        outside Lambda), ``training`` the Fargate or SageMaker training (``None`` for Lambda).
        ``topic_key`` is ``None`` when ``notify_topic`` is given, ``rule`` without ``alarms``.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        work_bucket: s3.IBucket,
        lock_table: dynamodb.ITable,
        model_name: str,
        data_uri: str,
        image: ModelImage | None = None,
        alarms: Sequence[cloudwatch.IAlarm] = (),
        debounce: cdk.Duration = DEFAULT_DEBOUNCE,
        notify_topic: sns.ITopic | None = None,
        retain_logs: bool = False,
        log_execution_data: bool = False,
        training_compute: str = "lambda",
        network: TrainingNetwork | None = None,
        train_role_name: str | None = None,
        steps_role_name: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.model_name = model_name
        if training_compute not in TRAINING_COMPUTE:
            raise ValueError(f"training_compute must be one of {TRAINING_COMPUTE}, not {training_compute!r}")
        self.topic_key: kms.Key | None = None
        if notify_topic is None:
            self.topic_key, notify_topic = encrypted_topic(
                self, "Notifications", description="Sluice retraining topic"
            )
        self.notify_topic = notify_topic
        self.steps_role, self.steps = self._build_steps(
            registry, work_bucket, role_name=steps_role_name, image=image, retain_logs=retain_logs
        )
        self.training = self._build_training(
            training_compute,
            registry,
            work_bucket,
            image=image,
            network=network,
            role_name=train_role_name,
            retain_logs=retain_logs,
        )
        self.log_group, self.state_machine = logged_state_machine(
            self,
            self._build_definition(),
            timeout=cdk.Duration.hours(2),
            retain_logs=retain_logs,
            include_execution_data=log_execution_data,
        )
        if isinstance(self.training, SageMakerTraining):
            self.training.grant_run(self.state_machine.role)
        self._acknowledge_state_machine()
        self.trigger_role, self.trigger = self._build_trigger(lock_table, retain_logs=retain_logs)
        self.rule: events.Rule | None = None
        if alarms:
            self.rule = self._build_alarm_rule(
                alarms, model_name=model_name, data_uri=data_uri, debounce=debounce
            )

    def _acknowledge_state_machine(self) -> None:
        """The wildcards of the state machine's role that CDK's task grants produce."""
        acknowledge(
            self.state_machine,
            {
                f"AwsSolutions-IAM5[Resource::<{logical_id(self.steps)}.Arn>:*]": "Step Functions "
                "invokes the steps function by version or alias; CDK's LambdaInvoke grant adds the ':*' "
                "qualifier for that.",
                "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing and CloudWatch Logs delivery of the "
                "state machine support only resource '*' (AWS documents no narrower resource)"
                + (
                    "; so do ecs:DescribeTasks and ecs:StopTask of the .sync train task (task ARNs "
                    "are known only at run time)."
                    if isinstance(self.training, FargateTraining)
                    else "."
                ),
            },
        )

    def _build_steps(
        self,
        registry: Registry,
        work_bucket: s3.IBucket,
        *,
        role_name: str | None,
        image: ModelImage | None,
        retain_logs: bool,
    ) -> tuple[iam.Role, lambda_.IFunction]:
        """The one function running every step (``{"step": ..., "state": ...}``), its role and grants.

        The role is the model's own: it reads and registers only this model (``Registry.grant_write``).
        """
        work, runs = bucket_in(self, work_bucket), f"retraining/{self.model_name}/"
        role = iam.Role(
            self,
            "StepsRole",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Sluice retraining steps of {self.model_name}",
        )
        steps = SluiceFunction(
            self,
            "Steps",
            handler="retrain",
            container="training",
            image=image,
            role=role,
            service="sluice-retraining",
            memory_mb=3008,
            timeout_s=900,
            retain_logs=retain_logs,
            environment={
                **registry.environment,
                "SLUICE_WORK_BUCKET": work.bucket_name,
                "SLUICE_NOTIFY_TOPIC_ARN": self.notify_topic.topic_arn,
            },
        ).function
        registry.grant_write(role, model=self.model_name)
        work.grant_read_write(role, f"{runs}*")
        work.grant_read(role, "datasets/*")
        self.notify_topic.grant_publish(role)
        acknowledge_grant_wildcards(
            role, buckets=[work_bucket], object_prefixes=(runs, "datasets/"), xray=True
        )
        return role, steps

    def _build_training(
        self,
        compute: str,
        registry: Registry,
        work_bucket: s3.IBucket,
        *,
        image: ModelImage | None,
        network: TrainingNetwork | None,
        role_name: str | None,
        retain_logs: bool,
    ) -> FargateTraining | SageMakerTraining | None:
        """The train step's task or job outside Lambda, in the steps' image, and its role's grants."""
        if compute == "lambda":
            return None
        work, runs = bucket_in(self, work_bucket), f"retraining/{self.model_name}/"
        environment = {**registry.environment, "SLUICE_WORK_BUCKET": work.bucket_name}
        training: FargateTraining | SageMakerTraining
        if compute == "fargate":
            # The Lambda image's own asset: one build, one hash, whichever compute runs it.
            asset = self.steps.node.find_child("AssetImage")
            assert isinstance(asset, ecr_assets.DockerImageAsset)
            training = FargateTraining(
                self,
                "TrainTask",
                network=network or TrainingNetwork.of(self),
                image=ecs.ContainerImage.from_docker_image_asset(asset),
                environment=environment,
                role_name=role_name,
                retain_logs=retain_logs,
            )
            role: iam.IRole = training.task_role
        else:
            training = SageMakerTraining(
                self,
                "TrainJob",
                asset=amd64_image(self, "TrainImage", image=image),
                environment=environment,
                output_uri=f"s3://{work.bucket_name}/{runs}sagemaker-output/",  # within its grant
                role_name=role_name,
            )
            role = training.role
        # The train step reads the champion and the staged data and stages the candidate; only
        # the register step (a Lambda step) writes the registry.
        registry.grant_read(role, model=self.model_name)
        work.grant_read_write(role, f"{runs}*")
        acknowledge_grant_wildcards(role, buckets=[work_bucket, registry.bucket], object_prefixes=(runs,))
        return training

    def _build_definition(self) -> sfn.IChainable:
        """The steps in order; any final failure names its step, notifies and fails the run."""
        # The run fails with the cause the notification carries (the missing data URI, ...).
        failed = sfn.Fail(self, "Failed", error="RetrainingFailed", cause_path="$.cause")
        notify_failure = self._step("NotifyFailure", "notify_failure").next(failed)
        chain: list[sfn.INextable] = []
        for step in RETRAINING_STEPS:
            if step == "train" and self.training is not None:
                chain.extend(self._build_remote_train(on_failure=notify_failure))
            else:
                chain.append(self._build_task(step, on_failure=notify_failure))
        for task, following in itertools.pairwise(chain):
            task.next(cast(sfn.IChainable, following))
        chain[-1].next(sfn.Succeed(self, "RegisteredPendingApproval"))
        return cast(sfn.IChainable, chain[0])

    def _build_remote_train(self, *, on_failure: sfn.IChainable) -> list[sfn.INextable]:
        """The train task or job (``.sync``), then ``collect``; a failure of either names ``train``."""
        assert self.training is not None
        if isinstance(self.training, FargateTraining):
            train: tasks.EcsRunTask | sfn.CustomState = self.training.step(self, "Train", timeout=TRAIN_TIMEOUT)
        else:
            train = self.training.step(self, "Train")
        collect = self._step("Collect", "collect")
        retry_transient(collect)
        failed_step = self._failed_step("train", on_failure)
        for state in (train, collect):
            state.add_catch(failed_step, errors=["States.ALL"], result_path="$.error")
        return [train, collect]

    def _build_task(self, step: str, *, on_failure: sfn.IChainable) -> tasks.LambdaInvoke:
        task = self._step(step.capitalize(), step)
        retry_transient(task)
        task.add_catch(self._failed_step(step, on_failure), errors=["States.ALL"], result_path="$.error")
        return task

    def _failed_step(self, step: str, on_failure: sfn.IChainable) -> sfn.IChainable:
        """Name the failed step for the notification, then notify and fail."""
        return sfn.Pass(
            self,
            f"{step.capitalize()}Failed",
            result=sfn.Result.from_string(step),
            result_path="$.failed_step",
        ).next(on_failure)

    def _step(self, id: str, step: str) -> tasks.LambdaInvoke:
        payload = sfn.TaskInput.from_object({"step": step, "state": sfn.JsonPath.object_at("$")})
        return lambda_step(self, id, self.steps, payload)

    def _build_trigger(
        self, lock_table: dynamodb.ITable, *, retain_logs: bool
    ) -> tuple[iam.Role, SluiceFunction]:
        """The trigger function: takes the single-flight lock and starts one run."""
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
                "SLUICE_RETRAIN_LOCK_TABLE": lock_table.table_name,
                "SLUICE_RETRAIN_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
            },
        )
        lock_table.grant(role, "dynamodb:PutItem")
        self.state_machine.grant_start_execution(role)
        acknowledge(
            role,
            {
                "AwsSolutions-IAM5[Resource::*]": "X-Ray PutTraceSegments/PutTelemetryRecords support "
                "only resource '*'.",
            },
        )
        return role, trigger

    def _build_alarm_rule(
        self, alarms: Sequence[cloudwatch.IAlarm], *, model_name: str, data_uri: str, debounce: cdk.Duration
    ) -> events.Rule:
        """Send each change of one of ``alarms`` to ALARM to the trigger."""
        return events.Rule(
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
                    self.trigger.function,
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
