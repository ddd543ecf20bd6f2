"""A CloudWatch alarm evaluator for the embedded local AWS.

moto 5.2.5 stores metric alarms and metric data but never evaluates an alarm and emits nothing
when an alarm changes state. :class:`AlarmEvaluator` does what CloudWatch does on each tick:

1. reads every metric alarm through the moto server's API (``describe_alarms``);
2. takes the raw datapoints of the alarm's metric (namespace, name, the *exact* dimension set,
   unit) from moto's CloudWatch backend in this process, splits the last
   ``EvaluationPeriods`` periods of ``Period`` seconds, and applies ``Statistic`` (SampleCount,
   Sum, Average, Minimum, Maximum) or ``ExtendedStatistic`` (``pNN``/``pNN.NN``, nearest rank);
3. compares each period's value with ``Threshold`` under ``ComparisonOperator`` and decides
   with ``DatapointsToAlarm`` out of ``EvaluationPeriods`` and ``TreatMissingData``;
4. on a state change calls ``set_alarm_state``, emits the "CloudWatch Alarm State Change"
   event (source ``aws.cloudwatch``) through :class:`localaws.events.router.EventRouter`, and
   publishes the CloudWatch alarm message to the SNS topics (or invokes the Lambda functions)
   in ``AlarmActions`` / ``OKActions`` / ``InsufficientDataActions`` when actions are enabled.

A state set by someone else (``set_alarm_state``) is noticed on the next tick and emitted too,
as CloudWatch does.

Deviations, on purpose:

* ``evaluate_now=True`` (the local default) evaluates the periods ending *now*:
  ``(now - k·Period, now - (k-1)·Period]`` for k = 1..EvaluationPeriods, so a datapoint put a
  moment ago counts at once. CloudWatch, and ``evaluate_now=False``, evaluate closed periods
  aligned to multiples of ``Period`` (the datapoint counts once its period has ended).
* ``TreatMissingData=missing`` evaluates only the periods that have data (CloudWatch may look
  further back); with no data at all the alarm goes to INSUFFICIENT_DATA. ``ignore`` keeps the
  state when there is no data; ``breaching``/``notBreaching`` fill the gaps.
* An alarm fresh from ``put_metric_alarm`` is treated as INSUFFICIENT_DATA (moto says OK), so
  its first evaluation emits what CloudWatch would.
* Metric-math alarms (``Metrics``), anomaly-detection operators, trimmed-mean statistics and
  AWS service metrics that moto computes on the fly are skipped (recorded in
  :attr:`AlarmEvaluator.skipped`).

The decisions themselves are pure functions in :mod:`localaws.alarms.rules`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.config import Config

from localaws.alarms.rules import (
    Transition,
    decide,
    epoch,
    sns_message,
    state_change_detail,
    statistic,
    unsupported,
)
from localaws.background import Clients, Periodic
from localaws.patches import Needs, moto_symbol

logger = logging.getLogger(__name__)
_BACKENDS = "moto.cloudwatch.models.cloudwatch_backends"
_INITIAL_REASON = "Unchecked: Initial alarm creation"
_CLIENT_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"}, read_timeout=60)


class AlarmEvaluator(Periodic):
    """Evaluate moto's metric alarms and emit their state changes.

    Parameters
    ----------
    router
        The :class:`localaws.events.router.EventRouter` that receives state-change events.
    endpoint_url, region, account
        The moto server (same process) and where the alarms live.
    interval_s
        Seconds between evaluations of the background thread (:meth:`start`).
    evaluate_now
        Evaluate the periods ending now instead of closed, aligned periods (module docstring).
    clock
        Returns the current time in epoch seconds (tests inject one).
    """

    thread_name = "sluice-alarms"

    def __init__(
        self,
        *,
        router: Any,
        endpoint_url: str,
        region: str,
        account: str,
        interval_s: float = 1.0,
        evaluate_now: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval_s=interval_s)
        self.router = router
        self.endpoint_url = endpoint_url
        self.region = region
        self.account = account
        self.evaluate_now = evaluate_now
        self.clock = clock
        self.transitions: list[Transition] = []
        self.skipped: dict[str, str] = {}
        self.ticks = 0
        self._seen: dict[str, str] = {}
        self._lock = threading.RLock()
        self._clients = Clients(endpoint_url=endpoint_url, region=region, config=_CLIENT_CONFIG)
        self._index: dict[tuple, list[tuple[float, Any]]] = {}
        self._indexed_list = 0
        self._indexed_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    # -- evaluation -----------------------------------------------------------------------------

    def tick(self) -> list[Transition]:
        """Evaluate every metric alarm once; return the transitions made or noticed."""
        with self._lock:
            self.ticks += 1
            made: list[Transition] = []
            now = self.clock()
            alarms = self._describe_alarms()
            self._refresh_index(now, alarms)
            for alarm in alarms:
                made.extend(self._evaluate_one(alarm, now))
            alive = {a["AlarmName"] for a in alarms}
            for name in list(self._seen):
                if name not in alive:
                    del self._seen[name]
            return made

    def _evaluate_one(self, alarm: dict[str, Any], now: float) -> list[Transition]:
        name = alarm["AlarmName"]
        observed = alarm["StateValue"]
        if alarm.get("StateReason") == _INITIAL_REASON and name not in self._seen:
            observed = "INSUFFICIENT_DATA"  # CloudWatch's initial state; moto says OK
        noticed: list[Transition] = []
        last = self._seen.get(name)
        if last is not None and last != observed:
            noticed = [self._record(alarm, last, observed, alarm.get("StateReason", ""), (), external=True)]
        self._seen[name] = observed

        reason_skipped = unsupported(alarm)
        if reason_skipped:
            self.skipped[name] = reason_skipped
            return noticed
        values = self._period_values(alarm, now)
        state, reason = decide(alarm, values, current=observed)
        if state == observed:
            if alarm["StateValue"] != observed:  # silent move from moto's OK to INSUFFICIENT_DATA
                self._set_state(name, state, reason, values)
            return noticed
        self._set_state(name, state, reason, values)
        self._seen[name] = state
        return [*noticed, self._record(alarm, observed, state, reason, tuple(values))]

    def _period_values(self, alarm: dict[str, Any], now: float) -> list[float | None]:
        """The statistic of each evaluated period, newest first (None where no data).

        Reads the datapoint index that :meth:`tick` refreshes.
        """
        period = float(alarm["Period"])
        count = int(alarm["EvaluationPeriods"])
        if self.evaluate_now:
            end = now
            # datapoints stamped a little in the future (clock skew) belong to the newest period
            buckets = [(end - (k + 1) * period, end - k * period) for k in range(count)]
            buckets[0] = (buckets[0][0], end + 1.0)
            inside = [(lo, hi, True) for lo, hi in buckets]  # (lo, hi], left-open
        else:
            end = math.floor(now / period) * period
            inside = [(end - (k + 1) * period, end - k * period, False) for k in range(count)]
        points = self._datapoints(alarm)
        values: list[float | None] = []
        for lo, hi, left_open in inside:
            if left_open:
                chosen = [p for p in points if lo < p[0] <= hi]
            else:
                chosen = [p for p in points if lo <= p[0] < hi]
            values.append(statistic(alarm, chosen))
        return values

    def _datapoints(self, alarm: dict[str, Any]) -> list[tuple[float, Any]]:
        """(epoch seconds, moto datum) of the alarm's metric, exact dimension set and unit."""
        key = (
            alarm.get("Namespace"),
            alarm.get("MetricName"),
            tuple(sorted((d["Name"], d["Value"]) for d in alarm.get("Dimensions") or [])),
        )
        unit = alarm.get("Unit")
        points = self._index.get(key, [])
        if unit:
            return [p for p in points if not p[1].unit or p[1].unit == unit]
        return list(points)

    def _refresh_index(self, now: float, alarms: list[dict[str, Any]]) -> None:
        """Index the datapoints moto received since the last tick by metric and dimension set.

        moto appends every datum to one list; scanning it per alarm per tick costs
        alarms x datapoints (about 2 s per tick for 20 alarms over 100k datapoints), so each
        datum is read once, and datapoints older than any alarm can see are dropped.
        """
        data = moto_symbol(_BACKENDS, owner=__name__)[self.account][self.region].metric_data
        if id(data) != self._indexed_list or len(data) < self._indexed_count:  # moto was reset
            self._index.clear()
            self._indexed_list, self._indexed_count = id(data), 0
        fresh = data[self._indexed_count :]
        self._indexed_count += len(fresh)
        for datum in fresh:
            key = (datum.namespace, datum.name, tuple(sorted((d.name, d.value) for d in datum.dimensions)))
            self._index.setdefault(key, []).append((epoch(datum.timestamp), datum))
        if self.ticks % 60 == 0:
            window = max(
                (float(a["Period"]) * (int(a["EvaluationPeriods"]) + 1) for a in alarms), default=0.0
            )
            horizon = now - max(2 * window, 3600.0)
            for key in list(self._index):
                kept = [p for p in self._index[key] if p[0] >= horizon]
                if kept:
                    self._index[key] = kept
                else:
                    del self._index[key]

    # -- effects --------------------------------------------------------------------------------

    def _set_state(self, name: str, state: str, reason: str, values: list[float | None]) -> None:
        self._client("cloudwatch").set_alarm_state(
            AlarmName=name,
            StateValue=state,
            StateReason=reason,
            StateReasonData=json.dumps({"version": "1.0", "recentDatapoints": values}),
        )

    def _record(
        self,
        alarm: dict[str, Any],
        previous: str,
        state: str,
        reason: str,
        values: tuple[float | None, ...],
        *,
        external: bool = False,
    ) -> Transition:
        when = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        transition = Transition(
            alarm=alarm["AlarmName"],
            previous=previous,
            state=state,
            reason=reason,
            values=values,
            at=when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000",
            external=external,
        )
        self.transitions.append(transition)
        self._emit_event(alarm, transition)
        self._run_actions(alarm, transition)
        return transition

    def _emit_event(self, alarm: dict[str, Any], transition: Transition) -> None:
        try:
            self.router.put_event(
                source="aws.cloudwatch",
                detail_type="CloudWatch Alarm State Change",
                detail=state_change_detail(alarm, transition),
                resources=[alarm["AlarmArn"]],
            )
        except Exception:
            self.errors += 1
            logger.exception("could not emit the state change of alarm %s", alarm["AlarmName"])

    def _run_actions(self, alarm: dict[str, Any], transition: Transition) -> None:
        if not alarm.get("ActionsEnabled", True):
            return
        key = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}
        message = sns_message(alarm, transition, region=self.region, account=self.account)
        for arn in alarm.get(key[transition.state]) or []:
            service = arn.split(":")[2] if arn.count(":") >= 2 else ""
            try:
                if service == "sns":
                    self._client("sns").publish(
                        TopicArn=arn,
                        Subject=f'{transition.state}: "{alarm["AlarmName"]}" in {self.region}'[:100],
                        Message=json.dumps(message),
                    )
                elif service == "lambda":
                    self._client("lambda").invoke(
                        FunctionName=arn, InvocationType="Event", Payload=json.dumps(message).encode()
                    )
                else:
                    logger.info("alarm action %s is not run locally", arn)
            except Exception:
                self.errors += 1
                logger.exception("alarm action %s of %s failed", arn, alarm["AlarmName"])

    # -- plumbing -------------------------------------------------------------------------------

    def _describe_alarms(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = []
        paginator = self._client("cloudwatch").get_paginator("describe_alarms")
        for page in paginator.paginate(AlarmTypes=["MetricAlarm"]):
            alarms.extend(page.get("MetricAlarms", []))
        return alarms

    def _client(self, service: str) -> Any:
        return self._clients(service)


#: The moto names the evaluator reads; checked before it starts, not later in its thread.
MOTO_NEEDS = Needs(
    owner=__name__,
    symbols=(
        _BACKENDS,
        "moto.cloudwatch.models.MetricDatum",
        "moto.cloudwatch.models.MetricAggregatedDatum",
        "moto.cloudwatch.models.CloudWatchBackend",
    ),
    instances=(
        (
            "moto.cloudwatch.models.MetricDatum",
            ("ns", "m", 1.0, [{"Name": "d", "Value": "v"}], None),
            ("namespace", "name", "value", "dimensions", "timestamp", "unit"),
        ),
        ("moto.cloudwatch.models.CloudWatchBackend", ("eu-west-1", "123456789012"), ("metric_data",)),
    ),
)
