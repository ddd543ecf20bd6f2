"""The event-driven services of a local stage, wired together: Step Functions, EventBridge, alarms.

Each service is its own package (:mod:`localaws.stepfunctions`, :mod:`localaws.events`,
:mod:`localaws.alarms`); none of them starts another. :func:`start_event_services` builds them
in order, hands the EventBridge router to the services that emit events, and returns them as
one :class:`EventServices` whose ``close()`` stops them in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localaws.alarms.evaluator import MOTO_NEEDS as ALARM_MOTO_NEEDS
from localaws.alarms.evaluator import AlarmEvaluator
from localaws.events.buckets import enable_bucket_event_bridge
from localaws.events.router import EventRouter
from localaws.events.schedules import ScheduleRunner
from localaws.stepfunctions.execution import StepFunctionsPatch, enable


@dataclass
class EventServices:
    """What :func:`start_event_services` started: router, alarm evaluator, schedules, Step Functions."""

    router: EventRouter
    alarms: AlarmEvaluator
    stepfunctions: StepFunctionsPatch
    schedules: ScheduleRunner | None = None

    def close(self) -> None:
        """Stop the evaluator and schedules, drain deliveries, and undo the Step Functions switch."""
        self.alarms.stop()
        if self.schedules is not None:
            self.schedules.stop()
        self.router.close()
        self.stepfunctions.disable()

    stop = close

    def __enter__(self) -> EventServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_event_services(
    local_aws: Any = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    account: str | None = None,
    interval_s: float = 1.0,
    evaluate_now: bool = True,
) -> EventServices:
    """Fill moto's alarm, EventBridge and Step Functions gaps for one moto server.

    Call it once the moto server is up; state machines that CloudFormation created before
    are moved to the executing backend. :class:`localaws.LocalAws` passes itself: its
    ``endpoint_url``, ``region`` and ``account`` are used, and its buckets that ask for
    EventBridge notifications get them.

    Parameters
    ----------
    local_aws
        Optional object with ``endpoint_url``, ``region`` and ``account`` attributes.
    endpoint_url
        The ThreadedMotoServer, e.g. ``http://127.0.0.1:54321`` (same process).
    region, account
        The stage's region and account.
    interval_s
        Seconds between alarm evaluations and schedule checks.
    evaluate_now
        Evaluate alarms over the latest ``EvaluationPeriods * Period`` seconds ending now,
        rather than over wall-clock-aligned closed periods (see :mod:`localaws.alarms.evaluator`).
    """
    if local_aws is not None:
        endpoint_url = endpoint_url or local_aws.endpoint_url
        region = region or local_aws.region
        account = account or local_aws.account
    if not (endpoint_url and region and account):
        raise ValueError("start_event_services() needs endpoint_url, region and account (or a LocalAws)")
    ALARM_MOTO_NEEDS.check()  # fail at start, not later in the evaluator's thread
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
    return EventServices(router=router, alarms=alarms, stepfunctions=sfn, schedules=schedules)
