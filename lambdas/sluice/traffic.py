"""Traffic management of a model endpoint: Lambda versions per model version, weights on ``live``.

One endpoint function; each deployed model version is a published Lambda version whose
environment binds it (``SLUICE_MODEL_NAME``/``_VERSION``/``_FLAVOUR``). The ``live`` alias
routes traffic: ``FunctionVersion`` takes ``1 - w`` and at most one additional version takes
``w`` (Lambda's weighted alias). Every change is written to the registry's audit trail
(events ``deployed``, ``traffic``, ``promoted``, ``rolled_back``), with the Lambda versions.

:meth:`EndpointTraffic.canary` does what CodeDeploy's canary/linear configurations do in AWS --
shift in steps, watch health, finish or roll back -- directly against the alias and CloudWatch,
so it works the same on the embedded local AWS, which has no CodeDeploy.

Health of a version comes from the endpoint's own metrics (namespace ``Sluice/Endpoint``,
dimensions Model, Version, service), so a canary judges the new version alone, not the mix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice import aws
from sluice.errors import Conflict, NotFound, SluiceError
from sluice.registry import serving_manifest

ALIAS = "live"
NAMESPACE = "Sluice/Endpoint"
FLAVOURS = ("onnx", "sklearn")
_UPDATE_TIMEOUT_S = 120.0
ENVIRONMENT_LIMIT = 4096  # bytes of environment variable names and values Lambda allows a function


def default_function_name(model: str, stage: str = "dev") -> str:
    """The physical name the stage gives a model's endpoint function (``infra/stage.py``)."""
    return f"sluice-{stage}-{model}-endpoint"


@dataclass(frozen=True)
class Route:
    """One Lambda version on the alias and the model version it serves."""

    lambda_version: str
    model_version: int | None
    flavour: str
    weight: float


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


