"""One Stage per account: a stateful stack (data) and a service stack (compute and APIs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler
from constructs import Construct

from infra.config import ModelConfig, StageConfig
from infra.constructs.batch_pipeline import BatchPipeline
from infra.constructs.capture import CaptureStream
from infra.constructs.data_key import DataKey, EncryptLogGroups
from infra.constructs.endpoint import Endpoint
from infra.constructs.monitoring import MonitoredModel, Monitoring
from infra.constructs.promotion import PromotionPull
from infra.constructs.registry import Registry
from infra.constructs.registry_api import RegistryApi
from infra.constructs.retraining import RetrainingPipeline, staged_candidate_guard
from infra.constructs.roles import ServiceRoles
from infra.constructs.runtime import ModelImage
from infra.constructs.storage import secure_bucket, stage_bucket_name
from infra.model_schemas import feature_names, load_request_schema
from sluice.names import (
    STAGE_OUTPUTS,
    batch_state_machine_name,
    promotion_function_name,
    promotion_role_name,
    registry_api_role_name,
    registry_table_name,
    retrain_role_name,
    role_arn,
    train_task_role_name,
)


class StatefulStack(cdk.Stack):
    """Buckets and tables: what must survive a redeploy of the service stack."""

    def __init__(self, scope: Construct, id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, termination_protection=config.retain_data, **kwargs)
        retain = config.retain_data

        def name(purpose: str) -> str:
            return stage_bucket_name(purpose, stage=config.name, account=config.account, region=config.region)

        self.access_logs = secure_bucket(
            self, "AccessLogs", bucket_name=name("access-logs"), retain=retain, access_logs=None
        )
        # One customer-managed key for captured data, Firehose and every log group of the stage.
        self.data_key = DataKey(self, "DataKey", retain=retain)
        self.registry = Registry(
            self,
            "Registry",
            bucket_name=name("artifacts"),
            table_name=registry_table_name(config.name),
            retain=retain,
            access_logs=self.access_logs,
            audit_retention_days=config.audit_retention_days,
            readers=config.registry_readers,
            artifact_lock_days=config.artifact_lock_days,
            artifact_noncurrent_days=config.artifact_noncurrent_days,
            approval_signers=(role_arn(config.account, registry_api_role_name(config.name)),),
        )
        self.capture_bucket = secure_bucket(
            self,
            "Capture",
            bucket_name=name("capture"),
            retain=retain,
            access_logs=self.access_logs,
            encryption_key=self.data_key.key,
            expiration_days=config.capture_retention_days,
            noncurrent_days=1,  # an expired capture object is gone the next day, not 90 days later
        )
        # Label files dropped under labels/incoming/ reach the monitoring's labels function as
        # EventBridge "Object Created" events (no notification custom resource needed).
        _send_events_to_eventbridge(self.capture_bucket)
        self.work_bucket = self._build_work_bucket(config, name("work"))
        self.retrain_locks = self._build_retrain_locks(retain=retain)
        # No AwsSolutions-S1 acknowledgement on the access-log bucket: cdk-nag recognises a
        # server-access-log destination and raises no finding there.
        _outputs(
            self,
            RegistryTable=self.registry.table.table_name,
            RegistryBucket=self.registry.bucket.bucket_name,
            CaptureBucket=self.capture_bucket.bucket_name,
            WorkBucket=self.work_bucket.bucket_name,
        )

    def _build_work_bucket(self, config: StageConfig, bucket_name: str) -> s3.Bucket:
        """Scratch space of pipeline runs (staged splits, candidates, reports); runs are short-lived."""
        bucket = secure_bucket(
            self, "Work", bucket_name=bucket_name, retain=config.retain_data, access_logs=self.access_logs
        )
        bucket.add_lifecycle_rule(id="expire-runs", prefix="retraining/", expiration=cdk.Duration.days(30))
        for model in config.models:  # only a model's train role stages its candidate
            writer = role_arn(config.account, train_role(config, model))
            bucket.add_to_resource_policy(staged_candidate_guard(bucket, model=model.name, writer_arn=writer))
        # Batch inputs dropped under batch/input/ start batch runs through EventBridge rules.
        _send_events_to_eventbridge(bucket)
        return bucket

    def _build_retrain_locks(self, *, retain: bool) -> dynamodb.Table:
        # The retraining trigger's single-flight lock (one item per model): a table of its own,
        # so the trigger's PutItem reaches no registry record.
        return dynamodb.Table(
            self,
            "RetrainLocks",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
        )


def train_role(config: StageConfig, model: ModelConfig) -> str:
    """The name of the role ``model``'s train step runs as: the steps' role, or its task's or job's."""
    if model.training_compute == "lambda":
        return retrain_role_name(config.name, model.name)
    return train_task_role_name(config.name, model.name)


@dataclass(frozen=True)
class ModelServices:
    """What the service stack builds for one model: its endpoint and pipelines.

    ``batch`` loads the model in the pipeline, ``batch_via_endpoint`` calls the endpoint. The
    model's monitoring is in the stack's one :class:`Monitoring`, under the model's name.
    ``image`` is the model's own image, ``None`` without a project.
    """

    config: ModelConfig
    image: ModelImage | None
    endpoint: Endpoint
    batch: BatchPipeline
    batch_via_endpoint: BatchPipeline
    retraining: RetrainingPipeline


class ServiceStack(cdk.Stack):
    """Roles, functions, APIs and pipelines that use the stateful stack.

    Attributes
    ----------
    roles, registry_api, capture, monitoring, promotion
        The stage's shared constructs (one of each; ``promotion`` is ``None`` outside prod).
    models
        ``{model name: ModelServices}`` in the order of the stage's models.
    endpoint, batch, batch_via_endpoint, retraining
        Those of the stage's default (first) model.
    """

    def __init__(
        self, scope: Construct, id: str, *, config: StageConfig, stateful: StatefulStack, **kwargs: Any
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        self.stateful = stateful
        # Every log group of this stack (functions, state machines, API access logs, Firehose).
        cdk.Aspects.of(self).add(EncryptLogGroups(stateful.data_key.key))
        self.roles = ServiceRoles(
            self,
            "Roles",
            registry=stateful.registry,
            capture_bucket=stateful.capture_bucket,
            deployer_role_name=config.deployer_role_name,
            approver_role_name=config.approver_role_name,
        )
        # Each REST API's stage is the Sluice stage's name: URLs read /dev/... on the dev stage.
        self.registry_api = RegistryApi(
            self,
            "RegistryApi",
            registry=stateful.registry,
            approver=self.roles.approver,
            role_name=registry_api_role_name(config.name),
            retain_logs=config.retain_data,
            api_stage=config.name,
        )
        self.registry_api.grant_invoke(self.roles.approver)
        self.registry_api.grant_invoke(self.roles.deployer)
        self.capture = CaptureStream(
            self,
            "Capture",
            bucket=stateful.capture_bucket,
            stream_name=f"sluice-{config.name}-capture",
            encryption_key=stateful.data_key.key,
            retain_logs=config.retain_data,
            history_days=config.capture_retention_days,  # Athena projects only days still kept
        )
        self.monitoring = self._build_monitoring()
        # The default model's constructs keep the ids they had when a stage served one model
        # (so a deployed stage updates in place); every other model's sit under Model-<name>.
        self.models = {
            model.name: self._build_model(model, self if i == 0 else Construct(self, f"Model-{model.name}"))
            for i, model in enumerate(config.models)
        }
        default = self.models[config.model_name]
        self.endpoint, self.retraining = default.endpoint, default.retraining
        self.batch, self.batch_via_endpoint = default.batch, default.batch_via_endpoint
        self.promotion = self._build_promotion()
        self._reserve_concurrency()
        self._build_outputs()

    def _build_outputs(self) -> None:
        """What `sluice --stage` reads (sluice.names.STAGE_OUTPUTS): the default model's, and all models."""
        _outputs(
            self,
            CaptureStream=self.capture.stream_name,
            RetrainStateMachineArn=self.retraining.state_machine.state_machine_arn,
            BatchStateMachineArn=self.batch.state_machine.state_machine_arn,
            EndpointFunction=self.endpoint.function.function_name,
            EndpointUrl=self.endpoint.api.url,
            RegistryApiUrl=self.registry_api.rest.api.url,
            ModelName=self.config.model_name,
            Models=self.to_json_string(
                {
                    name: {
                        "url": m.endpoint.api.url,
                        "function": m.endpoint.function.function_name,
                        "batch": m.batch.state_machine.state_machine_arn,
                        "retrain": m.retraining.state_machine.state_machine_arn,
                    }
                    for name, m in self.models.items()
                }
            ),
        )

    def _build_monitoring(self) -> Monitoring:
        config = self.config
        return Monitoring(
            self,
            "Monitoring",
            registry=self.stateful.registry,
            capture_bucket=self.stateful.capture_bucket,
            role=self.roles.monitor,
            models=[_monitored(model) for model in config.models],
            stage_name=config.name,
            api=self.registry_api.rest.api,
            alarm_email=config.alarm_email,
            retain_logs=config.retain_data,
            log_execution_data=config.log_execution_data,
            fanout_concurrency=self._map_concurrency("drift_fanout"),
        )

    def _build_model(self, model: ModelConfig, scope: Construct) -> ModelServices:
        """One model's endpoint, batch pipelines and retraining pipeline, in ``scope``.

        A model with a project runs its own image (:class:`ModelImage`) in all of them.
        """
        image = ModelImage(model.project) if model.project else None
        endpoint = self._build_endpoint(model, scope, image)
        endpoint.grant_deploy(self.roles.deployer)
        batch, via_endpoint = self._build_batch(model, scope, endpoint, image)
        for pipeline in (batch, via_endpoint):
            pipeline.grant_start(self.roles.deployer)
        return ModelServices(
            config=model,
            image=image,
            endpoint=endpoint,
            batch=batch,
            batch_via_endpoint=via_endpoint,
            retraining=self._build_retraining(model, scope, image),
        )

    def _build_retraining(
        self, model: ModelConfig, scope: Construct, image: ModelImage | None
    ) -> RetrainingPipeline:
        config, work_bucket = self.config, self.stateful.work_bucket
        return RetrainingPipeline(
            scope,
            "Retraining",
            registry=self.stateful.registry,
            work_bucket=work_bucket,
            lock_table=self.stateful.retrain_locks,
            model_name=model.name,
            data_uri=f"s3://{work_bucket.bucket_name}/datasets/{model.name}/latest.parquet",
            image=image,
            alarms=[self.monitoring.drift_alarms[model.name], self.monitoring.quality_alarms[model.name]],
            retain_logs=config.retain_data,
            log_execution_data=config.log_execution_data,
            training_compute=model.training_compute,
            train_role_name=None if model.training_compute == "lambda" else train_role(config, model),
            steps_role_name=retrain_role_name(config.name, model.name),
        )

    def _build_endpoint(self, model: ModelConfig, scope: Construct, image: ModelImage | None) -> Endpoint:
        config = self.config
        return Endpoint(
            scope,
            "Endpoint",
            registry=self.stateful.registry,
            capture=self.capture,
            model_name=model.name,
            flavour=model.flavour,
            image=image,
            request_schema=load_request_schema(model.name),
            function_name=f"sluice-{config.name}-{model.name}-endpoint",
            memory_mb=model.memory_mb,
            rate_limit=model.rate_limit,
            burst_limit=model.burst_limit,
            error_threshold=model.error_threshold,
            latency_p99_ms=model.latency_p99_ms,
            quality_bounds=model.quality_bounds,
            retain_logs=config.retain_data,
            api_stage=config.name,
        )

    def _build_batch(
        self, model: ModelConfig, scope: Construct, endpoint: Endpoint, image: ModelImage | None
    ) -> tuple[BatchPipeline, BatchPipeline]:
        """Batch scoring (issue 7): loading the model in the pipeline, and calling the endpoint."""
        config, stateful = self.config, self.stateful
        work = "s3://" + stage_bucket_name(
            "work", stage=config.name, account=config.account, region=config.region
        )
        days = model.batch_schedule_days
        in_pipeline = BatchPipeline(
            scope,
            "Batch",
            registry=stateful.registry,
            work_bucket=stateful.work_bucket,
            capture_bucket=stateful.capture_bucket,
            model_name=model.name,
            image=image,
            state_machine_name=batch_state_machine_name(config.name, model.name),
            schedule=aws_scheduler.ScheduleExpression.rate(cdk.Duration.days(days)) if days else None,
            scheduled_input_uri=f"{work}/batch/scheduled/{model.name}/latest.parquet" if days else None,
            fault_drill=config.batch_fault_drill,
            retain_logs=config.retain_data,
            log_execution_data=config.log_execution_data,
            max_concurrency=self._map_concurrency("batch"),
        )
        via_endpoint = BatchPipeline(
            scope,
            "BatchViaEndpoint",
            registry=stateful.registry,
            work_bucket=stateful.work_bucket,
            capture_bucket=None,
            model_name=model.name,
            score_via=endpoint,
            image=image,
            input_prefix=f"batch/input-via-endpoint/{model.name}/",
            state_machine_name=batch_state_machine_name(config.name, model.name, via_endpoint=True),
            fault_drill=config.batch_fault_drill,
            retain_logs=config.retain_data,
            log_execution_data=config.log_execution_data,
            max_concurrency=self._map_concurrency("batch"),
        )
        return in_pipeline, via_endpoint

    def _build_promotion(self) -> PromotionPull | None:
        """Prod only: the function that pulls Approved versions from the source stage (dev)."""
        source = self.config.promotion_source
        if source is None:
            return None
        pull = PromotionPull(
            self,
            "Promotion",
            registry=self.stateful.registry,
            role_name=promotion_role_name(self.config.name),
            function_name=promotion_function_name(self.config.name),
            source_stage=source.stage,
            source_account=source.account,
            source_region=source.region,
            retain_logs=self.config.retain_data,
        )
        pull.grant_invoke(self.roles.deployer)
        return pull

    def _map_concurrency(self, function: str) -> int:
        """Children a Distributed Map over ``function`` runs at once: its reserved concurrency
        (so none is throttled), or 10 where it is unreserved."""
        return self.config.reserved_concurrency.get(function) or 10

    def _reserve_concurrency(self) -> None:
        """Each function's reserved concurrency from ``<stage>:reservedConcurrency`` (``infra.config``).

        Per-model functions (endpoint, retraining, batch) each get the limit: the stage reserves
        it once per model.
        """
        models = list(self.models.values())
        functions: dict[str, list[lambda_.IFunction]] = {
            "endpoint": [m.endpoint.function for m in models],
            "labels": [self.monitoring.labels],
            "registry_api": [self.registry_api.handler.function],
            "drift": [self.monitoring.job],
            "drift_fanout": [self.monitoring.fanout.function],
            "retrain": [m.retraining.steps for m in models],
            "retrain_trigger": [m.retraining.trigger.function for m in models],
            "batch": [
                f.function for m in models for p in (m.batch, m.batch_via_endpoint) for f in p.functions
            ],
            "promotion": [self.promotion.function] if self.promotion else [],
        }
        for key, limit in self.config.reserved_concurrency.items():
            for function in functions[key]:
                cfn = cast(lambda_.CfnFunction, function.node.default_child)
                cfn.reserved_concurrent_executions = limit


