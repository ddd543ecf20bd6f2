"""Monitoring: the scheduled drift job and its fan-out, drift and quality alarms, labels intake, dashboards.

No business logic here: the job is ``sluice.handlers.monitor`` (``sluice.monitoring``), its
fan-out :class:`~infra.constructs.drift_fanout.DriftFanout`, labels are ``sluice.handlers.labels``.
The alarms are :class:`~infra.constructs.monitoring_alarms.ModelAlarms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.constructs.api import body_models
from infra.constructs.drift_fanout import DriftFanout
from infra.constructs.monitoring_alarms import ModelAlarms
from infra.constructs.monitoring_dashboard import model_dashboard
from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards, logical_id
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction
from infra.constructs.storage import bucket_in
from infra.constructs.workflow import encrypted_topic
from sluice.names import DRIFT_NAMESPACE, MAX_LABELS, QUALITY_NAMESPACE

LABELS_INCOMING = "labels/incoming/"
_LABEL_SCALAR = [apigw.JsonSchemaType.NUMBER, apigw.JsonSchemaType.STRING, apigw.JsonSchemaType.BOOLEAN]
#: The ``POST /labels`` body: ``{"model", "labels": [{"request_id", "label", "row"?}]}``, nothing else,
#: at most ``MAX_LABELS`` labels. Which models are known, the function decides (``SLUICE_LABEL_MODELS``).
LABELS_BODY_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="LabelsBody",
    type=apigw.JsonSchemaType.OBJECT,
    required=["model", "labels"],
    additional_properties=False,
    properties={
        "model": apigw.JsonSchema(
            type=apigw.JsonSchemaType.STRING, pattern="^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
        ),
        "labels": apigw.JsonSchema(
            type=apigw.JsonSchemaType.ARRAY,
            min_items=1,
            max_items=MAX_LABELS,
            items=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                required=["request_id", "label"],
                additional_properties=False,
                properties={
                    "request_id": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.STRING, min_length=1, max_length=200
                    ),
                    "label": apigw.JsonSchema(type=_LABEL_SCALAR, min_length=1, max_length=200),
                    "row": apigw.JsonSchema(type=apigw.JsonSchemaType.INTEGER, minimum=0),
                },
            ),
        ),
    },
)


@dataclass(frozen=True)
class MonitoredModel:
    """One monitored model (one endpoint) and its tolerances.

    Parameters
    ----------
    name
        Registered model name (the ``Model`` metric dimension).
    features
        Features that get their own alarm (PSI of the worst served version). Default none: the
        dataset-share alarm still covers every feature.
    rate_minutes
        How often the drift job runs, in minutes (1 or more). Default 60.
    window_minutes
        Minutes of captured data each run compares; default the rate, so windows tile.
    psi_tolerance
        Per-feature alarm above this PSI. Default 0.2 (the usual "significant shift" mark).
    feature_psi_tolerance
        Overrides of ``psi_tolerance`` by feature.
    feature_alarm_datapoints
        ``(M, N)``: a per-feature alarm (and the estimated-F1 alarm) fires when M of the last N
        drift windows breach. Default ``(2, 3)``: one noisy window does not page.
    share_tolerance
        Dataset alarm when the share of drifting features exceeds this. Default 0: any feature
        flagged by the drift policy (family-wise 5% false-alarm rate, see ``sluice.monitoring.policy``).
    quality_min_effect
        Concept-drift alarm when the whole 95% interval of live minus registered F1 lies below
        ``-quality_min_effect`` (``F1DeltaBound``, published per window with its sample size in
        it); also the concept check's verdict (``min_effect`` in the quality schedule's input).
        Default 0.01.
    estimate_alarm
        Also alarm, before labels arrive, when the F1 estimated from the served probabilities
        (``EstimatedF1Delta``, binary classifiers with a calibration) is more than
        ``3 * quality_min_effect`` below the registered F1 in M of N drift windows. Default true.
    quality_rate_minutes
        How often the concept-drift check runs, in minutes. Default 60.
    quality_window_minutes
        Minutes of captured predictions the concept check joins with labels. Default one day.
    """

    name: str
    features: tuple[str, ...] = ()
    rate_minutes: int = 60
    window_minutes: int | None = None
    psi_tolerance: float = 0.2
    feature_psi_tolerance: tuple[tuple[str, float], ...] = ()
    share_tolerance: float = 0.0
    feature_alarm_datapoints: tuple[int, int] = (2, 3)
    quality_min_effect: float = 0.01
    estimate_alarm: bool = True
    quality_rate_minutes: int = 60
    quality_window_minutes: int = 1440


class Monitoring(Construct):
    """The drift job on a schedule per model, its alarms to an SNS topic, labels intake, dashboards.

    Parameters
    ----------
    registry
        The model registry (profiles and registered metrics are read from it).
    capture_bucket
        Captured requests; reports go under ``reports/drift/`` and labels under ``labels/``.
        Label files dropped under ``labels/incoming/<model>/`` are ingested through the bucket's
        EventBridge notifications, which the bucket must have turned on.
    role
        Execution role of the drift job (the stage's ``monitor`` role).
    models
        The monitored models.
    stage_name
        Prefix of alarm, schedule and dashboard names (``sluice-<stage>-<model>-...``).
    api
        REST API to which ``POST /labels`` is added (IAM auth). Default: no HTTP intake.
    alarm_email
        Address subscribed to the alarm topic.
    retain_logs
        Keep the functions' log groups when the stack is deleted.
    log_execution_data
        Log the drift state machine's inputs and outputs (dev only).
    fanout_concurrency
        Children the drift fan-out's Map runs at once: the fan-out function's reserved
        concurrency, so no child is throttled. Default 10.

    Attributes
    ----------
    topic, topic_key, job, fanout, labels, labels_role, labels_resource, labels_model, scheduler_role,
    schedules, quality_schedules, alarms, drift_alarms, feature_alarms, quality_alarms,
    estimate_alarms, dashboards, label_drop_rule
        Everything created, by model name where there is one per model; ``labels_resource`` and
        ``labels_model`` (the body's request model) are ``None`` without ``api``.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        capture_bucket: s3.IBucket,
        role: iam.Role,
        models: Sequence[MonitoredModel],
        stage_name: str,
        api: apigw.IRestApi | None = None,
        alarm_email: str | None = None,
        retain_logs: bool = False,
        log_execution_data: bool = False,
        fanout_concurrency: int = 10,
    ) -> None:
        super().__init__(scope, id)
        capture = bucket_in(self, capture_bucket)
        self.topic_key, self.topic = self._build_topic(alarm_email)
        alarm_action = cw_actions.SnsAction(self.topic)
        self.fanout = DriftFanout(
            self,
            "DriftFanout",
            registry=registry,
            capture_bucket=capture_bucket,
            role=role,
            state_machine_name=f"sluice-{stage_name}-drift",
            max_concurrency=fanout_concurrency,
            retain_logs=retain_logs,
            log_execution_data=log_execution_data,
        )
        self.job = self._build_job(registry, capture_bucket, role, retain_logs=retain_logs)
        self.labels_role, self.labels = self._build_labels(
            capture_bucket, label_models=[m.name for m in models], retain_logs=retain_logs
        )
        self.label_drop_rule = self._build_label_drop_rule(capture)
        self.labels_resource: apigw.Resource | None = None
        self.labels_model: apigw.Model | None = None
        if api is not None:
            self.labels_resource, self.labels_model = self._build_labels_api(api)
        self.scheduler_role = self._build_scheduler_role()
        self.schedules: dict[str, scheduler.Schedule] = {}
        self.quality_schedules: dict[str, scheduler.Schedule] = {}
        self.drift_alarms: dict[str, cloudwatch.Alarm] = {}
        self.feature_alarms: dict[str, dict[str, cloudwatch.Alarm]] = {}
        self.quality_alarms: dict[str, cloudwatch.Alarm] = {}
        self.estimate_alarms: dict[str, cloudwatch.Alarm] = {}
        self.dashboards: dict[str, cloudwatch.Dashboard] = {}
        for model in models:
            self._monitor(model, stage_name=stage_name, alarm_action=alarm_action)

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        """Every alarm: dataset drift, per-feature drift, concept drift and estimated F1."""
        out = [*self.drift_alarms.values(), *self.quality_alarms.values(), *self.estimate_alarms.values()]
        for by_feature in self.feature_alarms.values():
            out += list(by_feature.values())
        return out

    def grant_put_metrics(self, grantee: iam.IGrantable) -> iam.Grant:
        """``cloudwatch:PutMetricData`` limited to the drift and quality namespaces."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["cloudwatch:PutMetricData"],
            resource_arns=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": [DRIFT_NAMESPACE, QUALITY_NAMESPACE]}},
        )

    def grant_invoke_labels(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` call the labels function directly."""
        return self.labels.grant_invoke(grantee)

    # --- shared parts ----------------------------------------------------------------------------

    def _build_topic(self, alarm_email: str | None) -> tuple[kms.Key, sns.Topic]:
        key, topic = encrypted_topic(self, "Alarms", description="Sluice alarm topic")
        # CloudWatch alarms publish to the encrypted topic with the key on the service's behalf.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            )
        )
        if alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        return key, topic

    def _build_job(
        self, registry: Registry, capture_bucket: s3.IBucket, role: iam.Role, *, retain_logs: bool
    ) -> lambda_.Function:
        """The drift job (``sluice.handlers.monitor``), run by the stage's monitor role."""
        capture = bucket_in(self, capture_bucket)
        job = SluiceFunction(
            self,
            "DriftJob",
            handler="monitor",
            container="training",
            role=role,
            service="sluice-monitor",
            memory_mb=2048,
            timeout_s=900,
            retain_logs=retain_logs,
            environment={
                **registry.environment,
                "SLUICE_CAPTURE_BUCKET": capture.bucket_name,
                "SLUICE_REPORTS_BUCKET": capture.bucket_name,
                # Windows larger than one child's share are handed to the fan-out.
                "SLUICE_DRIFT_STATE_MACHINE_ARN": self.fanout.state_machine_arn,
            },
        ).function
        self.fanout.grant_start(role)
        registry.grant_read(role)
        capture.grant_read(role, "capture/*")
        capture.grant_read(role, "labels/*")
        capture.grant_read_write(role, "reports/*")
        self.grant_put_metrics(role)
        acknowledge_grant_wildcards(
            role,
            buckets=[capture_bucket, registry.bucket],
            object_prefixes=("artifacts/", "capture/", "labels/", "reports/"),
            xray=True,
            metrics=True,
        )
        return job

    def _build_labels(
        self, capture_bucket: s3.IBucket, *, label_models: Sequence[str], retain_logs: bool
    ) -> tuple[iam.Role, lambda_.Function]:
        """The labels intake (``sluice.handlers.labels``) and its own role.

        ``SLUICE_LABEL_MODELS`` lists the monitored models: the function takes labels for those
        only, since labels feed their concept-drift alarms (and through them, retraining).
        """
        capture = bucket_in(self, capture_bucket)
        role = iam.Role(
            self,
            "LabelsRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Sluice ground-truth labels intake",
        )
        labels = SluiceFunction(
            self,
            "Labels",
            handler="labels",
            role=role,
            service="sluice-labels",
            memory_mb=256,
            timeout_s=60,
            retain_logs=retain_logs,
            environment={
                "SLUICE_CAPTURE_BUCKET": capture.bucket_name,
                "SLUICE_LABEL_MODELS": ",".join(label_models),
            },
        ).function
        capture.grant_read(role, f"{LABELS_INCOMING}*")
        capture.grant_put(role, "labels/model=*")
        acknowledge_grant_wildcards(
            role, buckets=[capture_bucket], object_prefixes=(LABELS_INCOMING, "labels/model="), xray=True
        )
        return role, labels

    def _build_label_drop_rule(self, capture: s3.IBucket) -> events.Rule:
        """Ingest label files dropped under ``labels/incoming/`` (the bucket's EventBridge notifications)."""
        return events.Rule(
            self,
            "LabelDrops",
            description="Ingest label files dropped under labels/incoming/ in the capture bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [capture.bucket_name]},
                    "object": {"key": [{"prefix": LABELS_INCOMING}]},
                },
            ),
            targets=[events_targets.LambdaFunction(self.labels, retry_attempts=2)],
        )

    def _build_labels_api(self, api: apigw.IRestApi) -> tuple[apigw.Resource, apigw.Model]:
        """``POST /labels``: IAM auth, the body validated against :data:`LABELS_BODY_SCHEMA` (any content type)."""
        model = apigw.Model(
            self, "LabelsBody", rest_api=api, content_type="application/json", schema=LABELS_BODY_SCHEMA
        )
        validator = apigw.RequestValidator(self, "LabelsValidator", rest_api=api, validate_request_body=True)
        resource = api.root.add_resource("labels")
        resource.add_method(
            "POST",
            apigw.LambdaIntegration(self.labels),
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=validator,
            request_models=body_models(model),
        )
        return resource, model

    def _build_scheduler_role(self) -> iam.Role:
        role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            ),
            description="EventBridge Scheduler invoking the Sluice drift job",
        )
        self.job.grant_invoke(role)
        acknowledge(
            role,
            {
                f"AwsSolutions-IAM5[Resource::<{logical_id(self.job)}.Arn>:*]": "grant_invoke covers the "
                "drift job's versions and aliases (':*'); the role may invoke that one function only."
            },
        )
        return role

    # --- per model -------------------------------------------------------------------------------

    def _monitor(self, model: MonitoredModel, *, stage_name: str, alarm_action: cw_actions.SnsAction) -> None:
        if model.rate_minutes < 1 or model.quality_rate_minutes < 1:
            raise ValueError(f"monitored model {model.name!r}: rates must be at least one minute")
        m, n = model.feature_alarm_datapoints
        if not 1 <= m <= n:
            raise ValueError(f"monitored model {model.name!r}: feature_alarm_datapoints needs 1 <= M <= N")
        prefix = f"sluice-{stage_name}-{model.name}"
        key = model.name
        scope = Construct(self, f"Model-{model.name}")
        self.schedules[key] = self._build_schedule(
            scope,
            "Schedule",
            name=f"{prefix}-drift",
            description=f"Data-drift check of {model.name}",
            rate_minutes=model.rate_minutes,
            payload={
                "model": model.name,
                "window_minutes": model.window_minutes or model.rate_minutes,
                "concept": False,
            },
        )
        self.quality_schedules[key] = self._build_schedule(
            scope,
            "QualitySchedule",
            name=f"{prefix}-quality",
            description=f"Concept-drift check of {model.name} on labelled predictions",
            rate_minutes=model.quality_rate_minutes,
            payload={
                "model": model.name,
                "drift": False,
                "quality_window_minutes": model.quality_window_minutes,
                "min_effect": model.quality_min_effect,
            },
        )
        alarms = ModelAlarms(scope, model, prefix=prefix, action=alarm_action)
        self.drift_alarms[key] = alarms.dataset_drift()
        self.feature_alarms[key] = {feature: alarms.feature_drift(feature) for feature in model.features}
        self.quality_alarms[key] = alarms.concept_drift()
        if model.estimate_alarm:
            self.estimate_alarms[key] = alarms.estimated_f1()
        self.dashboards[key] = model_dashboard(
            scope,
            model_name=model.name,
            dashboard_name=f"{prefix}-endpoint",
            share_tolerance=model.share_tolerance,
            min_effect=model.quality_min_effect,
            alarms=[
                self.drift_alarms[key],
                self.quality_alarms[key],
                *([self.estimate_alarms[key]] if key in self.estimate_alarms else []),
                *self.feature_alarms[key].values(),
            ],
        )

    def _build_schedule(
        self,
        scope: Construct,
        id: str,
        *,
        name: str,
        description: str,
        rate_minutes: int,
        payload: dict[str, object],
    ) -> scheduler.Schedule:
        """Invoke the drift job every ``rate_minutes`` with ``payload``."""
        return scheduler.Schedule(
            scope,
            id,
            schedule_name=name,
            description=description,
            schedule=scheduler.ScheduleExpression.rate(cdk.Duration.minutes(rate_minutes)),
            target=scheduler_targets.LambdaInvoke(
                self.job,
                input=scheduler.ScheduleTargetInput.from_object(payload),
                role=self.scheduler_role,
                retry_attempts=2,
            ),
        )
