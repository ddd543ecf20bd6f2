"""EventBridge delivery for the embedded local AWS: rules fire Lambda, Step Functions and SNS targets.

moto 5.2.5 matches rules and delivers to SQS, CloudWatch Logs, archives and other buses, but
``put_events`` raises ``NotImplementedError`` as soon as a matching rule has a Lambda, Step
Functions or SNS target, and it fires disabled rules. :class:`EventRouter` fills that gap:

* :meth:`EventRouter.install` patches ``moto.events.models.Rule.send_to_targets`` so a matching,
  *enabled* rule hands its Lambda/Step Functions/SNS targets to the router and leaves the others
  to moto. Rule matching is moto's own ``EventPattern`` (exact, prefix, suffix, anything-but,
  numeric, exists, equals-ignore-case, wildcard, cidr, ``$or``).
* The router delivers on a small thread pool through the moto server's public API, like
  EventBridge delivers asynchronously: Lambda ``invoke(InvocationType="Event")``, Step Functions
  ``start_execution`` and SNS ``publish``. Each target's ``Input``, ``InputPath`` or
  ``InputTransformer`` is honoured. Step Functions executions get a deterministic name: the
  input's ``executionName`` when it carries one (so duplicate events start one run), else one
  derived from the event id, rule and target.
* Every delivery is recorded (:attr:`EventRouter.deliveries`) so tests can assert on them, and
  :meth:`EventRouter.wait_idle` waits for deliveries in flight.

* S3 EventBridge notifications (moto calls the rules directly) go through the same patch;
  :func:`enable_bucket_event_bridge` switches them on for the stage's buckets that ask for it
  in their template (moto's CloudFormation ignores ``NotificationConfiguration``).
* :class:`ScheduleRunner` runs EventBridge Scheduler schedules and scheduled rules, which moto
  stores but never runs: on demand (:meth:`ScheduleRunner.fire`) and by ``rate``/``at``.

:func:`install` is the one hook ``sluice.local.LocalAws`` calls (``install(local_aws)``): it
makes state machines execute (:mod:`sluice.local.stepfunctions`), installs the router, and
starts the alarm evaluator (:mod:`sluice.local.alarms`) and the schedule runner.

Deviations from EventBridge, on purpose: a failed delivery is recorded, not retried (targets'
``RetryPolicy`` is ignored), no dead-letter queue is used, and ``cron(...)`` schedules run only
on demand.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3
from botocore.config import Config

logger = logging.getLogger(__name__)

#: Target services moto cannot deliver to, which the router delivers instead.
ROUTED_SERVICES: tuple[str, ...] = ("lambda", "states", "sns")

#: Keys of a Step Functions target's input that name the execution (first found wins).
EXECUTION_NAME_KEYS: tuple[str, ...] = ("executionName", "execution_name")

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
_ORIGINAL_SEND: Callable[..., None] | None = None
_MARK = "__sluice_event_router__"
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
        self._clients: dict[str, Any] = {}
        self._closed = False

    # -- installation -------------------------------------------------------------------------

    def install(self) -> EventRouter:
        """Patch moto so matching rules route their Lambda/SFN/SNS targets here; make this active.

        Routers nest: closing the newest makes the previous one active again.
        """
        global _ACTIVE
        patch_moto()
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
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                found = boto3.client(
                    service,
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                    config=_CLIENT_CONFIG,
                )
                self._clients[service] = found
            return found


# -- input shaping -----------------------------------------------------------------------------


def target_input(target: dict[str, Any], event: dict[str, Any], *, rule_name: str = "") -> str:
    """The text EventBridge sends to ``target`` for ``event``.

    ``Input`` is sent as is; ``InputPath`` selects part of the event; ``InputTransformer``
    fills ``<name>`` placeholders of its template from ``InputPathsMap``. Inside a JSON string a
    placeholder becomes the raw text, elsewhere the JSON value, as EventBridge does. Without
    any of these the whole event is sent.
    """
    event = normalise_event(event)
    if target.get("Input") is not None:
        return str(target["Input"])
    if target.get("InputPath"):
        return json.dumps(json_path(event, target["InputPath"]))
    transformer = target.get("InputTransformer")
    if transformer:
        values = {
            name: json_path(event, path) for name, path in (transformer.get("InputPathsMap") or {}).items()
        }
        values.setdefault("aws.events.event.json", event)
        values.setdefault("aws.events.event", event)
        values.setdefault("aws.events.event.ingestion-time", event.get("ingestion-time"))
        values.setdefault("aws.events.rule-name", rule_name)
        return fill_template(transformer["InputTemplate"], values)
    return json.dumps(event)


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` whose ``time`` is ISO 8601 text (moto stores epoch seconds)."""
    out = dict(event)
    when = out.get("time")
    if isinstance(when, int | float):
        out["time"] = _iso(dt.datetime.fromtimestamp(float(when), dt.UTC))
    elif isinstance(when, dt.datetime):
        out["time"] = _iso(when)
    return out


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def fill_template(template: str, values: dict[str, Any]) -> str:
    """Replace ``<name>`` placeholders: raw text inside JSON strings, JSON values outside."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "\\" and in_string:
            out.append(template[i : i + 2])
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
            out.append(ch)
            i += 1
            continue
        match = _PLACEHOLDER.match(template, i) if ch == "<" else None
        if match and match.group(1) in values:
            value = values[match.group(1)]
            if in_string:
                text = value if isinstance(value, str) else json.dumps(value)
                out.append(json.dumps(text)[1:-1])
            else:
                out.append(json.dumps(value))
            i = match.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]")


def json_path(document: Any, path: str) -> Any:
    """Resolve the simple JSONPath EventBridge accepts (``$``, ``$.a.b``, ``$.a[0]``, ``$['a-b']``).

    Returns None when the path does not exist.
    """
    if not path.startswith("$"):
        from sluice.errors import SluiceError

        raise SluiceError(f"InputPath {path!r} must start with '$'")
    node = document
    pos = 1
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            from sluice.errors import SluiceError

            raise SluiceError(f"unsupported JSONPath {path!r} at position {pos}")
        key, index, quoted = match.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            node = node[int(index)]
        else:
            name = key if key is not None else quoted
            if not isinstance(node, dict) or name not in node:
                return None
            node = node[name]
        pos = match.end()
    return node


_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(payload: str, *, event: dict[str, Any], rule: str, target_id: str) -> str:
    """The Step Functions execution name for one delivery (at most 80 characters).

    The input's ``executionName`` (or ``execution_name``) when present, so duplicate events
    collapse into one execution; else the event id plus a short hash of rule and target, so
    a retried delivery of one event is idempotent while two rules still start two runs.
    """
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in EXECUTION_NAME_KEYS:
            if isinstance(parsed.get(key), str) and parsed[key]:
                return _NAME_OK.sub("-", parsed[key])[:80]
    digest = hashlib.sha256(f"{rule}/{target_id}".encode()).hexdigest()[:8]
    return _NAME_OK.sub("-", f"{event.get('id') or uuid.uuid4()}-{digest}")[:80]


def _route(event: dict[str, Any], *, account: str, region: str, bus: str = "default") -> list[str]:
    backend = _events_backend(account, region)
    event_bus = backend.event_buses.get(bus)
    if event_bus is None:
        from sluice.errors import NotFound

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
    components such as :mod:`sluice.local.stepfunctions` can call it unconditionally.
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
    event_pattern = _moto_symbol("moto.events.models", "EventPattern")
    raw = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return bool(event_pattern.load(raw).matches_event(event))


# -- the moto patch ----------------------------------------------------------------------------


def patch_moto() -> None:
    """Make moto's ``Rule.send_to_targets`` skip disabled rules and route Lambda/SFN/SNS targets.

    Idempotent. Raises RuntimeError naming the moto symbol if moto moved it.
    """
    global _ORIGINAL_SEND
    rule_class = _moto_symbol("moto.events.models", "Rule")
    original = getattr(rule_class, "send_to_targets", None)
    if not callable(original):
        raise RuntimeError(
            "moto.events.models.Rule.send_to_targets is gone (moto upgraded?); "
            "sluice.local.events must be updated"
        )
    if getattr(original, _MARK, False):
        return
    # These attributes of a rule are what the patched method reads.
    _check_symbols()
    _ORIGINAL_SEND = original

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
                "sluice.local.events.EventRouter is installed"
            )
        for target in routed:
            router.submit(rule=self.name, target=target, event=original_event)

    setattr(send_to_targets, _MARK, True)
    rule_class.send_to_targets = send_to_targets


def unpatch_moto() -> None:
    """Restore moto's own ``Rule.send_to_targets`` (tests)."""
    global _ORIGINAL_SEND
    if _ORIGINAL_SEND is not None:
        _moto_symbol("moto.events.models", "Rule").send_to_targets = _ORIGINAL_SEND
        _ORIGINAL_SEND = None


def _schedule_only(rule: Any) -> bool:
    """A rule with a schedule and no event pattern: it runs on its schedule, never on events."""
    pattern = getattr(rule, "event_pattern", None)
    return bool(getattr(rule, "scheduled_expression", None)) and not (pattern and pattern.get_pattern())


def active_router() -> EventRouter | None:
    """The router the moto patch currently delivers through."""
    return _ACTIVE


def _check_symbols() -> None:
    _moto_symbol("moto.events.models", "events_backends")
    _moto_symbol("moto.events.models", "EventPattern")
    pattern_class = _moto_symbol("moto.events.models", "EventPattern")
    for name in ("load", "matches_event"):
        if not callable(getattr(pattern_class, name, None)):
            raise RuntimeError(
                f"moto.events.models.EventPattern.{name} is gone (moto upgraded?); "
                "sluice.local.events must be updated"
            )


def _moto_symbol(module: str, name: str) -> Any:
    import importlib

    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f"{module}.{name} cannot be found ({err}); moto upgraded? sluice.local must be updated"
        ) from err
    return found


def _events_backend(account: str, region: str) -> Any:
    backends = _moto_symbol("moto.events.models", "events_backends")
    return backends[account][region]


def _service(arn: str) -> str:
    parts = str(arn).split(":")
    return parts[2] if len(parts) > 2 else ""


def _iso(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- schedules -----------------------------------------------------------------------------------

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_AT = re.compile(r"^at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)$")
_UNIT_S = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a ``rate(...)`` expression; None for ``cron``/``at``."""
    match = _RATE.match(expression.strip())
    return float(match.group(1)) * _UNIT_S[match.group(2)] if match else None


def at_epoch(expression: str, timezone: str = "UTC") -> float | None:
    """Epoch seconds of a one-time ``at(yyyy-mm-ddThh:mm:ss)`` expression in ``timezone``."""
    match = _AT.match(expression.strip())
    if not match:
        return None
    from zoneinfo import ZoneInfo

    when = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=ZoneInfo(timezone or "UTC"))
    return when.timestamp()


class ScheduleRunner:
    """Run EventBridge Scheduler schedules and scheduled EventBridge rules on the moto server.

    moto stores both but never runs them. :meth:`fire` runs one now (what a developer wants
    locally: ``events.schedules.fire("sluice-dev-credit-risk-drift")``); the background thread
    (:meth:`start`) runs ``rate(...)`` schedules one rate after first seeing them and then every
    rate, and ``at(...)`` schedules once when due. ``cron(...)`` expressions only run through
    :meth:`fire` (documented gap). Schedule targets get their ``Input`` (``{}`` without one);
    rule targets get the "Scheduled Event" envelope, shaped by their Input settings.

    Parameters
    ----------
    router
        Delivers to the targets (and knows the server, region and account).
    interval_s
        Seconds between checks of the background thread.
    clock
        Returns the current time in epoch seconds (tests inject one).
    """

    def __init__(
        self, *, router: EventRouter, interval_s: float = 1.0, clock: Callable[[], float] | None = None
    ):
        import time

        self.router = router
        self.interval_s = interval_s
        self.clock = clock or time.time
        self.fired: list[tuple[str, float]] = []
        self._next: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ScheduleRunner:
        """Check schedules every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sluice-schedules", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("schedule check failed")
            self._stop.wait(self.interval_s)

    def tick(self) -> list[str]:
        """Run every enabled schedule and scheduled rule that is due; return their names."""
        with self._lock:
            now = self.clock()
            ran = []
            for key, expression, timezone, fire in self._entries():
                every = rate_seconds(expression)
                if every is not None:
                    due = self._next.setdefault(key, now + every)
                    if now >= due:
                        self._next[key] = now + every
                        fire()
                        ran.append(key)
                    continue
                when = at_epoch(expression, timezone)
                if when is not None and now >= when and key not in self._next:
                    self._next[key] = float("inf")
                    fire()
                    ran.append(key)
            return ran

    def fire(self, name: str, *, group: str = "default") -> str:
        """Run the schedule ``name`` (in ``group``), or else the scheduled rule ``name``, now.

        Returns what ran: ``schedule/<group>/<name>`` or ``rule/<name>``.

        Raises
        ------
        NotFound
            If neither a schedule nor a scheduled rule has that name.
        """
        from botocore.exceptions import ClientError

        from sluice.errors import NotFound

        try:
            schedule = self.router._client("scheduler").get_schedule(Name=name, GroupName=group)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("ResourceNotFoundException", "404"):
                raise
        else:
            self._fire_schedule(schedule)
            return f"schedule/{group}/{name}"
        rule = self._scheduled_rules().get(name)
        if rule is None:
            raise NotFound(
                f"no schedule {group}/{name} and no scheduled rule {name!r} in {self.router.region}"
            )
        self._fire_rule(rule)
        return f"rule/{name}"

    def _entries(self) -> list[tuple[str, str, str, Callable[[], None]]]:
        entries: list[tuple[str, str, str, Callable[[], None]]] = []
        scheduler = self.router._client("scheduler")
        for page in scheduler.get_paginator("list_schedules").paginate(State="ENABLED"):
            for summary in page.get("Schedules", []):
                group = summary.get("GroupName", "default")
                schedule = scheduler.get_schedule(Name=summary["Name"], GroupName=group)
                entries.append(
                    (
                        f"schedule/{group}/{summary['Name']}",
                        schedule.get("ScheduleExpression", ""),
                        schedule.get("ScheduleExpressionTimezone") or "UTC",
                        lambda s=schedule: self._fire_schedule(s),
                    )
                )
        for name, rule in self._scheduled_rules().items():
            if rule.state == "ENABLED":
                entries.append(
                    (f"rule/{name}", rule.scheduled_expression, "UTC", lambda r=rule: self._fire_rule(r))
                )
        return entries

    def _scheduled_rules(self) -> dict[str, Any]:
        backend = _events_backend(self.router.account, self.router.region)
        bus = backend.event_buses.get("default")
        rules = list(bus.rules.values()) if bus is not None else []
        return {r.name: r for r in rules if getattr(r, "scheduled_expression", None)}

    def _fire_schedule(self, schedule: dict[str, Any]) -> None:
        target = dict(schedule["Target"])
        target.setdefault("Id", schedule["Name"])
        target["Input"] = target.get("Input") or "{}"
        event = {"id": str(uuid.uuid4()), "time": self.clock()}
        self.fired.append(
            (f"schedule/{schedule.get('GroupName', 'default')}/{schedule['Name']}", self.clock())
        )
        self.router.submit(rule=f"schedule/{schedule['Name']}", target=target, event=event)

    def _fire_rule(self, rule: Any) -> None:
        now = self.clock()
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.router.account,
            "time": now,
            "region": self.router.region,
            "resources": [rule.arn],
            "detail": {},
            "ingestion-time": now,
        }
        self.fired.append((f"rule/{rule.name}", now))
        _FIRING.rule = True
        try:
            rule.send_to_targets(event)
        finally:
            _FIRING.rule = False


def enable_bucket_event_bridge(local_aws: Any) -> list[str]:
    """Send S3 events to EventBridge for the stage's buckets whose template asks for it.

    moto's CloudFormation ignores a bucket's ``NotificationConfiguration``, so a bucket with
    ``EventBridgeConfiguration.EventBridgeEnabled`` would never emit "Object Created" events
    locally. Returns the bucket names switched on; other notification settings are kept.
    """
    stacks = getattr(local_aws, "stacks", None) or []
    deployed = getattr(local_aws, "deployed", None) or []
    s3 = boto3.client(
        "s3",
        endpoint_url=local_aws.endpoint_url,
        region_name=local_aws.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    enabled = []
    for stack, done in zip(stacks, deployed, strict=False):
        physical = {r.logical_id: r.physical_id for r in done.resources}
        for logical, resource in stack.template.get("Resources", {}).items():
            config = (resource.get("Properties") or {}).get("NotificationConfiguration") or {}
            wanted = (config.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled")
            if (
                resource.get("Type") != "AWS::S3::Bucket"
                or wanted not in (True, "true")
                or logical not in physical
            ):
                continue
            bucket = physical[logical]
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)
            current["EventBridgeConfiguration"] = {}
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
            enabled.append(bucket)
    return enabled


# -- the hook for LocalAws ----------------------------------------------------------------------


@dataclass
class LocalEvents:
    """What :func:`install` set up: router, alarm evaluator, schedule runner, Step Functions."""

    router: EventRouter
    alarms: Any  # sluice.local.alarms.AlarmEvaluator
    stepfunctions: Any  # sluice.local.stepfunctions.StepFunctionsPatch
    schedules: ScheduleRunner | None = None

    def close(self) -> None:
        """Stop the evaluator and schedules, drain deliveries, and undo the Step Functions switch."""
        self.alarms.stop()
        if self.schedules is not None:
            self.schedules.stop()
        self.router.close()
        self.stepfunctions.disable()

    stop = close

    def __enter__(self) -> LocalEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def install(
    local_aws: Any = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    account: str | None = None,
    interval_s: float = 1.0,
    evaluate_now: bool = True,
) -> LocalEvents:
    """Fill moto's alarm, EventBridge and Step Functions gaps for one embedded local AWS.

    Call it once the moto server is up; state machines that CloudFormation created before
    are moved to the executing backend. ``sluice.local.LocalAws`` may pass itself
    (``install(local_aws)``): its ``endpoint_url``, ``region`` and ``account`` are used.
    The result has ``close()`` (alias ``stop()``).

    Parameters
    ----------
    local_aws
        Optional object with ``endpoint_url``, ``region`` and ``account`` attributes.
    endpoint_url
        The ThreadedMotoServer, e.g. ``http://127.0.0.1:54321`` (same process).
    region, account
        The stage's region and account.
    interval_s
        Seconds between alarm evaluations.
    evaluate_now
        Evaluate alarms over the latest ``EvaluationPeriods * Period`` seconds ending now,
        rather than over wall-clock-aligned closed periods (see :mod:`sluice.local.alarms`).
    """
    from sluice.local.alarms import AlarmEvaluator
    from sluice.local.alarms import check_moto as check_alarm_symbols
    from sluice.local.stepfunctions import enable

    if local_aws is not None:
        endpoint_url = endpoint_url or local_aws.endpoint_url
        region = region or local_aws.region
        account = account or local_aws.account
    if not (endpoint_url and region and account):
        raise ValueError("install() needs endpoint_url, region and account (or a LocalAws)")
    check_alarm_symbols()  # fail at start, not later in the evaluator's thread
    sfn = enable(endpoint_url=endpoint_url)
    router = EventRouter(endpoint_url=endpoint_url, region=region, account=account).install()
    alarms = AlarmEvaluator(
        router=router,
        endpoint_url=endpoint_url,
        region=region,
        account=account,
        interval_s=interval_s,
        evaluate_now=evaluate_now,
    ).start()
    if local_aws is not None:
        enable_bucket_event_bridge(local_aws)
    schedules = ScheduleRunner(router=router, interval_s=interval_s).start()
    return LocalEvents(router=router, alarms=alarms, stepfunctions=sfn, schedules=schedules)
