"""Capture cost in batch scoring, and reading capture back: Parquet, column by column.

Runs under moto in this process (``mock_aws``) on ``SLUICE_BENCH_CAPTURE_ROWS`` rows (default
100,000) of the credit dataset in shards of 10,000. The baseline, measured in the same run, is
the score step itself with capture off; the step variants run interleaved, one call of each
per round, so that a change in the machine's load falls on all of them alike.

Metrics (rows per second; ``ratio`` = value / baseline):

* ``score_step_rows_per_s``: :func:`sluice.pipelines.batch_score.score_shard` per shard, capture
  off (read the shard from S3, score, write the scored shard);
* ``score_step_captured_rows_per_s``: the same with capture on, as the step captures (one
  Parquet object per shard, built column by column); target ``>= 0.5x`` the step without;
* ``score_step_captured_per_row_rows_per_s``: the same with capture through one record dict per
  row (:func:`~sluice.serving.capture.capture_records` + ``put``), the path before the columnar one;
* ``capture_read_records_rows_per_s``: :func:`~sluice.serving.capture_reader.iter_capture` over
  the captured window (record dicts), and ``capture_read_frames_rows_per_s``:
  :func:`~sluice.serving.capture_reader.iter_capture_frames` (features as a DataFrame, the drift
  job's sketch input), against the record reader.

Run: ``python -m bench bench_capture`` (``SLUICE_BENCH_REPEAT`` repeats, default 3; the median counts).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._common import emit, log, median, on_moto, timings

BENCH = "capture"
ROWS = int(os.environ.get("SLUICE_BENCH_CAPTURE_ROWS", "100000"))
SHARD_ROWS = 10_000
REPEAT = int(os.environ.get("SLUICE_BENCH_REPEAT", "3"))
REGION = "eu-west-1"
TABLE, ARTIFACTS, WORK, CAPTURE = "bench-registry", "bench-artifacts", "bench-work", "bench-capture"


def main() -> None:
    on_moto(_run, region=REGION)


def _median_s(fn: Any) -> float:
    return median(timings(fn, repeat=REPEAT, warmup=1))


def _per_row_writer(bucket: str) -> Any:
    """The capture path before the columnar one: one record dict per row, then ``put``."""
    from sluice.pipelines.batch_scorers import json_records
    from sluice.serving.capture import CaptureWriter, capture_records

    class PerRowFrame:
        def __init__(self, writer: CaptureWriter, features: Any, fields: dict[str, Any]) -> None:
            self.writer, self.features, self.fields = writer, features, fields

        def scored(self, predictions: Any, probabilities: Any = None) -> None:
            self.answers = {"predictions": predictions, "probabilities": probabilities}

        def send(self) -> int:
            rows = json_records(self.features)
            return self.writer.put(capture_records(rows=rows, plain_rows=True, **self.fields, **self.answers))

        def __enter__(self) -> PerRowFrame:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    class PerRowCapture(CaptureWriter):
        def begin_frame(self, *, features: Any, ts: Any = None, **fields: Any) -> Any:  # type: ignore[override]
            return PerRowFrame(self, features, fields)

    return PerRowCapture(bucket_name=bucket)


def _setup() -> tuple[Any, Any, list[str], Any]:
    import boto3

    from sluice import aws
    from sluice.models.packaging import bundle_from_training
    from sluice.models.training import train
    from sluice.pipelines import batch_preprocess, batch_scorers, batch_shards
    from sluice.pipelines.batch_request import BatchRequest
    from sluice.pipelines.datasource import write_table
    from sluice.registry.lineage import Lineage
    from sluice.registry.store import create_storage
    from sluice.serving import scoring
    from sluice.settings import Settings
    from sluice_demo import datasets

    aws.reset_clients()
    registry = create_storage(TABLE, ARTIFACTS)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (WORK, CAPTURE):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    trained = train(datasets.credit(5_000, seed=1), datasets.credit_spec(max_iter=300))
    registry.register("credit", bundle_from_training(trained, onnx=False), lineage=Lineage())
    registry.approve("credit", 1, actor="bench")
    settings = Settings(
        registry_table=TABLE,
        registry_bucket=ARTIFACTS,
        work_bucket=WORK,
        capture_bucket=CAPTURE,
        region=REGION,
    )
    write_table(datasets.credit(ROWS, seed=2), f"s3://{WORK}/in/bench.parquet")
    request = BatchRequest(
        model="credit",
        version=1,
        input_uri=f"s3://{WORK}/in/bench.parquet",
        run_id="bench",
        shard_rows=SHARD_ROWS,
    )
    state = batch_preprocess.preprocess(settings, request, registry=registry)
    keys = [f"{state['shard_prefix']}{batch_shards.shard_name(i)}.parquet" for i in range(state["shards"])]
    scoring.clear_cache()
    scorer = batch_scorers.ModelShardScorer.load("credit", 1, registry=registry)
    return settings, state, keys, scorer


def _run() -> None:
    from sluice.pipelines import batch_score
    from sluice.serving.capture import CaptureWriter
    from sluice.serving.capture_reader import iter_capture, iter_capture_frames

    settings, state, keys, scorer = _setup()
    log(f"capture bench: {ROWS} rows, shards of {SHARD_ROWS}, median of {REPEAT}")
    started = datetime.now(UTC)

    def step(capture: Any) -> None:
        for key in keys:
            batch_score.score_shard(
                settings, {"key": key, "run": state["run"]}, scorer=scorer, capture=capture
            )

    common = {"rows": ROWS, "shard_rows": SHARD_ROWS, "backend": "moto in-process (mock_aws)"}
    variants = {
        "off": lambda: step(CaptureWriter()),
        "on": lambda: step(CaptureWriter(bucket_name=CAPTURE)),
        "per_row": lambda: step(_per_row_writer(CAPTURE)),
    }
    # Interleaved, one call of each per round, so a change in machine load hits all alike.
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(REPEAT + 1):  # the first round warms up
        for name, fn in variants.items():
            seconds[name] += timings(fn, repeat=1, warmup=0)
    off, on, per_row = (ROWS / median(seconds[name][1:]) for name in variants)
    emit(BENCH, "score_step_rows_per_s", off, unit="rows/s", note="capture off", **common)
    emit(
        BENCH,
        "score_step_captured_rows_per_s",
        on,
        unit="rows/s",
        baseline=off,
        baseline_name="score_step_rows_per_s",
        target=">= 0.5x",
        note="Parquet, column by column",
        **common,
    )
    emit(
        BENCH,
        "score_step_captured_per_row_rows_per_s",
        per_row,
        unit="rows/s",
        baseline=off,
        baseline_name="score_step_rows_per_s",
        note="one record dict per row, then put",
        **common,
    )
    window = {"start": started - timedelta(minutes=1), "end": datetime.now(UTC) + timedelta(minutes=1)}
    captured = sum(len(c) for c in iter_capture(CAPTURE, model="credit", version=1, **window))
    columns = list(scorer.scorer.schema.names)

    def records() -> None:
        for _ in iter_capture(CAPTURE, model="credit", version=1, **window):
            pass

    def frames() -> None:
        for _ in iter_capture_frames(CAPTURE, model="credit", version=1, columns=columns, **window):
            pass

    read_records = captured / _median_s(records)
    read_frames = captured / _median_s(frames)
    read = {**common, "rows": captured}
    emit(BENCH, "capture_read_records_rows_per_s", read_records, unit="rows/s", note="iter_capture", **read)
    emit(
        BENCH,
        "capture_read_frames_rows_per_s",
        read_frames,
        unit="rows/s",
        baseline=read_records,
        baseline_name="capture_read_records_rows_per_s",
        note="iter_capture_frames",
        **read,
    )


if __name__ == "__main__":
    main()
