"""Shared helpers for benchmarks: timing, percentiles and the JSON line format."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def emit(
    bench: str,
    metric: str,
    value: float,
    *,
    unit: str,
    baseline: float | None = None,
    baseline_name: str | None = None,
    target: str | None = None,
    **extra: object,
) -> dict:
    """Print one result line: ``{"bench", "metric", "value", "unit", "baseline", "ratio", ...}``.

    ``ratio`` is ``value / baseline`` when a baseline measured in the same run is given.
    """
    line: dict = {"bench": bench, "metric": metric, "value": round(value, 6), "unit": unit}
    if baseline is not None:
        line["baseline"] = round(baseline, 6)
        line["baseline_name"] = baseline_name
        line["ratio"] = round(value / baseline, 4) if baseline else None
    if target is not None:
        line["target"] = target
    line.update(extra)
    print(json.dumps(line), flush=True)
    return line


def timings(
    fn: Callable[[], object], *, repeat: int, warmup: int = 5, interval_s: float = 0.0
) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` after ``warmup`` calls.

    With ``interval_s`` the calls are paced: each starts ``interval_s`` after the previous one
    started (or at once if that one took longer), as independent clients' requests arrive.
    """
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        out.append(elapsed)
        if interval_s > elapsed:
            time.sleep(interval_s - elapsed)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def on_moto(run: Callable[[], None], *, region: str = "eu-west-1") -> None:
    """Call ``run`` inside moto's in-process AWS, with test credentials and ``lambdas/`` importable."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }.items():
        os.environ.setdefault(key, value)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    lambdas = str(Path(__file__).resolve().parents[1] / "lambdas")
    if lambdas not in sys.path:
        sys.path.insert(0, lambdas)
    from moto import mock_aws

    with mock_aws():
        run()