class EndpointTraffic:
    """Deploy model versions to one endpoint function and route its ``live`` alias.

    Parameters
    ----------
    function_name
        The endpoint function (``sluice-<stage>-<model>-endpoint`` in the stages).
    model_name
        The registered model it serves.
    registry
        A :class:`sluice.registry.ModelRegistry`: approval checks and the audit trail.
    actor
        Who acts, for the audit trail (default: the caller's identity from STS).
    sleep, clock
        Injected in tests.
    """

    def __init__(
        self,
        *,
        function_name: str,
        model_name: str,
        registry: Any,
        actor: str | None = None,
        alias: str = ALIAS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.function_name = function_name
        self.model_name = model_name
        self.registry = registry
        self.alias = alias
        self._actor = actor
        self._sleep = sleep
        self._config_cache: dict[str, dict[str, Any]] = {}

    # --- reading --------------------------------------------------------------------------

    @property
    def actor(self) -> str:
        if self._actor is None:
            caller = self.registry.caller()
            self._actor = caller if caller != "unknown" else "sluice-cli"
        return self._actor

    @property
    def _lambda(self) -> Any:
        return aws.client("lambda")

    def _configuration(self, qualifier: str) -> dict[str, Any]:
        # Published versions are immutable: their configuration can be cached.
        found = self._config_cache.get(qualifier)
        if found is None:
            try:
                found = self._lambda.get_function_configuration(
                    FunctionName=self.function_name, Qualifier=qualifier
                )
            except self._lambda.exceptions.ResourceNotFoundException:
                raise NotFound(
                    f"endpoint function {self.function_name!r} has no version {qualifier}"
                ) from None
            if qualifier != "$LATEST":
                self._config_cache[qualifier] = found
        return found

    def _binding(self, qualifier: str) -> tuple[int | None, str]:
        env = self._configuration(qualifier).get("Environment", {}).get("Variables", {})
        version = env.get("SLUICE_MODEL_VERSION", "")
        return (int(version) if version.isdigit() else None), env.get("SLUICE_MODEL_FLAVOUR", "")

    def _get_alias(self) -> dict[str, Any]:
        try:
            return self._lambda.get_alias(FunctionName=self.function_name, Name=self.alias)
        except self._lambda.exceptions.ResourceNotFoundException:
            raise NotFound(
                f"endpoint function {self.function_name!r} or its alias {self.alias!r} does not exist "
                "(deploy the stage first, or pass --function)"
            ) from None

    def routes(self) -> list[Route]:
        """The alias's versions with their weights, primary first."""
        alias = self._get_alias()
        extra = {
            str(k): float(v)
            for k, v in (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}).items()
        }
        primary = str(alias["FunctionVersion"])
        out = []
        for version, weight in [(primary, 1.0 - sum(extra.values())), *extra.items()]:
            model_version, flavour = self._binding(version)
            out.append(Route(version, model_version, flavour, round(weight, 6)))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "function": self.function_name,
            "alias": self.alias,
            "model": self.model_name,
            "routes": [asdict(r) for r in self.routes()],
        }

    def lambda_version_of(self, model_version: int) -> str:
        """The newest published Lambda version bound to ``model_version``."""
        found = None
        paginator = self._lambda.get_paginator("list_versions_by_function")
        for page in paginator.paginate(FunctionName=self.function_name):
            for item in page["Versions"]:
                if item["Version"] == "$LATEST":
                    continue
                env = item.get("Environment", {}).get("Variables", {})
                bound = (env.get("SLUICE_MODEL_NAME"), env.get("SLUICE_MODEL_VERSION"))
                if bound == (self.model_name, str(model_version)) and (
                    found is None or int(item["Version"]) > int(found)
                ):
                    found = item["Version"]
        if found is None:
            raise NotFound(
                f"model {self.model_name!r} version {model_version} is not deployed to {self.function_name!r} "
                f"(run `sluice endpoint deploy {self.model_name} {model_version}` first)"
            )
        return found

    # --- changing -------------------------------------------------------------------------

    def deploy(self, model_version: int, *, flavour: str | None = None) -> Route:
        """Publish a Lambda version serving ``model_version`` (which must be Approved); no traffic yet."""
        record = self.registry.require_deployable(self.model_name, model_version)
        latest = self._configuration("$LATEST")
        variables = dict(latest.get("Environment", {}).get("Variables", {}))
        flavour = flavour or variables.get("SLUICE_MODEL_FLAVOUR") or "sklearn"
        if flavour not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        if flavour not in record.flavours:
            raise Conflict(
                f"model {self.model_name!r} version {record.version} has no {flavour} flavour "
                f"(it has: {', '.join(record.flavours)}); the zip endpoint needs a parity-checked model.onnx"
            )
        variables.update(
            SLUICE_MODEL_NAME=self.model_name,
            SLUICE_MODEL_VERSION=str(record.version),
            SLUICE_MODEL_FLAVOUR=flavour,
            SLUICE_MODEL_ARTIFACTS=serving_manifest(record, flavour),
        )
        if sum(len(k) + len(v) for k, v in variables.items()) > ENVIRONMENT_LIMIT:
            # Lambda caps a function's variables at 4 KB: without the digests the version still
            # serves, its cold start reading them from the registry table.
            variables.pop("SLUICE_MODEL_ARTIFACTS")
        updated = self._lambda.update_function_configuration(
            FunctionName=self.function_name, Environment={"Variables": variables}
        )
        revision = self._wait_updated(updated.get("RevisionId"))
        kwargs = {"RevisionId": revision} if revision else {}
        published = self._lambda.publish_version(
            FunctionName=self.function_name,
            Description=f"model {self.model_name} version {record.version} ({flavour})",
            **kwargs,
        )
        route = Route(published["Version"], record.version, flavour, 0.0)
        self.registry.record_event(
            self.model_name,
            "deployed",
            actor=self.actor,
            version=record.version,
            detail={
                "function": self.function_name,
                "lambda_version": route.lambda_version,
                "flavour": flavour,
            },
        )
        return route

    def _wait_updated(self, revision: str | None) -> str | None:
        deadline = time.monotonic() + _UPDATE_TIMEOUT_S
        while True:
            config = self._lambda.get_function_configuration(FunctionName=self.function_name)
            status = config.get("LastUpdateStatus", "Successful")
            if status != "InProgress":
                if status == "Failed":
                    raise SluiceError(
                        f"updating {self.function_name!r} failed: {config.get('LastUpdateStatusReason', '')}"
                    )
                return config.get("RevisionId") or revision
            if time.monotonic() > deadline:
                raise SluiceError(f"{self.function_name!r} is still updating after {_UPDATE_TIMEOUT_S:.0f} s")
            self._sleep(1.0)

    def _set_alias(self, primary: str, extra: dict[str, float] | None = None) -> None:
        routing = {"AdditionalVersionWeights": {k: round(v, 6) for k, v in (extra or {}).items() if v > 0}}
        self._lambda.update_alias(
            FunctionName=self.function_name, Name=self.alias, FunctionVersion=primary, RoutingConfig=routing
        )

    def shift(self, model_version: int, weight: float, *, kind: str = "traffic") -> list[Route]:
        """Send ``weight`` (0-1) of the traffic to ``model_version``, the rest to the primary version.

        A manual split or an A/B test; ``weight=1`` is :meth:`promote`, ``0`` removes the version.
        """
        if not isinstance(weight, int | float) or math.isnan(weight) or not 0.0 <= weight <= 1.0:
            raise SluiceError(f"weight must be between 0 and 1, got {weight!r}")
        if weight >= 1.0:
            return self.promote(model_version)
        self.registry.require_deployable(self.model_name, model_version)
        target = self.lambda_version_of(model_version)
        before = self.routes()
        primary = before[0]
        if primary.lambda_version == target:
            raise Conflict(
                f"model {self.model_name!r} version {model_version} already takes the primary share of "
                f"{self.alias!r}; shift another version, or promote/rollback"
            )
        self._set_alias(primary.lambda_version, {target: weight})
        after = self.routes()
        self._audit(kind, model_version, before, after)
        return after

    def promote(self, model_version: int) -> list[Route]:
        """Route 100 % to ``model_version``; the registry's ``champion`` alias follows."""
        self.registry.require_deployable(self.model_name, model_version)
        target = self.lambda_version_of(model_version)
        before = self.routes()
        self._set_alias(target)
        after = self.routes()
        self.registry.set_alias(self.model_name, "champion", model_version, actor=self.actor)
        self._audit("promoted", model_version, before, after)
        return after

    def rollback(self) -> list[Route]:
        """Undo the last change: drop a version under test, or return to the version promoted before.

        With two versions on the alias, 100 % goes back to the primary. With one, the alias goes
        back to the primary before the last ``promoted`` event of this function.
        """
        before = self.routes()
        if len(before) > 1:
            self._set_alias(before[0].lambda_version)
            after = self.routes()
            self._audit("rolled_back", before[0].model_version, before, after)
            return after
        current = before[0].lambda_version
        for event in reversed(self.registry.history(self.model_name)):
            detail = event.get("detail") or {}
            if event["kind"] != "promoted" or detail.get("function") != self.function_name:
                continue
            if detail.get("to", [{}])[0].get("lambda_version") != current:
                continue
            previous = detail.get("from", [{}])[0]
            if previous.get("lambda_version") and previous["lambda_version"] != current:
                self._set_alias(previous["lambda_version"])
                after = self.routes()
                if after[0].model_version is not None:
                    self.registry.set_alias(
                        self.model_name, "champion", after[0].model_version, actor=self.actor
                    )
                self._audit("rolled_back", after[0].model_version, before, after)
                return after
        raise Conflict(f"{self.function_name!r}: nothing to roll back to (no earlier promotion of the alias)")

    def _audit(
        self, kind: str, model_version: int | None, before: Sequence[Route], after: Sequence[Route]
    ) -> None:
        self.registry.record_event(
            self.model_name,
            kind,
            actor=self.actor,
            version=model_version,
            detail={
                "function": self.function_name,
                "alias": self.alias,
                "from": [asdict(r) for r in before],
                "to": [asdict(r) for r in after],
            },
        )

    # --- canary ---------------------------------------------------------------------------

    def health(self, model_version: int, *, start: datetime, end: datetime | None = None) -> Health:
        """Endpoint metrics of one model version between ``start`` and ``end`` (default now)."""
        # A minute past now: CloudWatch (and moto) compare timestamps against a whole-second end.
        end = end or datetime.now(UTC) + timedelta(minutes=1)
        service = (
            self._configuration("$LATEST")
            .get("Environment", {})
            .get("Variables", {})
            .get("POWERTOOLS_SERVICE_NAME", "")
        )
        dimensions = [
            {"Name": "Model", "Value": self.model_name},
            {"Name": "Version", "Value": str(model_version)},
        ]
        if service:
            dimensions.append({"Name": "service", "Value": service})
        cw = aws.client("cloudwatch")

        def stat(name: str, statistic: str) -> float | None:
            points = cw.get_metric_statistics(
                Namespace=NAMESPACE,
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

    def canary(
        self,
        model_version: int,
        *,
        steps: Sequence[float] = (0.1,),
        interval_s: float = 300.0,
        policy: HealthPolicy | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
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
        self.lambda_version_of(model_version)  # deployed?
        result = CanaryResult(model_version=model_version, outcome="promoted")
        for weight in weights:
            started = datetime.now(UTC) - timedelta(seconds=1)
            self.shift(model_version, weight, kind="traffic")
            self._sleep(interval_s)
            health = self.health(model_version, start=started)
            breaches = policy.breaches(health)
            if not breaches and health.invocations < policy.min_invocations:
                breaches = [
                    f"only {health.invocations:g} request(s) reached it (need {policy.min_invocations})"
                ]
            step = {"weight": weight, "health": health.to_dict(), "breaches": breaches}
            result.steps.append(step)
            if on_step is not None:
                on_step(step)
            if breaches:
                self.rollback()
                result.outcome = "rolled_back"
                result.reason = "; ".join(breaches)
                return result
        self.promote(model_version)
        return result

    # --- A/B evidence ---------------------------------------------------------------------

    def compare(
        self, versions: Sequence[int], *, start: datetime, end: datetime | None = None
    ) -> dict[str, Any]:
        """Per-version endpoint statistics and, for two versions, a test of their positive rates.

        The test is a two-proportion z-test on the share of rows predicted positive (counts from
        the ``PredictedPositive`` and ``Rows`` metrics): does the new version decide differently?
        """
        stats = [self.health(v, start=start, end=end) for v in versions]
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
