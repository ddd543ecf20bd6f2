"""EventBridge delivery for the embedded local AWS: rules fire Lambda, Step Functions and SNS targets.

moto 5.2.5 matches rules and delivers to SQS, CloudWatch Logs, archives and other buses, but
``put_events`` raises ``NotImplementedError`` as soon as a matching rule has a Lambda, Step
Functions or SNS target, and it fires disabled rules. :class:`EventRouter` fills that gap:

* :meth:`EventRouter.install` applies :data:`SEND_TO_TARGETS`, a patch of
  ``moto.events.models.Rule.send_to_targets``, so a matching, *enabled* rule hands its
  Lambda/Step Functions/SNS targets to the router and leaves the others to moto. Rule matching
  is moto's own ``EventPattern`` (exact, prefix, suffix, anything-but, numeric, exists,
  equals-ignore-case, wildcard, cidr, ``$or``).
* The router delivers on a small thread pool through the moto server's public API, like
  EventBridge delivers asynchronously: Lambda ``invoke(InvocationType="Event")``, Step Functions
  ``start_execution`` and SNS ``publish``. Each target's ``Input``, ``InputPath`` or
  ``InputTransformer`` is honoured (:mod:`localaws.events.inputs`). Step Functions executions
  get a deterministic name: the input's ``executionName`` when it carries one (so duplicate
  events start one run), else one derived from the event id, rule and target.
* Every delivery is recorded (:attr:`EventRouter.deliveries`) so tests can assert on them, and
  :meth:`EventRouter.wait_idle` waits for deliveries in flight.
* Other AWS services emit their events through :func:`emit_service_event` (Step Functions) or
  :meth:`EventRouter.put_event` (alarms). S3 EventBridge notifications (moto calls the rules
  directly) go through the same patch; :mod:`localaws.events.buckets` switches them on, and
  :mod:`localaws.events.schedules` runs schedules and scheduled rules.

Deviations from EventBridge, on purpose: a failed delivery is recorded, not retried (targets'
``RetryPolicy`` is ignored), no dead-letter queue is used, and ``cron(...)`` schedules run only
on demand.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.config import Config

from localaws.background import Clients
from localaws.events.inputs import execution_name, normalise_event, target_input
from localaws.patches import Patch, moto_symbol
from sluice.errors import NotFound

logger = logging.getLogger(__name__)

#: Target services moto cannot deliver to, which the router delivers instead.
ROUTED_SERVICES: tuple[str, ...] = ("lambda", "states", "sns")

# Local invokes can be slow (training); a retried invoke would run the work twice.
_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=10,
    read_timeout=900,
    max_pool_connections=16,
)

_ACTIVE: EventRouter | None = None
_INSTALLED: list[EventRouter] = []  # routers installed and not closed, newest last
_ACTIVE_LOCK = threading.Lock()
_FIRING = threading.local()  # set while ScheduleRunner fires a scheduled rule in this thread


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver an event to one target."""

    event_id: str
    rule: str
    target_id: str
    target_arn: str
    service: str
    input: str
    ok: bool
    deduplicated: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventRouter:
    """Deliver matched EventBridge events to Lambda, Step Functions and SNS on a moto server.

    Parameters
    ----------
    endpoint_url
        The moto server, e.g. ``http://127.0.0.1:54321``.
    region, account
        Where the rules live (the moto backend that is searched by :meth:`put_event`).
    max_workers
        Deliveries in flight at once.
    """

    def __init__(self, *, endpoint_url: str, region: str, account: str, max_workers: int = 4) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.account = account
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sluice-events")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        # the latest deliveries only, so a long local session does not grow without bound
        self._deliveries: deque[Delivery] = deque(maxlen=10_000)
        self._clients = Clients(endpoint_url=endpoint_url, region=region, config=_CLIENT_CONFIG)
        self._closed = False

    # -- installation -------------------------------------------------------------------------

    def install(self) -> EventRouter:
        """Patch moto so matching rules route their Lambda/SFN/SNS targets here; make this active.

        Routers nest: closing the newest makes the previous one active again.
        """
        global _ACTIVE
        SEND_TO_TARGETS.apply()
        with _ACTIVE_LOCK:
            if self not in _INSTALLED:
                _INSTALLED.append(self)
            _ACTIVE = self
        return self

    def close(self, *, timeout: float = 30.0) -> None:
        """Wait for deliveries in flight, stop the pool and stop being the active router."""
        global _ACTIVE
        self.wait_idle(timeout=timeout)
        with _ACTIVE_LOCK:
            if self in _INSTALLED:
                _INSTALLED.remove(self)
            _ACTIVE = _INSTALLED[-1] if _INSTALLED else None
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- sending events ----------------------------------------------------------------------

    def put_event(
        self,
        *,
        source: str,
        detail_type: str,
        detail: dict[str, Any],
        resources: Iterable[str] = (),
        bus: str = "default",
        time: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Emit an event as an AWS service would, then match and deliver it on ``bus``.

        Returns the event envelope (with its ``id``).
        """
        now = time or dt.datetime.now(dt.UTC)
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.account,
            # epoch seconds, as moto's put_events stores it (its SQS/Logs delivery expects that)
            "time": now.timestamp(),
            "region": self.region,
            "resources": list(resources),
            "detail": detail,
            "ingestion-time": now.timestamp(),
        }
        self.route(event, bus=bus)
        return normalise_event(event)

    def route(self, event: dict[str, Any], *, bus: str = "default") -> list[str]:
        """Match ``event`` against every rule on ``bus`` and deliver it; return the matched rule names.

        Uses moto's own rules (in this process), so SQS/Logs targets are delivered by moto and
        Lambda/SFN/SNS targets by this router, exactly as for ``put_events``.
        """
        return _route(event, account=self.account, region=self.region, bus=bus)

    def submit(self, *, rule: str, target: dict[str, Any], event: dict[str, Any]) -> Future:
        """Deliver ``event`` to one ``target`` of ``rule`` in the background."""
        with self._lock:
            if self._closed:
                raise RuntimeError("EventRouter is closed")
            self._pending += 1
        future = self._pool.submit(self._deliver_and_record, rule, copy.deepcopy(target), event)
        return future

    # -- observing ------------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        """The deliveries so far (the latest 10,000), oldest first (a copy)."""
        with self._lock:
            return list(self._deliveries)

    def deliveries_to(self, arn_fragment: str) -> list[Delivery]:
        """Deliveries whose target ARN contains ``arn_fragment``."""
        return [d for d in self.deliveries if arn_fragment in d.target_arn]

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no delivery is in flight; False if ``timeout`` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    # -- delivery -------------------------------------------------------------------------------

    def _deliver_and_record(self, rule: str, target: dict[str, Any], event: dict[str, Any]) -> Delivery:
        try:
            delivery = self.deliver(rule=rule, target=target, event=event)
        except Exception as err:  # a delivery must never take the router down
            logger.exception("event delivery to %s failed", target.get("Arn"))
            delivery = Delivery(
                event_id=str(event.get("id", "")),
                rule=rule,
                target_id=str(target.get("Id", "")),
                target_arn=str(target.get("Arn", "")),
                service=_service(target.get("Arn", "")),
                input="",
                ok=False,
                error=f"{type(err).__name__}: {err}",
            )
        with self._idle:
            self._deliveries.append(delivery)
            self._pending -= 1
            self._idle.notify_all()
        return delivery

    def deliver(self, *, rule: str, target: dict[str, Any], event: dict[str, Any]) -> Delivery:
        """Deliver synchronously to one target and return the record (not stored)."""
        arn = target["Arn"]
        service = _service(arn)
        payload = target_input(target, event, rule_name=rule)
        base = {
            "event_id": str(event.get("id", "")),
            "rule": rule,
            "target_id": str(target.get("Id", "")),
            "target_arn": arn,
            "service": service,
            "input": payload,
        }
        from botocore.exceptions import ClientError

        try:
            if service == "lambda":
                response = self._client("lambda").invoke(
                    FunctionName=arn, InvocationType="Event", Payload=payload.encode()
                )
                return Delivery(**base, ok=True, result={"StatusCode": response.get("StatusCode")})
            if service == "states":
                name = execution_name(payload, event=event, rule=rule, target_id=base["target_id"])
                try:
                    response = self._client("stepfunctions").start_execution(
                        stateMachineArn=arn, name=name, input=payload
                    )
                except ClientError as err:
                    if err.response["Error"]["Code"] == "ExecutionAlreadyExists":
                        return Delivery(**base, ok=True, deduplicated=True, result={"name": name})
                    raise
                return Delivery(
                    **base, ok=True, result={"executionArn": response["executionArn"], "name": name}
                )
            if service == "sns":
                response = self._client("sns").publish(TopicArn=arn, Message=payload)
                return Delivery(**base, ok=True, result={"MessageId": response.get("MessageId")})
            if service == "sqs":  # schedules only; rules deliver to SQS through moto itself
                sqs = self._client("sqs")
                parts = arn.split(":")
                url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
                response = sqs.send_message(QueueUrl=url, MessageBody=payload)
                return Delivery(**base, ok=True, result={"MessageId": response.get("MessageId")})
        except ClientError as err:
            return Delivery(**base, ok=False, error=f"{err.response['Error'].get('Code')}: {err}")
        return Delivery(**base, ok=False, error=f"unsupported target service {service!r}")

    def _client(self, service: str) -> Any:
        return self._clients(service)


def _route(event: dict[str, Any], *, account: str, region: str, bus: str = "default") -> list[str]:
    backend = events_backend(account, region)
    event_bus = backend.event_buses.get(bus)
    if event_bus is None:
        raise NotFound(f"event bus {bus!r} does not exist in {account}/{region}")
    matched = []
    for rule in list(event_bus.rules.values()):
        if rule.state == "ENABLED" and not _schedule_only(rule) and rule.event_pattern.matches_event(event):
            matched.append(rule.name)
            rule.send_to_targets(copy.deepcopy(event))
    return matched


def emit_service_event(
    *,
    source: str,
    detail_type: str,
    detail: dict[str, Any],
    resources: Iterable[str],
    account: str,
    region: str,
) -> list[str]:
    """Put an event as an AWS service does, on ``account``/``region``'s default bus.

    A no-op returning ``[]`` while no router is installed (nothing could deliver it), so
    components such as :mod:`localaws.stepfunctions` can call it unconditionally.
    """
    if _ACTIVE is None:
        return []
    now = dt.datetime.now(dt.UTC).timestamp()
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": now,
        "region": region,
        "resources": list(resources),
        "detail": detail,
        "ingestion-time": now,
    }
    return _route(event, account=account, region=region)


def pattern_matches(pattern: dict[str, Any] | str, event: dict[str, Any]) -> bool:
    """Whether an EventBridge ``pattern`` matches ``event``, using moto's own matcher."""
    event_pattern = moto_symbol("moto.events.models.EventPattern", owner=__name__)
    raw = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return bool(event_pattern.load(raw).matches_event(event))


# -- the moto patch ----------------------------------------------------------------------------


def _routed_send_to_targets(original: Any) -> Any:
    def send_to_targets(self: Any, original_event: dict[str, Any], transform_input: bool = True) -> None:
        if getattr(self, "state", "ENABLED") != "ENABLED":
            return
        if _schedule_only(self) and not getattr(_FIRING, "rule", False):
            return  # moto matches every event against a scheduled rule's empty pattern
        if not self.event_pattern.matches_event(original_event):
            return
        routed = [t for t in self.targets if _service(t.get("Arn", "")) in ROUTED_SERVICES]
        native = [t for t in self.targets if _service(t.get("Arn", "")) not in ROUTED_SERVICES]
        if native:
            shadow = copy.copy(self)
            shadow.targets = native
            original(shadow, original_event, transform_input)
        if not routed:
            return
        router = _ACTIVE
        if router is None:
            raise NotImplementedError(
                f"rule {self.name!r} has Lambda/Step Functions/SNS targets and no "
                "localaws.events.router.EventRouter is installed"
            )
        for target in routed:
            router.submit(rule=self.name, target=target, event=original_event)

    return send_to_targets


SEND_TO_TARGETS = Patch(
    target="moto.events.models.Rule.send_to_targets",
    gap=(
        "put_events raises NotImplementedError for Lambda, Step Functions and SNS targets, "
        "and fires disabled rules"
    ),
    replace=_routed_send_to_targets,
    owner=__name__,
    name="event_router",
    # What the replacement and the router read of moto's events.
    requires=(
        "moto.events.models.events_backends",
        "moto.events.models.EventPattern.load",
        "moto.events.models.EventPattern.matches_event",
    ),
)


@contextlib.contextmanager
def firing_scheduled_rule() -> Iterator[None]:
    """While inside, this thread's scheduled rules send to their targets (they ignore events)."""
    _FIRING.rule = True
    try:
        yield
    finally:
        _FIRING.rule = False


def _schedule_only(rule: Any) -> bool:
    """A rule with a schedule and no event pattern: it runs on its schedule, never on events."""
    pattern = getattr(rule, "event_pattern", None)
    return bool(getattr(rule, "scheduled_expression", None)) and not (pattern and pattern.get_pattern())


def active_router() -> EventRouter | None:
    """The router the moto patch currently delivers through."""
    return _ACTIVE


def events_backend(account: str, region: str) -> Any:
    """moto's EventBridge backend of one account and region (rules, buses)."""
    return moto_symbol("moto.events.models.events_backends", owner=__name__)[account][region]


def _service(arn: str) -> str:
    parts = str(arn).split(":")
    return parts[2] if len(parts) > 2 else ""