def _monitored(model: ModelConfig) -> MonitoredModel:
    """The model's monitoring: per-feature alarms for the features of its committed schema."""
    return MonitoredModel(
        name=model.name,
        features=feature_names(model.name),
        rate_minutes=model.drift_rate_minutes,
        window_minutes=model.drift_window_minutes,
        psi_tolerance=model.psi_tolerance,
        feature_psi_tolerance=model.feature_psi_tolerance,
        share_tolerance=model.share_tolerance,
        feature_alarm_datapoints=model.feature_alarm_datapoints,
        quality_min_effect=model.quality_min_effect,
        quality_rate_minutes=model.quality_rate_minutes,
        quality_window_minutes=model.quality_window_minutes,
    )


class SluiceStage(cdk.Stage):
    """Everything Sluice deploys into one account and region."""

    def __init__(self, scope: Construct, id: str, *, config: StageConfig) -> None:
        super().__init__(scope, id, env=cdk.Environment(account=config.account, region=config.region))
        self.config = config
        self.stateful = StatefulStack(self, "Stateful", config=config)
        self.service = ServiceStack(self, "Service", config=config, stateful=self.stateful)
        for stack in (self.stateful, self.service):
            cdk.Tags.of(stack).add("sluice:stage", config.name)


def _send_events_to_eventbridge(bucket: s3.Bucket) -> None:
    """Turn on the bucket's EventBridge notifications (no notification custom resource needed)."""
    cast(s3.CfnBucket, bucket.node.default_child).add_property_override(
        "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
    )


def _outputs(stack: cdk.Stack, **values: str) -> None:
    """Stack outputs under the names ``sluice --stage`` reads (:data:`sluice.names.STAGE_OUTPUTS`)."""
    for name, value in values.items():
        if name not in STAGE_OUTPUTS:
            raise ValueError(f"output {name} is not in sluice.names.STAGE_OUTPUTS")
        cdk.CfnOutput(stack, name, value=value)
