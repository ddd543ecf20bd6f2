"""Batch scoring pipeline: preprocess → Distributed Map over shards (score) → postprocess, in Step Functions."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.endpoint import Endpoint
from infra.constructs.nag import (
    acknowledge,
    acknowledge_grant_wildcards,
    distributed_map_child_rules,
    logical_id,
)
from infra.constructs.registry import Registry
from infra.constructs.runtime import ModelImage, SluiceFunction
from infra.constructs.storage import bucket_in, physical_bucket_name
from infra.constructs.workflow import (
    TRANSIENT_ERRORS,
    encrypted_topic,
    lambda_step,
    logged_state_machine,
    retry_transient,
)
from sluice.names import BATCH_RETRY_ATTEMPTS, SUCCEEDED

WORK_PREFIX = "batch/"
# The score step's own transient error (endpoint throttling/5xx, network, fault drills).
BATCH_TRANSIENT_ERRORS = [*TRANSIENT_ERRORS, "BatchTransientError"]


def _check_arguments(
    max_concurrency: int, schedule: scheduler.ScheduleExpression | None, scheduled_input_uri: str | None
) -> None:
    if max_concurrency < 1:
        raise ValueError(f"BatchPipeline max_concurrency must be at least 1, got {max_concurrency}")
    if (schedule is None) != (scheduled_input_uri is None):
        raise ValueError("BatchPipeline needs both schedule and scheduled_input_uri, or neither")


class BatchPipeline(Construct):
    """Batch scoring of one model: a Step Functions pipeline started by hand, schedule or S3 event.

    ``preprocess`` reads the input file, validates it against the version's registered schema,
    writes rejects (with reasons) and shards the valid rows under ``batch/<run_id>/shards/`` in
    the work bucket. A Distributed Map lists that prefix (ItemReader) and scores each shard in
    its own child (``max_concurrency`` at a time), writing child results to S3 (ResultWriter).
    ``postprocess`` joins the scored shards in input order, writes CSV or Parquet and the
    manifest. The score step retries transient errors with exponential backoff and full jitter;
    a shard that still fails is recorded, and the run then fails after the manifest names it.
    Any failure ends in a notification on a KMS-encrypted SNS topic.

    Every step is its own function (memory, timeout, handler) running the ``training`` image,
    which carries pandas and pyarrow for CSV and Parquet (the zip runtime carries neither), or
    the model's own ``image``.

    Parameters
    ----------
    registry
        The stage's registry: read the schema and (model variant) the verified artifacts.
    work_bucket
        Holds the inputs under ``input_prefix``, the runs' shards under ``batch/`` and, by
        default, the outputs under ``batch/output/<model>/<run_id>/``.
    capture_bucket
        Where the model variant captures scored rows (``source="batch"``); ``None``: no capture.
    model_name
        The registered model this pipeline scores, set on its functions as ``SLUICE_MODEL_NAME``:
        an input naming another model is refused, and outputs stay under
        ``batch/output/<model>/`` of the work bucket.
    score_via
        An :class:`Endpoint` to call (SigV4-signed ``POST /predict``) instead of loading the
        model in the score step. Default ``None``: load the model.
    image
        The model's image (:class:`~infra.constructs.runtime.ModelImage`: its project's code and
        pins on Sluice's base) for every step. Default ``None``: the ``training`` image.
    max_concurrency
        Shards scored in parallel (Distributed Map children). Default 10.
    input_prefix
        Objects created under it start a run (EventBridge). Default ``batch/input/<model>/``.
    schedule, scheduled_input_uri
        An EventBridge Scheduler expression and the input it scores. Default: no schedule.
    state_machine_name
        Physical name, so ``sluice batch run`` finds it (``sluice.names``). Default generated.
    notify_topic
        Failure notifications; a KMS-encrypted topic is created if omitted.
    retry_interval
        First retry delay of a shard (doubled per attempt, full jitter). Default 2 s.
    preprocess_memory_mb, score_memory_mb, postprocess_memory_mb
        Memory of each step (default 3008, 2048, 3008 MB); timeouts are 15 minutes.
    fault_drill
        Accept the failure drill (``faults`` in an input; ``SLUICE_BATCH_FAULT_DRILL``). Default
        ``False``: such inputs are refused. The stage sets it from ``cdk.json``.
    retain_logs
        Keep the functions' and the state machine's log groups when the stack is deleted.
    log_execution_data
        Include states' inputs and outputs in the state machine's log. Default ``False``; the
        stage sets it from ``cdk.json`` (dev only).

    Attributes
    ----------
    topic_key, notify_topic, work_bucket, role, preprocess, score, postprocess, notify, functions,
    map, log_group, state_machine, rule, scheduler_role, schedule
        Everything created; ``topic_key`` is ``None`` when ``notify_topic`` is given, and
        ``scheduler_role``/``schedule`` are ``None`` without a ``schedule``.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        work_bucket: s3.IBucket,
        capture_bucket: s3.IBucket | None,
        model_name: str,
        score_via: Endpoint | None = None,
        image: ModelImage | None = None,
        max_concurrency: int = 10,
        input_prefix: str | None = None,
        schedule: scheduler.ScheduleExpression | None = None,
        scheduled_input_uri: str | None = None,
        state_machine_name: str | None = None,
        notify_topic: sns.ITopic | None = None,
        retry_interval: cdk.Duration | None = None,
        preprocess_memory_mb: int = 3008,
        score_memory_mb: int = 2048,
        postprocess_memory_mb: int = 3008,
        fault_drill: bool = False,
        retain_logs: bool = False,
        log_execution_data: bool = False,
    ) -> None:
        super().__init__(scope, id)
        _check_arguments(max_concurrency, schedule, scheduled_input_uri)
        self.model_name = model_name
        self.fault_drill = fault_drill
        self.log_execution_data = log_execution_data
        self.score_via = score_via
        self.image = image
        self.input_prefix = input_prefix or f"{WORK_PREFIX}input/{model_name}/"
        self.topic_key: kms.Key | None = None
        if notify_topic is None:
            self.topic_key, notify_topic = encrypted_topic(
                self, "Notifications", description=f"Sluice batch scoring of {model_name}"
            )
        self.notify_topic = notify_topic
        self.work_bucket = bucket_in(self, work_bucket)
        self._work_bucket_source = work_bucket
        self.role = self._build_role(registry, work_bucket, capture_bucket)
        self._build_functions(
            self._environment(registry, capture_bucket),
            memory_mb=(preprocess_memory_mb, score_memory_mb, postprocess_memory_mb),
            retain_logs=retain_logs,
        )
        self._build_state_machine(
            max_concurrency=max_concurrency,
            retry_interval=retry_interval or cdk.Duration.seconds(2),
            state_machine_name=state_machine_name,
            retain_logs=retain_logs,
        )
        self._acknowledge_state_machine()
        self.rule = self._build_input_rule()
        self.schedule: scheduler.Schedule | None = None
        self.scheduler_role: iam.Role | None = None
        if schedule is not None and scheduled_input_uri is not None:
            self._build_schedule(schedule, scheduled_input_uri)

    # --- steps ---------------------------------------------------------------------------------

    def _build_role(
        self, registry: Registry, work_bucket: s3.IBucket, capture_bucket: s3.IBucket | None
    ) -> iam.Role:
        role = iam.Role(
            self,
            "StepsRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Sluice batch scoring steps of {self.model_name}",
        )
        registry.grant_read(role, model=self.model_name)
        self.work_bucket.grant_read_write(role, f"{WORK_PREFIX}*")
        self.notify_topic.grant_publish(role)
        buckets = [registry.bucket, work_bucket]
        if self.score_via is not None:
            self.score_via.grant_invoke(role)
        elif capture_bucket is not None:
            bucket_in(self, capture_bucket).grant_put(role, "capture/*")
            buckets.append(capture_bucket)
        acknowledge_grant_wildcards(
            role, buckets=buckets, object_prefixes=(WORK_PREFIX, "capture/", "artifacts/"), xray=True
        )
        return role

    def _environment(self, registry: Registry, capture_bucket: s3.IBucket | None) -> dict[str, str]:
        environment = {
            **registry.environment,
            "SLUICE_WORK_BUCKET": self.work_bucket.bucket_name,
            "SLUICE_NOTIFY_TOPIC_ARN": self.notify_topic.topic_arn,
            # The pipeline's scope, which no input can widen (sluice.pipelines.batch_request).
            "SLUICE_MODEL_NAME": self.model_name,
            "SLUICE_BATCH_FAULT_DRILL": "true" if self.fault_drill else "false",
        }
        if self.score_via is not None:
            environment["SLUICE_BATCH_ENDPOINT_URL"] = self.score_via.url
        elif capture_bucket is not None:
            environment["SLUICE_CAPTURE_BUCKET"] = bucket_in(self, capture_bucket).bucket_name
        return environment

    def _build_functions(
        self, environment: dict[str, str], *, memory_mb: tuple[int, int, int], retain_logs: bool
    ) -> None:
        def step(name: str, handler: str, memory_mb: int, timeout_s: int = 900) -> SluiceFunction:
            return SluiceFunction(
                self,
                name,
                handler=handler,
                container="training",
                image=self.image,
                role=self.role,
                service=f"sluice-batch-{handler.removeprefix('batch_')}",
                memory_mb=memory_mb,
                timeout_s=timeout_s,
                retain_logs=retain_logs,
                environment=environment,
            )

        preprocess_mb, score_mb, postprocess_mb = memory_mb
        self.preprocess = step("Preprocess", "batch_preprocess", preprocess_mb)
        self.score = step("Score", "batch_score", score_mb)
        self.postprocess = step("Postprocess", "batch_postprocess", postprocess_mb)
        self.notify = step("Notify", "batch_notify", 512, timeout_s=60)
        self.functions = [self.preprocess, self.score, self.postprocess, self.notify]

    # --- the state machine ---------------------------------------------------------------------

    def _build_state_machine(
        self,
        *,
        max_concurrency: int,
        retry_interval: cdk.Duration,
        state_machine_name: str | None,
        retain_logs: bool,
    ) -> None:
        notify = self._build_failure_path()
        preprocess = lambda_step(
            self,
            "PreprocessInput",
            self.preprocess.function,
            sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.object_at("$"),
                    "execution": sfn.JsonPath.string_at("$$.Execution.Name"),
                    # Identify this run's claims of its prefixes, so a retried preprocess re-enters them.
                    "execution_id": sfn.JsonPath.string_at("$$.Execution.Id"),
                    "started": sfn.JsonPath.string_at("$$.Execution.StartTime"),
                }
            ),
        )
        self.map = self._build_score_map(max_concurrency=max_concurrency, retry_interval=retry_interval)
        postprocess = lambda_step(
            self, "PostprocessOutput", self.postprocess.function, result_path="$.summary"
        )
        for task in (preprocess, postprocess):
            retry_transient(task)
        for state in (preprocess, self.map, postprocess):
            state.add_catch(notify, errors=["States.ALL"], result_path="$.error")
        done = (
            sfn.Choice(self, "RunSucceeded?")
            .when(sfn.Condition.string_equals("$.summary.status", SUCCEEDED), sfn.Succeed(self, "Scored"))
            .otherwise(notify)
        )
        self.log_group, self.state_machine = logged_state_machine(
            self,
            preprocess.next(self.map).next(postprocess).next(done),
            timeout=cdk.Duration.hours(6),
            retain_logs=retain_logs,
            state_machine_name=state_machine_name,
            include_execution_data=self.log_execution_data,
        )

    def _build_failure_path(self) -> tasks.LambdaInvoke:
        """Notify, then fail the run: where every failure ends."""
        # The run fails with the cause the notification carries (its reasons, joined).
        failed = sfn.Fail(self, "Failed", error="BatchFailed", cause_path="$.cause")
        notify = lambda_step(self, "NotifyFailure", self.notify.function)
        retry_transient(notify, max_attempts=2, jitter=False)
        notify.next(failed)
        return notify

    def _build_score_map(self, *, max_concurrency: int, retry_interval: cdk.Duration) -> sfn.DistributedMap:
        """The Distributed Map scoring one shard per child, retrying transient errors per shard."""
        score = lambda_step(self, "ScoreShard", self.score.function)
        score.add_retry(
            errors=BATCH_TRANSIENT_ERRORS,
            interval=retry_interval,
            max_attempts=BATCH_RETRY_ATTEMPTS - 1,
            backoff_rate=2.0,
            jitter_strategy=sfn.JitterType.FULL,
        )
        shard_failed = sfn.Pass(
            self,
            "ShardFailed",
            parameters={
                "shard": sfn.JsonPath.string_at("$.key"),
                "failed": True,
                "error": sfn.JsonPath.string_at("$.error.Error"),
                "cause": sfn.JsonPath.string_at("$.error.Cause"),
            },
        )
        # A failed shard is recorded, not fatal at once: the other shards finish, postprocess
        # writes the manifest naming it, and the run then fails.
        score.add_catch(shard_failed, errors=["States.ALL"], result_path="$.error")
        work = self.work_bucket
        score_map = sfn.DistributedMap(
            self,
            "ScoreShards",
            max_concurrency=max_concurrency,
            item_reader=sfn.S3ObjectsItemReader(bucket=work, prefix=sfn.JsonPath.string_at("$.shard_prefix")),
            item_selector={
                "key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
                "run": sfn.JsonPath.object_at("$.run"),
            },
            result_writer_v2=sfn.ResultWriterV2(bucket=work, prefix=f"{WORK_PREFIX}map-results"),
            result_path="$.map",
        )
        score_map.item_processor(score)
        return score_map

    def _acknowledge_state_machine(self) -> None:
        rules = {
            f"AwsSolutions-IAM5[Resource::<{logical_id(f.function)}.Arn>:*]": "Step Functions invokes each "
            "step function by version or alias; CDK's LambdaInvoke grant adds the ':*' qualifier for that."
            for f in self.functions
        }
        rules["AwsSolutions-IAM5[Resource::*]"] = (
            "X-Ray tracing and CloudWatch Logs delivery of the state machine support only resource '*' "
            "(AWS documents no narrower resource)."
        )
        rules.update(distributed_map_child_rules(self.state_machine))
        work = physical_bucket_name(self._work_bucket_source)
        rules[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{work}/*]"] = (
            "The Distributed Map's ItemReader lists the run's shard prefix and its ResultWriter writes "
            "child results: CDK scopes both to objects of the stage's work bucket."
        )
        acknowledge(self.state_machine, rules)

    # --- triggers ------------------------------------------------------------------------------

    def _build_input_rule(self) -> events.Rule:
        """Start a run for each object created under ``input_prefix``."""
        work = self.work_bucket
        return events.Rule(
            self,
            "OnInputObject",
            description=f"Batch-score {self.model_name} when a file lands under {self.input_prefix}",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [work.bucket_name]},
                    "object": {"key": [{"prefix": self.input_prefix}]},
                },
            ),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "model": self.model_name,
                            "input_uri": f"s3://{work.bucket_name}/"
                            + events.EventField.from_path("$.detail.object.key"),
                            "trigger": "s3",
                        }
                    ),
                    retry_attempts=2,
                )
            ],
        )

    def _build_schedule(self, schedule: scheduler.ScheduleExpression, input_uri: str) -> None:
        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            ),
            description=f"EventBridge Scheduler starting batch scoring of {self.model_name}",
        )
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description=f"Scheduled batch scoring of {self.model_name}",
            schedule=schedule,
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object(
                    {"model": self.model_name, "input_uri": input_uri, "trigger": "schedule"}
                ),
                role=self.scheduler_role,
                retry_attempts=2,
            ),
        )

    def grant_start(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` start runs (following them needs ``states:DescribeExecution`` too)."""
        return self.state_machine.grant_start_execution(grantee)
