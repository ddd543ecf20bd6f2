"""Capture and the drift job: request-path cost of capture, and the drift job's fan-out over a large window.

Prints JSON lines (``bench/_common.py``):

- ``capture_records_1row``: building and encoding the capture line of a 1-row request, against
  ``json.dumps`` of the bare row (the least any capture can do), in microseconds.
- ``drift_<n>_single_process_s`` and ``_peak_rss``: the drift job over ``n`` captured rows
  (Parquet objects of 50,000 rows in a moto server's S3) in one fresh process: the baseline.
- ``drift_<n>_fanout_<k>_wall_s``: the same window planned, sketched by ``k`` children (each a
  fresh process, as each Lambda is; at most as many at once as this machine has CPUs) and
  merged, against the single process; ``_peak_rss_per_child``: the largest child's peak RSS
  (``import_floor_mib``: its RSS after imports); ``_decisions_equal``: 1 when the merged report
  has the single process's rows, drifted features, PSI, verdict and estimated F1.

Rows: ``SLUICE_BENCH_DRIFT_ROWS`` (default 2,000,000; 10,000,000 is the issue's size, minutes
on a small machine). ``python -m bench bench_monitoring``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta

from bench._common import emit, log, median, timings

BENCH = "monitoring"
ROWS_ENV = "SLUICE_BENCH_DRIFT_ROWS"
DEFAULT_ROWS = 2_000_000
CHILD_COUNTS = (1, 4, 16)


def _capture_cost() -> None:
    from sluice.serving.capture import capture_records, encode_line
    from sluice_demo.datasets import CATEGORICAL, NUMERIC, credit

    row = credit(1, seed=0)[[*NUMERIC, *CATEGORICAL]].to_dict("records")[0]

    def ours() -> None:
        for record in capture_records(request_id="r", model="m", version=1, rows=[row], predictions=[1]):
            encode_line(record)

    def bare() -> None:
        json.dumps(row)

    ours_s = median(timings(ours, repeat=20_000, warmup=1000))
    bare_s = median(timings(bare, repeat=20_000, warmup=1000))
    emit(
        BENCH,
        "capture_records_1row",
        ours_s * 1e6,
        unit="us",
        baseline=bare_s * 1e6,
        baseline_name="json.dumps(row)",
        target="a small fraction of the 0.5 ms handler overhead budget",
    )


# --- the drift job over a large window: single process against the fan-out -----------------------

MODEL = "bench-model"
BUCKET = "bench-capture"
ROWS_PER_OBJECT = 50_000
START = datetime(2026, 11, 25, 10, tzinfo=UTC)
END = START + timedelta(hours=1)


class _Record:
    def __init__(self, artifacts: dict) -> None:
        self.artifacts = artifacts
        self.metrics = {"f1": 0.5}
        self.notes: dict = {}


class BenchRegistry:
    """The registry calls the drift job makes: one version with a profile and an identity calibration."""

    def __init__(self, profile: dict) -> None:
        from sluice.monitoring.estimation import Calibrator

        self.blobs = {
            "profile.json": json.dumps(profile).encode(),
            "calibration.json": Calibrator().to_json(),
        }

    def get(self, name, *, version=None, alias=None):
        return _Record({"profile.json": {"sha256": "bench"}, "calibration.json": {}})

    def fetch(self, name, version, artifact):
        return self.blobs[artifact]

    def history(self, name):
        return []

    def aliases(self, name):
        return {}


def _memory_mib(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process from ``/proc/self/status``, in MiB.

    Not ``ru_maxrss``: Linux carries that over ``exec``, so a spawned child would report its parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _import_floor() -> float:
    """RSS once the drift job's libraries are imported (what every Lambda of it carries)."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.stats  # noqa: F401

    from sluice.monitoring import drift_job, fanout, profile  # noqa: F401

    return _memory_mib("VmRSS")


def _settings():
    from sluice.settings import Settings

    return Settings(capture_bucket=BUCKET, reports_bucket=BUCKET)


def _child(item: dict, profile: dict) -> tuple[float, float, float]:
    """One fan-out child in a fresh process, like a Lambda: (seconds, peak RSS MiB, RSS after imports)."""
    from sluice.monitoring import fanout

    floor = _import_floor()
    began = time.perf_counter()
    fanout.sketch_group(_settings(), item, registry=BenchRegistry(profile))
    return time.perf_counter() - began, _memory_mib("VmHWM"), floor


def _single(profile: dict) -> tuple[float, float, float, dict]:
    """The whole window in one fresh process: (seconds, peak RSS MiB, RSS after imports, decisions)."""
    from sluice.monitoring import drift_job

    floor = _import_floor()
    registry = BenchRegistry(profile)
    began = time.perf_counter()
    plan = drift_job.plan_drift(
        _settings(), model=MODEL, versions=[1], window=(START, END), registry=registry
    )
    (run,) = drift_job.drift_runs(
        _settings(), model=MODEL, plan=plan, registry=registry, publish_metrics=False, write_reports=False
    )
    return time.perf_counter() - began, _memory_mib("VmHWM"), floor, _decisions(run)


def _decisions(run) -> dict:
    report = run.report
    return {
        "rows": report.target.n_rows,
        "drifted": sorted(report.drifted_features),
        "psi": {f.name: f.psi for f in report.features},
        "dataset_drift": report.dataset_drift,
        "estimated_f1": round(run.estimate.f1, 9),
    }


