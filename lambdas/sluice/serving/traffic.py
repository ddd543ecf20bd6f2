"""Traffic management of a model endpoint: Lambda versions per model version, weights on ``live``.

One endpoint function; each deployed model version is a published Lambda version whose
environment binds it (``SLUICE_MODEL_NAME``/``_VERSION``/``_FLAVOUR``, and the version's signed
digests ``SLUICE_MODEL_ARTIFACTS``/``_APPROVAL``). The ``live`` alias
routes traffic: ``FunctionVersion`` takes ``1 - w`` and at most one additional version takes
``w`` (Lambda's weighted alias). Every change is written to the registry's audit trail
(events ``deployed``, ``traffic``, ``promoted``, ``rolled_back``), with the Lambda versions.

:meth:`EndpointTraffic.canary`, :meth:`~EndpointTraffic.health` and
:meth:`~EndpointTraffic.compare` judge a version by its own endpoint metrics
(:mod:`sluice.serving.canary`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import Conflict, NotFound, SluiceError
from sluice.models.contract import Descriptor, library_mismatch
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT
from sluice.registry.manifest import approval_binding, version_manifest
from sluice.serving.canary import (
    CanaryResult,
    Health,
    HealthPolicy,
    compare_health,
    run_canary,
    version_health,
)

if TYPE_CHECKING:
    from sluice.registry.records import VersionRecord
    from sluice.registry.store import ModelRegistry

ALIAS = "live"
FLAVOURS = ("onnx", "sklearn", "python")
#: Which kind of endpoint serves each flavour: the zip function has ONNX Runtime and numpy only;
#: the container image has scikit-learn, pandas and the model project's own package.
ENDPOINT_KIND = {"onnx": "zip", "sklearn": "container", "python": "container"}
_UPDATE_TIMEOUT_S = 120.0
ENVIRONMENT_LIMIT = 4096  # bytes of environment variable names and values Lambda allows a function
# JSON {library: version} of the endpoint image's pins, set by the stage (e.g. {"scikit-learn": "1.9.1"}).
SERVING_LIBRARIES = "SLUICE_SERVING_LIBRARIES"


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


class EndpointTraffic:
    """Deploy model versions to one endpoint function and route its ``live`` alias.

    Parameters
    ----------
    function_name
        The endpoint function (``sluice-<stage>-<model>-endpoint`` in the stages).
    model_name
        The registered model it serves.
    registry
        A :class:`sluice.registry.store.ModelRegistry`: approval checks and the audit trail.
    actor
        Who acts, for the audit trail (default: the caller's identity verified by STS, asked
        the first time the endpoint changes).
    sleep, clock
        Injected in tests.
    """

    def __init__(
        self,
        *,
        function_name: str,
        model_name: str,
        registry: ModelRegistry,
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
            self._actor = self.registry.verified_caller()
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
            alias: dict[str, Any] = self._lambda.get_alias(FunctionName=self.function_name, Name=self.alias)
            return alias
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
        found: str | None = None
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
                f"(run `sluice endpoint deploy {self.model_name}:{model_version}` first)"
            )
        return found

    # --- changing -------------------------------------------------------------------------

    def deploy(self, model_version: int, *, flavour: str | None = None) -> Route:
        """Publish a Lambda version serving ``model_version`` (Approved, its approval verified); no traffic yet.

        The version binds every artifact's sha256 and the approval (``SLUICE_MODEL_ARTIFACTS``,
        ``SLUICE_MODEL_APPROVAL``), so its cold start verifies them without reading the table.
        """
        record = self.registry.require_deployable(self.model_name, model_version)
        latest = self._configuration("$LATEST")
        variables = dict(latest.get("Environment", {}).get("Variables", {}))
        flavour = self._serving_flavour(record, flavour, variables.get("SLUICE_MODEL_FLAVOUR", ""))
        if flavour != "onnx":  # an ONNX graph needs ONNX Runtime only, whatever made it
            self._check_libraries(record, variables.get(SERVING_LIBRARIES, ""))
        variables.update(
            SLUICE_MODEL_NAME=self.model_name,
            SLUICE_MODEL_VERSION=str(record.version),
            SLUICE_MODEL_FLAVOUR=flavour,
            SLUICE_MODEL_ARTIFACTS=version_manifest(record),
            SLUICE_MODEL_APPROVAL=approval_binding(record),
        )
        if sum(len(k) + len(v) for k, v in variables.items()) > ENVIRONMENT_LIMIT:
            # Lambda caps a function's variables at 4 KB: without the digests and approval the
            # version still serves, its cold start reading (and verifying) them from the table.
            variables.pop("SLUICE_MODEL_ARTIFACTS")
            variables.pop("SLUICE_MODEL_APPROVAL")
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

    def _serving_flavour(self, record: VersionRecord, requested: str | None, endpoint: str) -> str:
        """The flavour ``record`` is deployed with: one its endpoint's kind serves.

        The endpoint's kind follows its ``$LATEST`` ``SLUICE_MODEL_FLAVOUR`` (:data:`ENDPOINT_KIND`):
        a zip function (``onnx``) has no scikit-learn, a container image no ONNX Runtime. A
        container serves flavours ``sklearn`` and ``python``, and a version deploys with its own:
        ``python`` for a project's model class (which serving takes from the image's project),
        else ``sklearn``. A function that names none serves ``requested`` (default: the container's).

        Raises
        ------
        SluiceError
            If ``requested`` is no flavour.
        Conflict
            In one line naming the fix: ``requested`` is not the endpoint's flavour, or the version
            has no model for it (no ONNX graph for a zip endpoint, only one for a container).
        """
        if requested is not None and requested not in FLAVOURS:
            raise SluiceError(f"flavour must be one of {', '.join(FLAVOURS)}, got {requested!r}")
        kind = ENDPOINT_KIND
        if endpoint in FLAVOURS and requested is not None and kind[requested] != kind[endpoint]:
            raise Conflict(
                f"{self.function_name!r} is a {kind[endpoint]} endpoint serving flavour {endpoint}, not "
                f"{requested}: leave out --flavour, or deploy to a {kind[requested]} endpoint"
            )
        flavour = requested or ("onnx" if endpoint == "onnx" else None)
        if flavour is None:  # a container: the version's own
            flavour = "python" if "python" in record.flavours else "sklearn"
        if flavour in record.flavours:
            return flavour
        raise Conflict(
            f"model {self.model_name!r} version {record.version} has no {flavour} flavour "
            f"(it has: {', '.join(record.flavours) or 'none'}) for the {kind[flavour]} endpoint "
            f"{self.function_name!r}: {_flavour_fix(record, flavour)}"
        )

    def _check_libraries(self, record: VersionRecord, serving: str) -> None:
        """Refuse a version whose ``model.json`` records library versions other than the image's.

        Built-in recipe versions record none; an endpoint without :data:`SERVING_LIBRARIES`
        is not checked.

        Raises
        ------
        Conflict
            In one line naming the library and both versions.
        """
        if not serving or DESCRIPTOR_ARTIFACT not in record.artifacts:
            return
        try:
            pins = json.loads(serving)
            if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
                raise ValueError
        except ValueError:
            raise SluiceError(
                f'{SERVING_LIBRARIES} must be a JSON object of library versions, e.g. {{"scikit-learn": "1.9.1"}}'
            ) from None
        body = self.registry.fetch(self.model_name, record.version, DESCRIPTOR_ARTIFACT)
        found = library_mismatch(Descriptor.from_json(body).libraries, pins)
        if found is not None:
            library, made, has = found
            raise Conflict(
                f"model {self.model_name} v{record.version} was made with {library} {made}; the endpoint's "
                f"image has {has} (rebuild the image with {library}=={made} or re-register the model)"
            )

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

    # --- canary and A/B evidence (sluice.serving.canary) ---------------------------------

    def health(self, model_version: int, *, start: datetime, end: datetime | None = None) -> Health:
        """Endpoint metrics of one model version between ``start`` and ``end`` (default now)."""
        variables = self._configuration("$LATEST").get("Environment", {}).get("Variables", {})
        service = variables.get("POWERTOOLS_SERVICE_NAME", "")
        return version_health(self.model_name, model_version, service=service, start=start, end=end)

    def canary(
        self,
        model_version: int,
        *,
        steps: Sequence[float] = (0.1,),
        interval_s: float = 300.0,
        policy: HealthPolicy | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
    ) -> CanaryResult:
        """Shift to ``model_version`` in ``steps``, checking its health after each step.

        See :func:`sluice.serving.canary.run_canary`.
        """
        return run_canary(
            self,
            model_version,
            steps=steps,
            interval_s=interval_s,
            policy=policy,
            on_step=on_step,
            sleep=self._sleep,
        )

    def compare(
        self, versions: Sequence[int], *, start: datetime, end: datetime | None = None
    ) -> dict[str, Any]:
        """Per-version endpoint statistics and, for two versions, a test of their positive rates."""
        return compare_health([self.health(v, start=start, end=end) for v in versions])


def _flavour_fix(record: VersionRecord, flavour: str) -> str:
    """How to serve ``record``, which has no ``flavour``."""
    if "python" in record.flavours:
        return "it is a python model: deploy it to the container endpoint built from its project, without --flavour"
    if flavour == "onnx":
        return (
            "register it with a parity-checked ONNX twin (--onnx FILE) or deploy it to a container endpoint"
        )
    if flavour == "python":
        return "it is not a python model: leave out --flavour"
    return "it is an ONNX graph: deploy it to a zip endpoint"
