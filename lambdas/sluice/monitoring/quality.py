"""The concept-drift job: live quality of each served version on its labelled predictions.

Stored labels (:mod:`sluice.monitoring.labels`) are joined with the captured predictions by
request id and row, and the live metrics (F1, accuracy, AUC or MAE, RMSE) are compared with the
metrics the version was registered with. The results go to ``Sluice/Quality``
(:mod:`sluice.monitoring.cloudwatch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice.monitoring.cloudwatch import publish, quality_metric_data
from sluice.monitoring.labels import iter_labels
from sluice.monitoring.quality_stats import DeltaInterval, QualityPolicy, delta_intervals
from sluice.monitoring.served import choose_versions, open_registry, resolve_window
from sluice.names import QUALITY_NAMESPACE
from sluice.serving.capture_reader import iter_capture
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

_MISSING = object()
#: The smallest worsening worth an alarm (``QualityPolicy.min_effect``), set per model by the stage.
MIN_EFFECT_ENV = "SLUICE_QUALITY_MIN_EFFECT"


@dataclass
class QualityResult:
    """Live metrics of one version on its labelled captured predictions."""

    model: str
    version: int
    task: str
    labelled_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    registered: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, DeltaInterval] = field(default_factory=dict)
    """Each delta's confidence interval (:func:`~sluice.monitoring.quality_stats.delta_intervals`)."""
    worse: dict[str, bool] = field(default_factory=dict)
    """Per metric, whether :class:`~sluice.monitoring.quality_stats.QualityPolicy` finds it worse."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "task": self.task,
            "labelled_rows": self.labelled_rows,
            "metrics": self.metrics,
            "registered": self.registered,
            "deltas": self.deltas,
            "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "worse": self.worse,
        }


def _task(registry: ModelRegistry, model: str, version: int, registered: Mapping[str, float]) -> str:
    """The version's task: from its descriptor (a fitted model) or its spec (the built-in recipe)."""
    try:
        artifacts = registry.get(model, version=version).artifacts
        source = "model.json" if "model.json" in artifacts else "spec.json"
        return str(json.loads(registry.fetch(model, version, source))["task"])
    except Exception:  # an older or hand-made version: fall back on its metric names
        return "classification" if "f1" in registered or "accuracy" in registered else "regression"


def _join(
    labels: Mapping[tuple[Any, int], Any], chunks: Iterable[list[dict[str, Any]]]
) -> tuple[list[Any], list[Any], list[Any]]:
    truth, predicted, scores = [], [], []
    for chunk in chunks:
        for record in chunk:
            label = labels.get((record.get("request_id"), int(record.get("row", 0))), _MISSING)
            if label is _MISSING or record.get("prediction") is None:
                continue
            truth.append(label)
            predicted.append(record["prediction"])
            scores.append(record.get("probability"))
    return truth, predicted, scores


def _aligned(truth: list[Any], predicted: list[Any]) -> tuple[Any, Any]:
    """Labels and predictions as arrays of one type (a CSV label "1" matches a prediction 1)."""
    import numpy as np

    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in predicted)
    if numeric:
        try:
            return np.asarray([float(v) for v in truth]), np.asarray(predicted, dtype=float)
        except (TypeError, ValueError):
            pass
    return np.asarray([str(v) for v in truth]), np.asarray([str(v) for v in predicted])


def _assess(
    result: QualityResult,
    truth: list[Any],
    predicted: list[Any],
    scores: list[Any],
    *,
    registered: Mapping[str, float],
    holdout_rows: int | None,
    policy: QualityPolicy,
) -> None:
    """Fill ``result`` with the live metrics, their deltas, the deltas' intervals and the verdicts.

    AUC only when every row has a score.
    """
    import numpy as np

    from sluice.models.training import prediction_metrics

    task = result.task
    use_scores = task == "classification" and all(s is not None for s in scores)
    if task == "classification":
        truth_array, predicted_array = _aligned(truth, predicted)
    else:
        truth_array = np.asarray(truth, dtype=float)
        predicted_array = np.asarray(predicted, dtype=float)
    score_array = np.asarray(scores, dtype=float) if use_scores else None
    result.metrics = prediction_metrics(task, truth_array, predicted_array, scores=score_array)
    result.registered = {k: v for k, v in registered.items() if k in result.metrics}
    result.deltas = {k: result.metrics[k] - v for k, v in result.registered.items()}
    result.intervals = delta_intervals(
        task,
        truth_array,
        predicted_array,
        registered=result.registered,
        scores=score_array,
        holdout_rows=holdout_rows,
        confidence=policy.confidence,
    )
    result.worse = {k: policy.worse(v) for k, v in result.intervals.items()}


def run_concept_check(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    window_minutes: float | None = None,
    registry: ModelRegistry | None = None,
    min_labels: int = 30,
    publish_metrics: bool = True,
    policy: QualityPolicy | None = None,
) -> list[QualityResult]:
    """Live quality of each served version on the predictions of the window that have labels.

    Labels received from the window's start up to ``now`` are joined with the window's captured
    predictions by ``(request_id, row)``. Metrics (and their deltas against the registered
    metrics, and each delta's bound nearest to no change, ``<Metric>DeltaBound``, which the
    concept-drift alarm compares with ``-min_effect``) are published to ``Sluice/Quality`` when
    at least ``min_labels`` rows matched; ``LabelledRows`` always is. ``policy`` defaults to
    :class:`QualityPolicy` with ``min_effect`` from ``SLUICE_QUALITY_MIN_EFFECT``.
    """
    policy = policy or QualityPolicy(min_effect=float(os.environ.get(MIN_EFFECT_ENV) or 0.01))
    settings.require("capture_bucket")
    start, end = resolve_window(window, now=now, minutes=window_minutes)
    registry = open_registry(settings, registry)
    chosen = choose_versions(settings, registry, model, versions, start, end)
    label_end = max(end, (now or datetime.now(UTC)).astimezone(UTC))
    labels: dict[tuple[str, int], Any] = {}
    for item in iter_labels(settings.capture_bucket, model=model, start=start, end=label_end):
        labels[(item["request_id"], int(item.get("row", 0)))] = item["label"]

    results = []
    for version in chosen:
        record = registry.get(model, version=version)
        registered = {k: float(v) for k, v in (record.metrics or {}).items() if isinstance(v, int | float)}
        task = _task(registry, model, version, registered)
        chunks = iter_capture(settings.capture_bucket, model=model, version=version, start=start, end=end)
        truth, predicted, scores = _join(labels, chunks)
        result = QualityResult(model=model, version=version, task=task, labelled_rows=len(truth))
        if len(truth) >= max(min_labels, 1):
            holdout_rows = (record.notes or {}).get("holdout_rows")
            _assess(
                result,
                truth,
                predicted,
                scores,
                registered=registered,
                holdout_rows=int(holdout_rows) if isinstance(holdout_rows, int | float) else None,
                policy=policy,
            )
        results.append(result)
    if publish_metrics:
        publish(QUALITY_NAMESPACE, quality_metric_data(results, when=end))
    return results
