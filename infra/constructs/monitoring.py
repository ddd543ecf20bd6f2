"""Monitoring: the scheduled drift job, drift and quality alarms, labels intake and dashboards.

No business logic here: the job is ``sluice.handlers.monitor`` (``sluice.monitoring``), labels
are ``sluice.handlers.labels``. Metric names and dimensions are those ``sluice.monitoring``
publishes; the alarms watch the per-model roll-ups because versions change at deploy time.
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
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction
from infra.constructs.storage import bucket_in

DRIFT_NAMESPACE = "Sluice/Drift"
QUALITY_NAMESPACE = "Sluice/Quality"
ENDPOINT_NAMESPACE = "Sluice/Endpoint"
LABELS_INCOMING = "labels/incoming/"


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
    share_tolerance
        Dataset alarm when the share of drifting features exceeds this. Default 0: any feature
        flagged by the drift policy (family-wise 5% false-alarm rate, see ``sluice.drift``).
    f1_drop
        Concept-drift alarm when live F1 is more than this below the registered F1. Default 0.05.
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
    f1_drop: float = 0.05
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

    Attributes
    ----------
    topic, topic_key, job, labels, labels_role, scheduler_role, schedules, quality_schedules, alarms, drift_alarms,
    feature_alarms, quality_alarms, dashboards, label_drop_rule
        Everything created, by model name where there is one per model.
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
    ) -> None:
        super().__init__(scope, id)
        capture = bucket_in(self, capture_bucket)
        self.topic_key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="Sluice alarm topic")
        self.topic = sns.Topic(self, "Alarms", master_key=self.topic_key, enforce_ssl=True)
        # CloudWatch alarms publish to the encrypted topic with the key on the service's behalf.
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        alarm_action = cw_actions.SnsAction(self.topic)

        self.job = SluiceFunction(
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
                "SLUICE_REGISTRY_TABLE": registry.table.table_name,
                "SLUICE_REGISTRY_BUCKET": registry.bucket.bucket_name,
                "SLUICE_CAPTURE_BUCKET": capture.bucket_name,
                "SLUICE_REPORTS_BUCKET": capture.bucket_name,
            },
        ).function
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

        self.labels_role = iam.Role(
            self,
            "LabelsRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Sluice ground-truth labels intake",
        )
        self.labels = SluiceFunction(
            self,
            "Labels",
            handler="labels",
            role=self.labels_role,
            service="sluice-labels",
            memory_mb=256,
            timeout_s=60,
            retain_logs=retain_logs,
            environment={"SLUICE_CAPTURE_BUCKET": capture.bucket_name},
        ).function
        capture.grant_read(self.labels_role, f"{LABELS_INCOMING}*")
        capture.grant_put(self.labels_role, "labels/model=*")
        acknowledge_grant_wildcards(
            self.labels_role,
            buckets=[capture_bucket],
            object_prefixes=(LABELS_INCOMING, "labels/model="),
            xray=True,
        )
        self.label_drop_rule = events.Rule(
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
        self.labels_resource: apigw.Resource | None = None
        if api is not None:
            self.labels_resource = api.root.add_resource("labels")
            self.labels_resource.add_method(
                "POST",
                apigw.LambdaIntegration(self.labels),
                authorization_type=apigw.AuthorizationType.IAM,
            )

        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}},
            ),
            description="EventBridge Scheduler invoking the Sluice drift job",
        )
        self.job.grant_invoke(self.scheduler_role)
        acknowledge(
            self.scheduler_role,
            {
                f"AwsSolutions-IAM5[Resource::<{_logical_id(self.job)}.Arn>:*]": "grant_invoke covers the "
                "drift job's versions and aliases (':*'); the role may invoke that one function only."
            },
        )
        self.schedules: dict[str, scheduler.Schedule] = {}
        self.quality_schedules: dict[str, scheduler.Schedule] = {}
        self.drift_alarms: dict[str, cloudwatch.Alarm] = {}
        self.feature_alarms: dict[str, dict[str, cloudwatch.Alarm]] = {}
        self.quality_alarms: dict[str, cloudwatch.Alarm] = {}
        self.dashboards: dict[str, cloudwatch.Dashboard] = {}
        for model in models:
            self._monitor(model, stage_name=stage_name, alarm_action=alarm_action)

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        """Every alarm: dataset drift, per-feature drift and concept drift."""
        out = list(self.drift_alarms.values()) + list(self.quality_alarms.values())
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

    def _monitor(self, model: MonitoredModel, *, stage_name: str, alarm_action: cw_actions.SnsAction) -> None:
        if model.rate_minutes < 1 or model.quality_rate_minutes < 1:
            raise ValueError(f"monitored model {model.name!r}: rates must be at least one minute")
        prefix = f"sluice-{stage_name}-{model.name}"
        period = cdk.Duration.minutes(model.rate_minutes)
        key = model.name
        scope = Construct(self, f"Model-{model.name}")

        self.schedules[key] = scheduler.Schedule(
            scope,
            "Schedule",
            schedule_name=f"{prefix}-drift",
            description=f"Data-drift check of {model.name}",
            schedule=scheduler.ScheduleExpression.rate(period),
            target=scheduler_targets.LambdaInvoke(
                self.job,
                input=scheduler.ScheduleTargetInput.from_object(
                    {
                        "model": model.name,
                        "window_minutes": model.window_minutes or model.rate_minutes,
                        "concept": False,
                    }
                ),
                role=self.scheduler_role,
                retry_attempts=2,
            ),
        )
        quality_period = cdk.Duration.minutes(model.quality_rate_minutes)
        self.quality_schedules[key] = scheduler.Schedule(
            scope,
            "QualitySchedule",
            schedule_name=f"{prefix}-quality",
            description=f"Concept-drift check of {model.name} on labelled predictions",
            schedule=scheduler.ScheduleExpression.rate(quality_period),
            target=scheduler_targets.LambdaInvoke(
                self.job,
                input=scheduler.ScheduleTargetInput.from_object(
                    {
                        "model": model.name,
                        "drift": False,
                        "quality_window_minutes": model.quality_window_minutes,
                    }
                ),
                role=self.scheduler_role,
                retry_attempts=2,
            ),
        )

        def metric(
            namespace: str, name: str, statistic: str, every: cdk.Duration = period, **dims: str
        ) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace,
                metric_name=name,
                dimensions_map={"Model": model.name, **dims},
                statistic=statistic,
                period=every,
            )

        def alarm(id: str, name: str, description: str, **props) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                scope,
                id,
                alarm_name=f"{prefix}-{name}",
                alarm_description=description,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                **props,
            )
            created.add_alarm_action(alarm_action)
            created.add_ok_action(alarm_action)
            return created

        self.drift_alarms[key] = alarm(
            "DatasetDrift",
            "drift-share",
            f"Share of drifting features of {model.name} (worst served version) above "
            f"{model.share_tolerance:g}",
            metric=metric(DRIFT_NAMESPACE, "DatasetDriftShare", "Maximum"),
            threshold=model.share_tolerance,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        overrides = dict(model.feature_psi_tolerance)
        self.feature_alarms[key] = {}
        for feature in model.features:
            tolerance = overrides.get(feature, model.psi_tolerance)
            self.feature_alarms[key][feature] = alarm(
                f"Feature-{feature}",
                f"drift-{feature}",
                f"PSI of {model.name}.{feature} (worst served version) above {tolerance:g}",
                metric=metric(DRIFT_NAMESPACE, "PSI", "Maximum", Feature=feature),
                threshold=tolerance,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            )
        self.quality_alarms[key] = alarm(
            "ConceptDrift",
            "f1-drop",
            f"Live F1 of {model.name} (worst served version) more than {model.f1_drop:g} below "
            "its registered F1",
            metric=metric(QUALITY_NAMESPACE, "F1Delta", "Minimum", quality_period),
            threshold=-model.f1_drop,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        )
        self.dashboards[key] = self._dashboard(scope, model, prefix=prefix)

    def _dashboard(self, scope: Construct, model: MonitoredModel, *, prefix: str) -> cloudwatch.Dashboard:
        period = cdk.Duration.minutes(5)
        name = model.name

        def search(
            namespace: str, dims: str, metric_name: str, statistic: str, label: str
        ) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(
                expression=(
                    f'SEARCH(\'{{{namespace},{dims}}} MetricName="{metric_name}" Model="{name}"\', '
                    f"'{statistic}', {int(period.to_seconds())})"
                ),
                using_metrics={},
                label=label,
                period=period,
            )

        def model_metric(namespace: str, metric_name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace,
                metric_name=metric_name,
                dimensions_map={"Model": name},
                statistic=statistic,
                period=period,
                label=label,
            )

        top_features = cloudwatch.MathExpression(
            expression=(
                f'SELECT MAX(PSI) FROM SCHEMA("{DRIFT_NAMESPACE}", Feature, Model) '
                f"WHERE Model = '{name}' GROUP BY Feature ORDER BY MAX() DESC LIMIT 10"
            ),
            using_metrics={},
            label="PSI",
            period=period,
        )
        dashboard = cloudwatch.Dashboard(scope, "Dashboard", dashboard_name=f"{prefix}-endpoint")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Traffic per version (invocations)",
                left=[search(ENDPOINT_NAMESPACE, "Model,Version", "Invocations", "Sum", "")],
                width=12,
                stacked=True,
            ),
            cloudwatch.GraphWidget(
                title="Latency (ms)",
                left=[
                    model_metric(ENDPOINT_NAMESPACE, "Latency", "p50", "p50"),
                    model_metric(ENDPOINT_NAMESPACE, "Latency", "p99", "p99"),
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Errors",
                left=[
                    model_metric(ENDPOINT_NAMESPACE, "Errors", "Sum", "errors"),
                    search(ENDPOINT_NAMESPACE, "Model,Version", "ClientErrors", "Sum", ""),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Dataset drift share",
                left=[search(DRIFT_NAMESPACE, "Model,Version", "DatasetDriftShare", "Maximum", "")],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=model.share_tolerance, label="alarm")
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Top drifting features (PSI)", left=[top_features], width=12),
            cloudwatch.GraphWidget(
                title="Live F1 per version",
                left=[search(QUALITY_NAMESPACE, "Model,Version", "F1", "Average", "")],
                right=[model_metric(QUALITY_NAMESPACE, "LabelledRows", "Sum", "labelled rows")],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
                width=12,
            ),
        )
        model_alarms = [
            self.drift_alarms[name],
            self.quality_alarms[name],
            *self.feature_alarms[name].values(),
        ]
        dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=model_alarms, width=24))
        return dashboard


def _logical_id(function: Construct) -> str:
    stack = cdk.Stack.of(function)
    return stack.resolve(stack.get_logical_id(function.node.default_child))
