"""Logs and metrics of the local Lambda workers, on their way to the local CloudWatch."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localaws.env import LocalAws
    from localaws.lambdas.environment import Worker

log = logging.getLogger("localaws.lambdas")


class Telemetry:
    """Ships the workers' log lines and EMF metrics to the local CloudWatch, in batches.

    Lambda delivers both asynchronously, seconds after the invocation. Shipping each
    invocation's lines with API calls of its own cost about 4 ms of this process's CPU per
    request (the moto server shares its GIL), which showed as gateway latency; one thread now
    sends whatever accumulated every ``interval_s``, a few calls per flush whatever the load.
    """

    MAX_LOG_EVENTS = 5_000  # PutLogEvents allows 10,000 events and 1 MB per call
    MAX_METRIC_DATA = 500  # PutMetricData allows 1,000 datums per call

    def __init__(self, local: LocalAws, *, interval_s: float = 0.1) -> None:
        self.local = local
        self.interval_s = interval_s
        self._logs: dict[Worker, list[dict[str, Any]]] = {}
        self._metrics: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lambda-telemetry")
        self._thread.start()

    def add_logs(self, worker: Worker, lines: list[str]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._logs.setdefault(worker, []).extend({"timestamp": now, "message": m or " "} for m in lines)

    def add_metrics(self, pairs: list[tuple[str, list[dict[str, Any]]]]) -> None:
        with self._lock:
            for namespace, data in pairs:
                self._metrics.setdefault(namespace, []).extend(data)

    def flush(self) -> None:
        """Send everything accumulated so far (also called on stop)."""
        with self._lock:
            logs, self._logs = self._logs, {}
            metrics, self._metrics = self._metrics, {}
        for worker, events in logs.items():
            try:
                self._put_logs(worker, events)
            except Exception:  # logs are best effort; the invocation result is what matters
                log.debug("shipping logs failed", exc_info=True)
        for namespace, data in metrics.items():
            try:
                cloudwatch = self.local.client("cloudwatch")
                for i in range(0, len(data), self.MAX_METRIC_DATA):
                    cloudwatch.put_metric_data(
                        Namespace=namespace, MetricData=data[i : i + self.MAX_METRIC_DATA]
                    )
            except Exception:
                log.exception("EMF metrics could not be published")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.flush()

    def _put_logs(self, worker: Worker, events: list[dict[str, Any]]) -> None:
        logs = self.local.client("logs")
        group, stream = worker.spec.log_group, worker.log_stream
        if not worker.log_stream_created:
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_group(logGroupName=group)
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
            worker.log_stream_created = True
        for i in range(0, len(events), self.MAX_LOG_EVENTS):
            logs.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=events[i : i + self.MAX_LOG_EVENTS]
            )


def emf_to_metric_data(record: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(namespace, MetricData)`` pairs for one CloudWatch Embedded Metric Format record."""
    meta = record["_aws"]
    timestamp = meta.get("Timestamp")
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in meta.get("CloudWatchMetrics", []):
        dimension_sets = directive.get("Dimensions") or [[]]
        data: list[dict[str, Any]] = []
        for metric in directive.get("Metrics", []):
            value = record.get(metric["Name"])
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            for dims in dimension_sets:
                datum: dict[str, Any] = {
                    "MetricName": metric["Name"],
                    "Dimensions": [{"Name": d, "Value": str(record[d])} for d in dims if d in record],
                    "Values": [float(v) for v in values],
                    "Unit": metric.get("Unit", "None"),
                }
                if timestamp:
                    datum["Timestamp"] = timestamp / 1000.0
                data.append(datum)
        if data:
            out.append((directive["Namespace"], data))
    return out
