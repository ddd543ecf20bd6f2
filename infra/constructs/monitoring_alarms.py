"""One monitored model's CloudWatch alarms: dataset drift, per-feature drift, concept drift, estimated F1.

Metric names and dimensions are those ``sluice.monitoring.cloudwatch`` publishes; the alarms
watch the per-model roll-ups (the worst served version) because versions change at deploy time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct

from sluice.names import DRIFT_NAMESPACE, QUALITY_NAMESPACE

if TYPE_CHECKING:
    from infra.constructs.monitoring import MonitoredModel

#: The estimated-F1 alarm fires at ``ESTIMATE_EFFECT_FACTOR * quality_min_effect`` below the
#: registered F1: the estimate is a point value with no interval, and calibration drifts too.
ESTIMATE_EFFECT_FACTOR = 3


class ModelAlarms:
    """Builds one model's alarms in its scope, each named ``<prefix>-<name>`` and sent to ``action``."""

    def __init__(self, scope: Construct, model: MonitoredModel, *, prefix: str, action: cw_actions.SnsAction):
        self.scope = scope
        self.model = model
        self.prefix = prefix
        self.action = action

    def dataset_drift(self) -> cloudwatch.Alarm:
        model = self.model
        return self._alarm(
            "DatasetDrift",
            "drift-share",
            f"Share of drifting features of {model.name} (worst served version) above "
            f"{model.share_tolerance:g}",
            metric=self._metric(DRIFT_NAMESPACE, "DatasetDriftShare", "Maximum"),
            threshold=model.share_tolerance,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )

    def feature_drift(self, feature: str) -> cloudwatch.Alarm:
        """PSI above the feature's tolerance in M of the last N drift windows (``feature_alarm_datapoints``)."""
        model = self.model
        tolerance = dict(model.feature_psi_tolerance).get(feature, model.psi_tolerance)
        m, n = model.feature_alarm_datapoints
        return self._alarm(
            f"Feature-{feature}",
            f"drift-{feature}",
            f"PSI of {model.name}.{feature} (worst served version) above {tolerance:g} in {m} of the "
            f"last {n} drift windows",
            metric=self._metric(DRIFT_NAMESPACE, "PSI", "Maximum", Feature=feature),
            threshold=tolerance,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            datapoints=(m, n),
        )

    def concept_drift(self) -> cloudwatch.Alarm:
        """The whole confidence interval of live minus registered F1 below ``-quality_min_effect``.

        ``F1DeltaBound`` is the interval's end nearest to no change, so the alarm knows its
        sample size: a few hundred labels need a large drop, many thousands a small one.
        """
        model = self.model
        return self._alarm(
            "ConceptDrift",
            "f1-drop",
            f"Live F1 of {model.name} (worst served version) below its registered F1 by more than "
            f"{model.quality_min_effect:g} at 95% confidence (F1DeltaBound, the delta interval's "
            "upper end)",
            metric=self._metric(
                QUALITY_NAMESPACE, "F1DeltaBound", "Minimum", rate_minutes=model.quality_rate_minutes
            ),
            threshold=-model.quality_min_effect,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        )

    def estimated_f1(self) -> cloudwatch.Alarm:
        """Label-free early warning: ``EstimatedF1Delta`` below ``-3 * quality_min_effect`` in M of N windows."""
        model = self.model
        threshold = ESTIMATE_EFFECT_FACTOR * model.quality_min_effect
        m, n = model.feature_alarm_datapoints
        return self._alarm(
            "EstimatedF1",
            "estimated-f1-drop",
            f"Estimated F1 of {model.name} (from served probabilities, before labels; worst served "
            f"version) more than {threshold:g} below its registered F1 in {m} of the last {n} drift windows",
            metric=self._metric(DRIFT_NAMESPACE, "EstimatedF1Delta", "Minimum"),
            threshold=-threshold,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            datapoints=(m, n),
        )

    def _metric(
        self, namespace: str, name: str, statistic: str, *, rate_minutes: int | None = None, **dims: str
    ) -> cloudwatch.Metric:
        """The per-model roll-up over one run's period (the drift rate unless ``rate_minutes``)."""
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={"Model": self.model.name, **dims},
            statistic=statistic,
            period=cdk.Duration.minutes(rate_minutes or self.model.rate_minutes),
        )

    def _alarm(
        self,
        id: str,
        name: str,
        description: str,
        *,
        metric: cloudwatch.Metric,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        datapoints: tuple[int, int] = (1, 1),
    ) -> cloudwatch.Alarm:
        """``datapoints`` is ``(M, N)``: breaching in M of the last N periods (missing: not breaching)."""
        alarm = cloudwatch.Alarm(
            self.scope,
            id,
            alarm_name=f"{self.prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            datapoints_to_alarm=datapoints[0],
            evaluation_periods=datapoints[1],
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self.action)
        alarm.add_ok_action(self.action)
        return alarm
