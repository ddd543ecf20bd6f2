"""CloudWatch metrics of the monitoring job: their names, the values of a run, and publishing.

The namespaces are in :mod:`sluice.names`, which the CDK app's alarms and dashboards read too.

``Sluice/Drift``, dimensions ``Model, Version, Feature``: ``PSI``, ``JSDistance``, ``PValue``,
``Drifted`` (0/1), and with ``detailed_metrics`` ``Wasserstein`` and ``MissingRate`` (each one
is a billed custom metric; every statistic is in the JSON report); ``Model, Version``: ``DatasetDriftShare``,
``DatasetDrift``, ``DriftedFeatures``, ``Rows``, and for binary classifiers with a calibration
the label-free ``EstimatedF1``, ``EstimatedAccuracy``, ``EstimatedAUC`` and ``EstimatedF1Delta``
(estimate minus registered F1). Roll-ups over the served versions (the worst one), which the
alarms watch because versions change at deploy time: ``Model, Feature``: ``PSI``, ``Drifted``;
``Model``: ``DatasetDriftShare``, ``Rows`` and the ``Estimated*`` values.

``Sluice/Quality``, dimensions ``Model, Version`` and the roll-up ``Model`` (worst version):
``F1``, ``Accuracy``, ``AUC``, ``MAE``, ``RMSE``, ``R2``, each with ``<name>Delta`` (live minus
registered), ``<name>DeltaBound`` (the end of the delta's confidence interval nearest to no
change, negative when worse: the concept-drift alarm's metric) and ``LabelledRows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws

if TYPE_CHECKING:
    from sluice.monitoring.drift_job import DriftRun
    from sluice.monitoring.quality import QualityResult

METRICS_PER_CALL = 500  # PutMetricData takes up to 1,000 values and 1 MB per call

# Drift statistic -> metric name, for FeatureDrift attributes. Each (model, version, feature,
# metric) is a billed custom metric, so the rest of the statistics stay in the JSON report
# unless ``detailed_metrics`` asks for them.
FEATURE_METRICS = {"psi": "PSI", "js_distance": "JSDistance", "p_value": "PValue"}
DETAILED_FEATURE_METRICS = {"wasserstein": "Wasserstein", "target_missing_rate": "MissingRate"}
QUALITY_METRICS = {
    "f1": "F1",
    "accuracy": "Accuracy",
    "roc_auc": "AUC",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R2",
}
# Which direction is worse, for the roll-up over versions (higher-is-better metrics take the min).
_LOWER_IS_WORSE = {"F1", "Accuracy", "AUC", "R2"}


def datum(
    name: str, value: float, dims: Mapping[str, Any], when: datetime, unit: str = "None"
) -> dict[str, Any]:
    """One ``MetricData`` entry."""
    return {
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": str(v)} for k, v in dims.items()],
        "Timestamp": when,
        "Value": float(value),
        "Unit": unit,
    }


def publish(namespace: str, data: Sequence[dict[str, Any]]) -> int:
    """``PutMetricData`` in batches; returns how many values were sent."""
    client = aws.client("cloudwatch")
    for i in range(0, len(data), METRICS_PER_CALL):
        client.put_metric_data(Namespace=namespace, MetricData=list(data[i : i + METRICS_PER_CALL]))
    return len(data)


def drift_metric_data(runs: Sequence[DriftRun], *, detailed: bool = False) -> list[dict[str, Any]]:
    """CloudWatch values of the runs, per version and rolled up per model (worst version)."""
    per_feature = {**FEATURE_METRICS, **(DETAILED_FEATURE_METRICS if detailed else {})}
    data: list[dict[str, Any]] = []
    feature_psi: dict[tuple[str, str], float] = {}
    feature_drifted: dict[tuple[str, str], float] = {}
    share: dict[str, float] = {}
    rows: dict[str, float] = {}
    estimated: dict[tuple[str, str], float] = {}  # (model, metric) -> worst version's estimate
    for run in runs:
        report, when = run.report, run.end
        version_dims = {"Model": run.model, "Version": run.version}
        n_rows = report.target.n_rows
        rows[run.model] = rows.get(run.model, 0.0) + n_rows
        data.append(datum("Rows", n_rows, version_dims, when, "Count"))
        if n_rows == 0:
            continue  # nothing was compared: no drift values, so alarms see missing data
        data.append(datum("DatasetDriftShare", report.dataset_drift_share, version_dims, when))
        data.append(datum("DatasetDrift", float(report.dataset_drift), version_dims, when))
        data.append(datum("DriftedFeatures", report.n_drifted, version_dims, when, "Count"))
        share[run.model] = max(share.get(run.model, 0.0), report.dataset_drift_share)
        if run.estimate is not None:
            for name, value in _estimated(run.estimate, run.registered).items():
                data.append(datum(name, value, version_dims, when))
                key = (run.model, name)
                estimated[key] = min(estimated.get(key, value), value)
        for feature in report.features:
            dims = {**version_dims, "Feature": feature.name}
            data.append(datum("Drifted", float(feature.drifted), dims, when))
            for attribute, name in per_feature.items():
                value = getattr(feature, attribute)
                if value is not None and value == value and abs(value) != float("inf"):
                    data.append(datum(name, value, dims, when))
            key = (run.model, feature.name)
            feature_drifted[key] = max(feature_drifted.get(key, 0.0), float(feature.drifted))
            if feature.psi is not None:
                feature_psi[key] = max(feature_psi.get(key, 0.0), feature.psi)
    when = max((run.end for run in runs), default=datetime.now(UTC))
    for model, value in rows.items():
        data.append(datum("Rows", value, {"Model": model}, when, "Count"))
    for model, value in share.items():
        data.append(datum("DatasetDriftShare", value, {"Model": model}, when))
    for (model, feature_name), value in feature_drifted.items():
        data.append(datum("Drifted", value, {"Model": model, "Feature": feature_name}, when))
    for (model, feature_name), value in feature_psi.items():
        data.append(datum("PSI", value, {"Model": model, "Feature": feature_name}, when))
    for (model, name), value in estimated.items():
        data.append(datum(name, value, {"Model": model}, when))
    return data


def _estimated(estimate: Any, registered: Mapping[str, float]) -> dict[str, float]:
    """``EstimatedF1``, ``EstimatedAccuracy``, ``EstimatedAUC`` of a label-free estimate, and
    ``EstimatedF1Delta`` (estimate minus the registered F1) when the version registered an F1."""
    values = {"EstimatedF1": estimate.f1, "EstimatedAccuracy": estimate.accuracy}
    if estimate.roc_auc is not None:
        values["EstimatedAUC"] = estimate.roc_auc
    if "f1" in registered:
        values["EstimatedF1Delta"] = estimate.f1 - float(registered["f1"])
    return values


def quality_metric_data(results: Sequence[QualityResult], *, when: datetime) -> list[dict[str, Any]]:
    """CloudWatch values of the quality results, per version and rolled up per model (worst version)."""
    data: list[dict[str, Any]] = []
    worst: dict[tuple[str, str], float] = {}
    rows: dict[str, float] = {}
    for result in results:
        dims = {"Model": result.model, "Version": result.version}
        data.append(datum("LabelledRows", result.labelled_rows, dims, when, "Count"))
        rows[result.model] = rows.get(result.model, 0.0) + result.labelled_rows
        values = {QUALITY_METRICS[k]: v for k, v in result.metrics.items() if k in QUALITY_METRICS}
        values.update(
            {f"{QUALITY_METRICS[k]}Delta": v for k, v in result.deltas.items() if k in QUALITY_METRICS}
        )
        values.update(
            {
                f"{QUALITY_METRICS[k]}DeltaBound": v.bound
                for k, v in result.intervals.items()
                if k in QUALITY_METRICS
            }
        )
        for name, value in values.items():
            data.append(datum(name, value, dims, when))
            # A DeltaBound is signed so that lower is worse, whatever its metric.
            lower_is_worse = name.endswith("DeltaBound") or name.removesuffix("Delta") in _LOWER_IS_WORSE
            key = (result.model, name)
            if key not in worst:
                worst[key] = value
            else:
                worst[key] = min(worst[key], value) if lower_is_worse else max(worst[key], value)
    for model, value in rows.items():
        data.append(datum("LabelledRows", value, {"Model": model}, when, "Count"))
    for (model, name), value in worst.items():
        data.append(datum(name, value, {"Model": model}, when))
    return data