def _write_window(n_rows: int, frame, seed: int = 0) -> None:
    import numpy as np

    from sluice.serving.capture import CaptureWriter

    writer = CaptureWriter(bucket_name=BUCKET)
    rng = np.random.default_rng(seed)
    for n, i in enumerate(range(0, n_rows, ROWS_PER_OBJECT)):
        part = frame.iloc[: min(ROWS_PER_OBJECT, n_rows - i)]
        probabilities = rng.random(len(part))
        written = writer.put_frame(
            request_id=f"b{n}",
            model=MODEL,
            version=1,
            features=part,
            predictions=(probabilities >= 0.5).astype(int),
            probabilities=probabilities,
            ts=START + timedelta(seconds=(i * 3000) // max(n_rows, 1)),
        )
        assert written == len(part), "capture write failed"


def _fan_out(children: int, profile: dict, pool_size: int) -> dict:
    """Plan, run ``children`` children in fresh processes (``pool_size`` at a time), merge."""
    import math
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from sluice import aws
    from sluice.monitoring import drift_job, fanout

    registry = BenchRegistry(profile)
    began = time.perf_counter()
    plan = drift_job.plan_drift(
        _settings(), model=MODEL, versions=[1], window=(START, END), registry=registry
    )
    per_child = math.ceil(plan.bytes / children)
    written = fanout.write_fanout(_settings(), plan, fanout.child_groups(plan, bytes_per_child=per_child))
    items = json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=written.items_key)["Body"].read())
    planned = time.perf_counter()
    with ProcessPoolExecutor(pool_size, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        stats = list(pool.map(_child, items, [profile] * len(items)))
    sketched = time.perf_counter()
    (run,) = fanout.merge_groups(
        _settings(), written.plan_key, registry=registry, publish_metrics=False, write_reports=False
    )
    done = time.perf_counter()
    return {
        "wall": done - began,
        "plan": planned - began,
        "merge": done - sketched,
        "stats": stats,
        "decisions": _decisions(run),
        "window_mib": plan.bytes / 2**20,
    }


def _drift_fanout(n_rows: int, child_counts: tuple[int, ...]) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import boto3
    from moto.server import ThreadedMotoServer

    from sluice import aws
    from sluice.monitoring.profile import DriftProfile
    from sluice_demo.datasets import CATEGORICAL, NUMERIC, credit

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request log
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"  # children (spawned) inherit it
    aws.reset_clients()
    try:
        boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        profile = DriftProfile(categorical=list(CATEGORICAL)).fit(
            credit(5000, seed=0)[[*NUMERIC, *CATEGORICAL]]
        )
        frame = credit(ROWS_PER_OBJECT, seed=1, shift={"income": 0.3})[[*NUMERIC, *CATEGORICAL]]
        began = time.perf_counter()
        _write_window(n_rows, frame)
        log(f"wrote {n_rows} captured rows in {time.perf_counter() - began:.0f} s")
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            single_s, single_rss, floor, expected = pool.submit(_single, profile.to_dict()).result()
        assert expected["rows"] == n_rows
        emit(BENCH, f"drift_{n_rows}_single_process_s", single_s, unit="s")
        emit(BENCH, f"drift_{n_rows}_single_process_peak_rss", single_rss, unit="MiB", import_floor_mib=floor)
        for children in child_counts:
            _report_fan_out(n_rows, children, profile.to_dict(), expected, single_s, single_rss)
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


def _report_fan_out(n_rows, children, profile, expected, single_s, single_rss) -> None:
    pool_size = min(children, os.cpu_count() or 1)
    result = _fan_out(children, profile, pool_size)
    stats = result["stats"]
    slowest = max(s for s, _, _ in stats)
    emit(
        BENCH,
        f"drift_{n_rows}_fanout_{children}_wall_s",
        result["wall"],
        unit="s",
        baseline=single_s,
        baseline_name="the window in one process",
        children=len(stats),
        parallel_processes=pool_size,
        window_mib=round(result["window_mib"], 1),
        plan_s=round(result["plan"], 3),
        merge_s=round(result["merge"], 3),
        slowest_child_s=round(slowest, 3),
        children_s_total=round(sum(s for s, _, _ in stats), 3),
    )
    # What the Map gives when every child has its own Lambda (this machine runs pool_size at once)
    emit(
        BENCH,
        f"drift_{n_rows}_fanout_{children}_critical_path_s",
        result["plan"] + slowest + result["merge"],
        unit="s",
        baseline=single_s,
        baseline_name="the window in one process",
        note="plan + slowest child + merge: the wall time with one CPU per child, cold starts excluded",
    )
    emit(
        BENCH,
        f"drift_{n_rows}_fanout_{children}_peak_rss_per_child",
        max(r for _, r, _ in stats),
        unit="MiB",
        baseline=single_rss,
        baseline_name="the window in one process",
        import_floor_mib=round(max(f for _, _, f in stats), 1),
    )
    emit(
        BENCH,
        f"drift_{n_rows}_fanout_{children}_decisions_equal",
        float(result["decisions"] == expected),
        unit="bool",
        target="1: the same rows, drifted features, PSI, dataset verdict and estimated F1",
    )


def main() -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    _capture_cost()
    rows = int(os.environ.get(ROWS_ENV) or DEFAULT_ROWS)
    log(f"drift job over {rows} captured rows: one process, then fanned out to {CHILD_COUNTS} children")
    _drift_fanout(rows, CHILD_COUNTS)


if __name__ == "__main__":
    main()
