"""Capture and the drift job: request-path cost of capture, and chunked window reading.

Prints JSON lines (``bench/_common.py``):

- ``capture_records_1row``: building and encoding the capture line of a 1-row request, against
  ``json.dumps`` of the bare row (the least any capture can do), in microseconds.
- ``drift_window_<n>``: reading ``n`` captured rows from S3 (moto, in-process) through
  ``iter_capture`` and the drift profile's mergeable sketches, rows per second, and its peak
  Python memory (tracemalloc) against loading the same JSON lines at once with pandas.
  Peak memory of the chunked path stays flat as the window grows (memory independent of the
  window); the all-at-once baseline grows with it.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from bench._common import emit, log, median, timings

BENCH = "monitoring"


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


def _window(n_rows: int, profile, frame_rows: list[dict]) -> None:
    import boto3
    import pandas as pd
    from moto import mock_aws

    from sluice import aws
    from sluice.monitoring.drift_job import sketch_capture
    from sluice.serving.capture import CaptureWriter, capture_records, encode_line
    from sluice.serving.capture_reader import iter_capture

    start = datetime(2026, 11, 25, 10, tzinfo=UTC)
    end = start + timedelta(hours=1)
    with mock_aws():
        aws.reset_clients()
        boto3.client("s3").create_bucket(
            Bucket="bench", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        writer = CaptureWriter(bucket_name="bench")
        per_request = 500
        for i in range(0, n_rows, per_request):
            rows = [frame_rows[(i + j) % len(frame_rows)] for j in range(per_request)]
            writer.put(
                capture_records(
                    request_id=f"r{i}",
                    model="m",
                    version=1,
                    rows=rows,
                    predictions=[0] * per_request,
                    ts=start + timedelta(seconds=i * 3000 / n_rows),
                )
            )

        def run():
            return sketch_capture(
                profile, "bench", model="m", version=1, start=start, end=end, chunk_rows=20_000
            )

        began = time.perf_counter()
        assert run().n_rows == n_rows
        seconds = time.perf_counter() - began
        tracemalloc.start()  # a second pass for memory: tracemalloc slows allocation down
        run()
        _, chunked_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        tracemalloc.start()
        lines = b"".join(
            encode_line(r)
            for chunk in iter_capture("bench", model="m", version=1, start=start, end=end)
            for r in chunk
        )
        frame = pd.json_normalize([json.loads(x) for x in lines.splitlines()])
        assert len(frame) == n_rows
        _, whole_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del frame, lines
    emit(BENCH, f"drift_window_{n_rows}_rows_per_s", n_rows / seconds, unit="rows/s")
    emit(
        BENCH,
        f"drift_window_{n_rows}_peak_memory",
        chunked_peak / 2**20,
        unit="MiB",
        baseline=whole_peak / 2**20,
        baseline_name="the window loaded at once (json + pandas)",
        target="flat as the window grows",
    )


def main() -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from sluice.monitoring.profile import DriftProfile
    from sluice_demo.datasets import CATEGORICAL, NUMERIC, credit

    _capture_cost()
    baseline = credit(5000, seed=0)[[*NUMERIC, *CATEGORICAL]]
    profile = DriftProfile(categorical=list(CATEGORICAL)).fit(baseline)
    rows = credit(5000, seed=1)[[*NUMERIC, *CATEGORICAL]].to_dict("records")
    for n in (20_000, 80_000):
        log(f"drift window of {n} rows")
        _window(n, profile, rows)


if __name__ == "__main__":
    main()
