"""How CloudWatch decides an alarm's state, and the messages it sends when the state changes.

Pure functions over ``describe_alarms`` dicts and moto's datums: the statistic of a period
(:func:`statistic`), the state for a run of periods (:func:`decide`), and the EventBridge
detail and SNS message of a :class:`Transition`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


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


def unsupported(alarm: dict[str, Any]) -> str:
    """Why an alarm is not evaluated locally, or ``""`` when it is."""
    if alarm.get("Metrics"):
        return "metric-math alarms (Metrics) are not evaluated locally"
    if alarm.get("ComparisonOperator") not in OPERATORS:
        return f"ComparisonOperator {alarm.get('ComparisonOperator')!r} is not evaluated locally"
    extended = alarm.get("ExtendedStatistic")
    if extended and percentile(extended) is None:
        return f"ExtendedStatistic {extended!r} is not evaluated locally (only pNN)"
    if not extended and alarm.get("Statistic") not in STATISTICS:
        return f"Statistic {alarm.get('Statistic')!r} is not evaluated locally"
    return ""


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


STATISTICS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")


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
        q = percentile(extended)
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


def percentile(name: str) -> float | None:
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


def epoch(when: Any) -> float:
    if isinstance(when, int | float):
        return float(when)
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
