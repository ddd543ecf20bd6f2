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
   event (source ``aws.cloudwatch``) through :class:`sluice.local.events.EventRouter`, and
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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import boto3
from botocore.config import Config

logger = logging.getLogger(__name__)

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}

_INITIAL_REASON = "Unchecked: Initial alarm creation"
_CLIENT_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"}, read_timeout=60)


@dataclass(frozen=True)
class Transition:
    """One alarm state change the evaluator saw or made."""

    alarm: str
    previous: str
    state: str
    reason: str
    values: tuple[float | None, ...]
    at: str
    external: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlarmEvaluator:
    """Evaluate moto's metric alarms and emit their state changes.

    Parameters
    ----------
    router
        The :class:`sluice.local.events.EventRouter` that receives state-change events.
    endpoint_url, region, account
        The moto server (same process) and where the alarms live.
    interval_s
        Seconds between evaluations of the background thread (:meth:`start`).
    evaluate_now
        Evaluate the periods ending now instead of closed, aligned periods (module docstring).
    clock
        Returns the current time in epoch seconds (tests inject one).
    """

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
        self.router = router
        self.endpoint_url = endpoint_url
        self.region = region
        self.account = account
        self.interval_s = interval_s
        self.evaluate_now = evaluate_now
        self.clock = clock
        self.transitions: list[Transition] = []
        self.skipped: dict[str, str] = {}
        self.ticks = 0
        self.errors = 0
        self._seen: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._index: dict[tuple, list[tuple[float, Any]]] = {}
        self._indexed_list = 0
        self._indexed_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> AlarmEvaluator:
        """Evaluate every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sluice-alarms", daemon=True)
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
            except Exception:  # keep evaluating; a broken alarm must not stop the others
                self.errors += 1
                logger.exception("alarm evaluation failed")
            self._stop.wait(self.interval_s)

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

        unsupported = self._unsupported(alarm)
        if unsupported:
            self.skipped[name] = unsupported
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

    @staticmethod
    def _unsupported(alarm: dict[str, Any]) -> str:
        if alarm.get("Metrics"):
            return "metric-math alarms (Metrics) are not evaluated locally"
        if alarm.get("ComparisonOperator") not in OPERATORS:
            return f"ComparisonOperator {alarm.get('ComparisonOperator')!r} is not evaluated locally"
        extended = alarm.get("ExtendedStatistic")
        if extended and _percentile(extended) is None:
            return f"ExtendedStatistic {extended!r} is not evaluated locally (only pNN)"
        if not extended and alarm.get("Statistic") not in _STATISTICS:
            return f"Statistic {alarm.get('Statistic')!r} is not evaluated locally"
        return ""

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
        data = _cloudwatch_backend(self.account, self.region).metric_data
        if id(data) != self._indexed_list or len(data) < self._indexed_count:  # moto was reset
            self._index.clear()
            self._indexed_list, self._indexed_count = id(data), 0
        fresh = data[self._indexed_count :]
        self._indexed_count += len(fresh)
        for datum in fresh:
            key = (datum.namespace, datum.name, tuple(sorted((d.name, d.value) for d in datum.dimensions)))
            self._index.setdefault(key, []).append((_epoch(datum.timestamp), datum))
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


# -- pure functions --------------------------------------------------------------------------------


def decide(alarm: dict[str, Any], values: list[float | None], *, current: str) -> tuple[str, str]:
    """The alarm state for the period ``values`` (newest first) and a reason, as CloudWatch words it."""
    compare = OPERATORS[alarm["ComparisonOperator"]]
    threshold = float(alarm["Threshold"])
    periods = len(values)
    needed = int(alarm.get("DatapointsToAlarm") or periods)
    treat = alarm.get("TreatMissingData") or "missing"
    if treat == "breaching":
        flags = [True if v is None else compare(v, threshold) for v in values]
    elif treat == "notBreaching":
        flags = [False if v is None else compare(v, threshold) for v in values]
    else:
        flags = [compare(v, threshold) for v in values if v is not None]
    if not flags:
        if treat == "ignore":
            return current, "Threshold Crossed: no datapoints were received; keeping the state (ignore)"
        return "INSUFFICIENT_DATA", "Insufficient Data: no datapoints were received"
    breaching = sum(flags)
    shown = [v for v in values if v is not None]
    word = "ALARM" if breaching >= needed else "OK"
    reason = (
        f"Threshold Crossed: {breaching} out of the last {periods} datapoints "
        f"{shown} {'were' if word == 'ALARM' else 'were not (enough)'} "
        f"{alarm['ComparisonOperator']} the threshold ({threshold})."
    )
    return word, reason


_STATISTICS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")


def statistic(alarm: dict[str, Any], points: list[tuple[float, Any]]) -> float | None:
    """The alarm's statistic over moto datums ``points``; None when there are none."""
    if not points:
        return None
    counts = sums = 0.0
    lows: list[float] = []
    highs: list[float] = []
    raw: list[float] = []
    for _, datum in points:
        if hasattr(datum, "value"):
            value = float(datum.value)
            raw.append(value)
            counts += 1
            sums += value
            lows.append(value)
            highs.append(value)
        else:  # StatisticValues
            counts += float(datum.sample_count)
            sums += float(datum.sum)
            lows.append(float(datum.min))
            highs.append(float(datum.max))
    extended = alarm.get("ExtendedStatistic")
    if extended:
        q = _percentile(extended)
        if q is None or not raw:
            return None
        ordered = sorted(raw)
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]
    stat = alarm.get("Statistic")
    if stat == "SampleCount":
        return counts
    if stat == "Sum":
        return sums
    if stat == "Average":
        return sums / counts if counts else None
    if stat == "Minimum":
        return min(lows)
    if stat == "Maximum":
        return max(highs)
    return None


def _percentile(name: str) -> float | None:
    if not name.lower().startswith("p"):
        return None
    try:
        q = float(name[1:])
    except ValueError:
        return None
    return q if 0 < q <= 100 else None


def state_change_detail(alarm: dict[str, Any], transition: Transition) -> dict[str, Any]:
    """The ``detail`` of EventBridge's "CloudWatch Alarm State Change" event."""
    metric = {
        "namespace": alarm.get("Namespace"),
        "name": alarm.get("MetricName"),
        "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []},
    }
    stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic")
    return {
        "alarmName": alarm["AlarmName"],
        "state": {
            "value": transition.state,
            "reason": transition.reason,
            "reasonData": json.dumps({"version": "1.0", "recentDatapoints": list(transition.values)}),
            "timestamp": transition.at,
        },
        "previousState": {"value": transition.previous},
        "configuration": {
            "description": alarm.get("AlarmDescription", ""),
            "metrics": [
                {
                    "id": "m1",
                    "metricStat": {"metric": metric, "period": alarm.get("Period"), "stat": stat},
                    "returnData": True,
                }
            ],
        },
    }


def sns_message(
    alarm: dict[str, Any], transition: Transition, *, region: str, account: str
) -> dict[str, Any]:
    """The JSON CloudWatch publishes to an alarm action's SNS topic."""
    return {
        "AlarmName": alarm["AlarmName"],
        "AlarmDescription": alarm.get("AlarmDescription"),
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": str(alarm.get("AlarmConfigurationUpdatedTimestamp", "")),
        "NewStateValue": transition.state,
        "NewStateReason": transition.reason,
        "StateChangeTime": transition.at,
        "Region": region,
        "AlarmArn": alarm.get("AlarmArn"),
        "OldStateValue": transition.previous,
        "Trigger": {
            "MetricName": alarm.get("MetricName"),
            "Namespace": alarm.get("Namespace"),
            "StatisticType": "ExtendedStatistic" if alarm.get("ExtendedStatistic") else "Statistic",
            "Statistic": (alarm.get("ExtendedStatistic") or alarm.get("Statistic") or "").upper(),
            "Unit": alarm.get("Unit"),
            "Dimensions": [{"name": d["Name"], "value": d["Value"]} for d in alarm.get("Dimensions") or []],
            "Period": alarm.get("Period"),
            "EvaluationPeriods": alarm.get("EvaluationPeriods"),
            "DatapointsToAlarm": alarm.get("DatapointsToAlarm"),
            "ComparisonOperator": alarm.get("ComparisonOperator"),
            "Threshold": alarm.get("Threshold"),
            "TreatMissingData": alarm.get("TreatMissingData") or "missing",
        },
    }


def _cloudwatch_backend(account: str, region: str) -> Any:
    try:
        from moto.cloudwatch.models import cloudwatch_backends
    except ImportError as err:  # pragma: no cover - only when moto moves it
        raise RuntimeError(
            f"moto.cloudwatch.models.cloudwatch_backends cannot be imported ({err}); "
            "sluice.local.alarms must be updated"
        ) from err
    backend = cloudwatch_backends[account][region]
    if not hasattr(backend, "metric_data"):
        raise RuntimeError(
            "moto.cloudwatch.models.CloudWatchBackend.metric_data is gone (moto upgraded?); "
            "sluice.local.alarms must be updated"
        )
    return backend


def check_moto() -> None:
    """Raise RuntimeError naming the moto symbol this module reads if it moved."""
    from moto.cloudwatch import models

    for name in ("cloudwatch_backends", "MetricDatum", "MetricAggregatedDatum", "CloudWatchBackend"):
        if not hasattr(models, name):
            raise RuntimeError(
                f"moto.cloudwatch.models.{name} is gone (moto upgraded?); update sluice.local.alarms"
            )
    datum = models.MetricDatum("ns", "m", 1.0, [{"Name": "d", "Value": "v"}], None)
    for attribute in ("namespace", "name", "value", "dimensions", "timestamp", "unit"):
        if not hasattr(datum, attribute):
            raise RuntimeError(
                f"moto.cloudwatch.models.MetricDatum.{attribute} is gone (moto upgraded?); "
                "update sluice.local.alarms"
            )


def _epoch(when: Any) -> float:
    if isinstance(when, int | float):
        return float(when)
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
