"""One model's CloudWatch dashboard: traffic, latency, errors, drift, estimated and live F1, its alarms.

Graphs search the per-version metrics that ``sluice`` publishes (a version appears as it
serves), so the dashboard needs no change when versions are deployed.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from sluice.names import DRIFT_NAMESPACE, ENDPOINT_NAMESPACE, QUALITY_NAMESPACE

PERIOD = cdk.Duration.minutes(5)


def model_dashboard(
    scope: Construct,
    *,
    model_name: str,
    dashboard_name: str,
    share_tolerance: float,
    alarms: Sequence[cloudwatch.IAlarm],
    min_effect: float = 0.01,
) -> cloudwatch.Dashboard:
    """The ``Dashboard`` of ``model_name`` in ``scope``.

    ``share_tolerance`` is marked on the drift graph and ``-min_effect`` on the F1 delta graph.
    """
    dashboard = cloudwatch.Dashboard(scope, "Dashboard", dashboard_name=dashboard_name)
    dashboard.add_widgets(*_serving_widgets(model_name))
    dashboard.add_widgets(*_error_and_drift_widgets(model_name, share_tolerance))
    dashboard.add_widgets(*_feature_and_quality_widgets(model_name))
    dashboard.add_widgets(*_estimate_widgets(model_name, min_effect))
    dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=24))
    return dashboard


def _serving_widgets(model: str) -> list[cloudwatch.IWidget]:
    return [
        cloudwatch.GraphWidget(
            title="Traffic per version (invocations)",
            left=[_search(ENDPOINT_NAMESPACE, "Invocations", "Sum", model)],
            width=12,
            stacked=True,
        ),
        cloudwatch.GraphWidget(
            title="Latency (ms)",
            left=[
                _model_metric(ENDPOINT_NAMESPACE, "Latency", "p50", model, "p50"),
                _model_metric(ENDPOINT_NAMESPACE, "Latency", "p99", model, "p99"),
            ],
            width=12,
        ),
    ]


def _error_and_drift_widgets(model: str, share_tolerance: float) -> list[cloudwatch.IWidget]:
    return [
        cloudwatch.GraphWidget(
            title="Errors",
            left=[
                _model_metric(ENDPOINT_NAMESPACE, "Errors", "Sum", model, "errors"),
                _search(ENDPOINT_NAMESPACE, "ClientErrors", "Sum", model),
            ],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Dataset drift share",
            left=[_search(DRIFT_NAMESPACE, "DatasetDriftShare", "Maximum", model)],
            left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
            left_annotations=[cloudwatch.HorizontalAnnotation(value=share_tolerance, label="alarm")],
            width=12,
        ),
    ]


def _feature_and_quality_widgets(model: str) -> list[cloudwatch.IWidget]:
    top_features = cloudwatch.MathExpression(
        expression=(
            f'SELECT MAX(PSI) FROM SCHEMA("{DRIFT_NAMESPACE}", Feature, Model) '
            f"WHERE Model = '{model}' GROUP BY Feature ORDER BY MAX() DESC LIMIT 10"
        ),
        using_metrics={},
        label="PSI",
        period=PERIOD,
    )
    return [
        cloudwatch.GraphWidget(title="Top drifting features (PSI)", left=[top_features], width=12),
        cloudwatch.GraphWidget(
            title="Live F1 per version",
            left=[_search(QUALITY_NAMESPACE, "F1", "Average", model)],
            right=[_model_metric(QUALITY_NAMESPACE, "LabelledRows", "Sum", model, "labelled rows")],
            left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
            width=12,
        ),
    ]


def _estimate_widgets(model: str, min_effect: float) -> list[cloudwatch.IWidget]:
    """F1 estimated from the served probabilities (drift job) beside F1 measured on labels (quality check)."""
    return [
        cloudwatch.GraphWidget(
            title="F1 estimated (before labels) and live (labelled), worst version",
            left=[
                _model_metric(DRIFT_NAMESPACE, "EstimatedF1", "Minimum", model, "estimated F1"),
                _model_metric(QUALITY_NAMESPACE, "F1", "Minimum", model, "live F1"),
            ],
            left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="F1 against registered: estimated delta and live delta's interval bound",
            left=[
                _model_metric(
                    DRIFT_NAMESPACE, "EstimatedF1Delta", "Minimum", model, "estimated - registered"
                ),
                _model_metric(
                    QUALITY_NAMESPACE, "F1DeltaBound", "Minimum", model, "live delta, interval bound"
                ),
            ],
            left_annotations=[cloudwatch.HorizontalAnnotation(value=-min_effect, label="alarm (live)")],
            width=12,
        ),
    ]


def _search(namespace: str, metric_name: str, statistic: str, model: str) -> cloudwatch.MathExpression:
    """One line per version: a SEARCH over the ``Model,Version`` dimensions of ``metric_name``."""
    return cloudwatch.MathExpression(
        expression=(
            f'SEARCH(\'{{{namespace},Model,Version}} MetricName="{metric_name}" Model="{model}"\', '
            f"'{statistic}', {int(PERIOD.to_seconds())})"
        ),
        using_metrics={},
        label="",
        period=PERIOD,
    )


def _model_metric(
    namespace: str, metric_name: str, statistic: str, model: str, label: str
) -> cloudwatch.Metric:
    """The per-model roll-up of ``metric_name``."""
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=metric_name,
        dimensions_map={"Model": model},
        statistic=statistic,
        period=PERIOD,
        label=label,
    )
