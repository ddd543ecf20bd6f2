"""Judging a deployed model version by its endpoint metrics: health, the canary loop, A/B tests.

Health of a version comes from the endpoint's own metrics (namespace ``Sluice/Endpoint``,
dimensions Model, Version, service), so a canary judges the new version alone, not the mix.

:func:`run_canary` does what CodeDeploy's canary/linear configurations do in AWS -- shift in
steps, watch health, finish or roll back -- through :class:`EndpointTraffic`'s alias changes and
CloudWatch, so it works the same on the embedded local AWS, which has no CodeDeploy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.names import ENDPOINT_NAMESPACE

if TYPE_CHECKING:
    from sluice.serving.traffic import EndpointTraffic



@dataclass(frozen=True)
class Health:
    """A version's endpoint metrics over a window."""

    model_version: int
    invocations: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0
    rows: float = 0.0
    latency_avg_ms: float | None = None
    latency_max_ms: float | None = None
    positive_probability: float | None = None
    predicted_positive: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.invocations if self.invocations else 0.0

    @property
    def positive_rate(self) -> float | None:
        return self.predicted_positive / self.rows if self.rows else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_rate"] = self.error_rate
        out["positive_rate"] = self.positive_rate
        return out


@dataclass(frozen=True)
class HealthPolicy:
    """When a canary step fails.

    Parameters
    ----------
    max_errors
        Server errors (5xx) of the new version allowed per step (default 0).
    max_latency_ms
        Mean latency of the new version (default 1,000 ms).
    positive_bounds
        Allowed mean positive-class probability (default 0.01-0.99): the model-quality check.
    min_invocations
        Requests the new version must have served in a step for it to pass (default 1).
    """

    max_errors: float = 0.0
    max_latency_ms: float = 1000.0
    positive_bounds: tuple[float, float] = (0.01, 0.99)
    min_invocations: int = 1

    def breaches(self, health: Health) -> list[str]:
        found = []
        if health.errors > self.max_errors:
            found.append(f"{health.errors:g} server error(s) (allowed {self.max_errors:g})")
        if health.latency_avg_ms is not None and health.latency_avg_ms > self.max_latency_ms:
            found.append(f"mean latency {health.latency_avg_ms:.1f} ms > {self.max_latency_ms:g} ms")
        low, high = self.positive_bounds
        p = health.positive_probability
        if p is not None and not low <= p <= high:
            found.append(f"mean positive probability {p:.3f} outside [{low:g}, {high:g}]")
        return found


@dataclass
class CanaryResult:
    model_version: int
    outcome: str  # "promoted" | "rolled_back"
    steps: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_health(
    model: str, model_version: int, *, service: str, start: datetime, end: datetime | None = None
) -> Health:
    """Endpoint metrics of one model version between ``start`` and ``end`` (default now).

    ``service`` is the endpoint's ``POWERTOOLS_SERVICE_NAME`` dimension (none if empty).
    """
    # A minute past now: CloudWatch (and moto) compare timestamps against a whole-second end.
    end = end or datetime.now(UTC) + timedelta(minutes=1)
    dimensions = [
        {"Name": "Model", "Value": model},
        {"Name": "Version", "Value": str(model_version)},
    ]
    if service:
        dimensions.append({"Name": "service", "Value": service})
    cw = aws.client("cloudwatch")

    def stat(name: str, statistic: str) -> float | None:
        points = cw.get_metric_statistics(
            Namespace=ENDPOINT_NAMESPACE,
            MetricName=name,
            Dimensions=dimensions,
            StartTime=start,
            EndTime=end,
            Period=60,
            Statistics=[statistic, "SampleCount"],
        )["Datapoints"]
        if not points:
            return None
        if statistic == "Sum":
            return float(sum(p["Sum"] for p in points))
        if statistic == "Maximum":
            return float(max(p["Maximum"] for p in points))
        count = sum(p["SampleCount"] for p in points)
        return float(sum(p["Average"] * p["SampleCount"] for p in points) / count) if count else None

    return Health(
        model_version=model_version,
        invocations=stat("Invocations", "Sum") or 0.0,
        errors=stat("Errors", "Sum") or 0.0,
        client_errors=stat("ClientErrors", "Sum") or 0.0,
        rows=stat("Rows", "Sum") or 0.0,
        latency_avg_ms=stat("Latency", "Average"),
        latency_max_ms=stat("Latency", "Maximum"),
        positive_probability=stat("PositiveProbability", "Average"),
        predicted_positive=stat("PredictedPositive", "Sum") or 0.0,
    )


def run_canary(
    traffic: EndpointTraffic,
    model_version: int,
    *,
    steps: Sequence[float] = (0.1,),
    interval_s: float = 300.0,
    policy: HealthPolicy | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None],
) -> CanaryResult:
    """Shift to ``model_version`` in ``steps`` (weights), check its health after each, then promote.

    ``steps=(0.1,)`` with 5 minutes is CodeDeploy's Canary10Percent5Minutes; ``(0.1, 0.2, ...)``
    is a linear configuration. A breach rolls back to 100 % on the previous version at once.
    """
    policy = policy or HealthPolicy()
    weights = [float(w) for w in steps]
    if not weights or any(not 0.0 < w < 1.0 for w in weights) or weights != sorted(weights):
        raise SluiceError(f"canary steps must be increasing weights between 0 and 1, got {list(steps)!r}")
    if interval_s < 0:
        raise SluiceError(f"canary interval must be >= 0 seconds, got {interval_s}")
    traffic.lambda_version_of(model_version)  # deployed?
    result = CanaryResult(model_version=model_version, outcome="promoted")
    for weight in weights:
        started = datetime.now(UTC) - timedelta(seconds=1)
        traffic.shift(model_version, weight, kind="traffic")
        sleep(interval_s)
        health = traffic.health(model_version, start=started)
        breaches = policy.breaches(health)
        if not breaches and health.invocations < policy.min_invocations:
            breaches = [f"only {health.invocations:g} request(s) reached it (need {policy.min_invocations})"]
        step = {"weight": weight, "health": health.to_dict(), "breaches": breaches}
        result.steps.append(step)
        if on_step is not None:
            on_step(step)
        if breaches:
            traffic.rollback()
            result.outcome = "rolled_back"
            result.reason = "; ".join(breaches)
            return result
    traffic.promote(model_version)
    return result


def compare_health(stats: Sequence[Health]) -> dict[str, Any]:
    """Per-version statistics and, for two versions, a test of their positive rates.

    The test is a two-proportion z-test on the share of rows predicted positive (counts from
    the ``PredictedPositive`` and ``Rows`` metrics): does the new version decide differently?
    """
    out: dict[str, Any] = {"versions": [s.to_dict() for s in stats]}
    if len(stats) == 2:
        out["test"] = two_proportion_test(
            stats[0].predicted_positive, stats[0].rows, stats[1].predicted_positive, stats[1].rows
        )
    return out


def two_proportion_test(x1: float, n1: float, x2: float, n2: float) -> dict[str, Any]:
    """Two-sided two-proportion z-test (pooled); ``p_value`` is ``None`` without data in both groups."""
    if n1 <= 0 or n2 <= 0:
        return {"test": "two-proportion z", "z": None, "p_value": None, "reason": "a version has no rows"}
    from scipy import stats

    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"test": "two-proportion z", "p1": p1, "p2": p2, "z": 0.0, "p_value": 1.0}
    z = (p2 - p1) / se
    return {
        "test": "two-proportion z",
        "p1": p1,
        "p2": p2,
        "z": z,
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }
