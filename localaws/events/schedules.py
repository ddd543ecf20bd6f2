"""EventBridge Scheduler schedules and scheduled rules, which moto stores but never runs.

:class:`ScheduleRunner` runs them on demand (:meth:`ScheduleRunner.fire`) and by ``rate``/``at``
on a background thread; ``cron(...)`` runs only on demand (a documented gap).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from localaws.background import Periodic
from localaws.events.router import EventRouter, events_backend, firing_scheduled_rule
from sluice.errors import NotFound

logger = logging.getLogger(__name__)

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


class ScheduleRunner(Periodic):
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

    thread_name = "sluice-schedules"

    def __init__(
        self, *, router: EventRouter, interval_s: float = 1.0, clock: Callable[[], float] | None = None
    ):
        import time

        super().__init__(interval_s=interval_s)
        self.router = router
        self.clock = clock or time.time
        self.fired: list[tuple[str, float]] = []
        self._next: dict[str, float] = {}
        self._lock = threading.RLock()

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
                        functools.partial(self._fire_schedule, schedule),
                    )
                )
        for name, rule in self._scheduled_rules().items():
            if rule.state == "ENABLED":
                entries.append(
                    (f"rule/{name}", rule.scheduled_expression, "UTC", functools.partial(self._fire_rule, rule))
                )
        return entries

    def _scheduled_rules(self) -> dict[str, Any]:
        backend = events_backend(self.router.account, self.router.region)
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
        with firing_scheduled_rule():
            rule.send_to_targets(event)
