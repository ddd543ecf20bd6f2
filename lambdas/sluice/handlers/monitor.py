"""Drift monitor. Trigger: EventBridge Scheduler, input ``{"model": ..., "window_minutes": ...}``.

Optional input keys: ``versions`` (default: the served ones), ``drift`` and ``concept`` (both
default true: run the data-drift check, the concept-drift check), ``quality_window_minutes``
(default 1440: labels arrive late), ``min_effect`` (the concept check's smallest worsening worth
an alarm, default ``SLUICE_QUALITY_MIN_EFFECT`` or 0.01: the stage passes each model's) and
``bytes_per_child`` (capture bytes per drift fan-out child, default
``SLUICE_DRIFT_BYTES_PER_CHILD``). The stage schedules drift often and concept drift hourly.

Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_CAPTURE_BUCKET, SLUICE_REPORTS_BUCKET,
SLUICE_DRIFT_STATE_MACHINE_ARN (optional: the drift fan-out; unset, every window runs here).
Publishes ``Sluice/Drift`` and ``Sluice/Quality`` metrics and writes the drift reports (see
``sluice.monitoring.drift_job`` and ``sluice.monitoring.quality``). A window larger than one
child's share is handed to the drift state machine (``sluice.monitoring.fanout``) and the result
names its execution under ``fanout``. An input error or a model
without served versions is logged and returned as ``{"error": ...}``, not raised: the scheduler
would retry it in vain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.errors import SluiceError
from sluice.monitoring.fanout import STATE_MACHINE_ENV, bytes_per_child_from_env, run_drift
from sluice.monitoring.quality import run_concept_check
from sluice.monitoring.quality_stats import QualityPolicy
from sluice.settings import Settings

logger = Logger()
metrics = Metrics(namespace="Sluice/Monitoring")


@dataclass(frozen=True)
class MonitorEvent:
    """The schedule's input, checked."""

    model: str
    window_minutes: float = 60.0
    versions: tuple[int, ...] = ()
    drift: bool = True
    concept: bool = True
    quality_window_minutes: float = 1440.0
    min_effect: float | None = None
    bytes_per_child: int | None = None

    @classmethod
    def parse(cls, event: Any) -> MonitorEvent:
        if not isinstance(event, dict):
            raise SluiceError("monitor event must be an object with 'model'")
        model = event.get("model")
        if not isinstance(model, str) or not model:
            raise SluiceError("monitor event: 'model' must be a non-empty string")
        minutes = {}
        for key, default in (("window_minutes", 60.0), ("quality_window_minutes", 1440.0)):
            value = event.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 44640:
                raise SluiceError(f"monitor event: '{key}' must be a number of minutes in (0, 44640]")
            minutes[key] = float(value)
        versions = event.get("versions") or []
        if not isinstance(versions, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in versions
        ):
            raise SluiceError("monitor event: 'versions' must be a list of version numbers")
        flags = {}
        for key in ("drift", "concept"):
            flags[key] = event.get(key, True)
            if not isinstance(flags[key], bool):
                raise SluiceError(f"monitor event: '{key}' must be true or false")
        return cls(
            **_optional_numbers(event),
            model=model,
            versions=tuple(versions),
            drift=flags["drift"],
            concept=flags["concept"],
            window_minutes=minutes["window_minutes"],
            quality_window_minutes=minutes["quality_window_minutes"],
        )


def _optional_numbers(event: dict[str, Any]) -> dict[str, Any]:
    """``min_effect`` in [0, 1) and ``bytes_per_child`` of at least 1, when given."""
    found: dict[str, Any] = {}
    effect = event.get("min_effect")
    if effect is not None:
        if isinstance(effect, bool) or not isinstance(effect, int | float) or not 0 <= effect < 1:
            raise SluiceError("monitor event: 'min_effect' must be a number in [0, 1)")
        found["min_effect"] = float(effect)
    size = event.get("bytes_per_child")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SluiceError("monitor event: 'bytes_per_child' must be a whole number of bytes, at least 1")
        found["bytes_per_child"] = size
    return found


@metrics.log_metrics
@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = MonitorEvent.parse(event)
        settings = Settings.from_env()
        drift = (
            run_drift(
                settings,
                model=request.model,
                versions=request.versions or None,
                window_minutes=request.window_minutes,
                state_machine_arn=os.environ.get(STATE_MACHINE_ENV, ""),
                bytes_per_child=request.bytes_per_child or bytes_per_child_from_env(),
            )
            if request.drift
            else None
        )
        quality = (
            run_concept_check(
                settings,
                model=request.model,
                versions=request.versions or None,
                window_minutes=request.quality_window_minutes,
                policy=None if request.min_effect is None else QualityPolicy(min_effect=request.min_effect),
            )
            if request.concept
            else []
        )
    except SluiceError as error:
        logger.warning("monitor run refused", extra={"error": str(error)})
        metrics.add_metric(name="MonitorErrors", unit=MetricUnit.Count, value=1)
        return {"error": str(error), "status": error.status}
    metrics.add_metric(name="MonitorRuns", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = {
        "model": request.model,
        "drift": [run.summary() for run in drift.runs] if drift else [],
        "quality": [q.to_dict() for q in quality],
    }
    if drift and drift.fanout:
        result["fanout"] = drift.fanout.to_dict()
    logger.info("monitor run", extra={"drift": result["drift"]})
    return result
