"""Batch scoring throughput: the pipeline's steps in-process against a plain ``model.predict`` loop.

Runs under moto in this process (``mock_aws``: S3 and DynamoDB calls without HTTP), on
``SLUICE_BENCH_BATCH_ROWS`` rows (default 100,000) of the credit dataset in shards of 10,000.
The baseline, measured in the same run, is a loop of ``estimator.predict(preprocessor.transform(shard))``
over the same shards already in memory: no I/O, no validation, no capture.

A second baseline, ``plain_predict_io_rows_per_s``, adds to that loop the S3 work every score
step has to do whatever it runs: read the shard's Parquet from S3 and write the predictions back.

Metrics (rows per second; ``ratio`` = value / baseline; the issue's target is ≥ 0.8 for the score step):

* ``score_predict_rows_per_s``: the score step's model call on in-memory shards as the step
  makes it (rows preprocess already validated: columns, vectorised preprocessing, predict +
  probabilities), against the in-memory loop;
* ``score_predict_revalidated_rows_per_s``: the same with the schema validated again;
* ``score_step_rows_per_s``: :func:`sluice.pipelines.batch_score.score_shard` per shard as the Lambda runs it:
  read the shard from S3, score, write the scored shard, no capture; against the loop with
  the same S3 reads and writes, and (``score_step_vs_in_memory``) against the in-memory loop;
* ``score_step_captured_rows_per_s``: the same with data capture to S3 (``source="batch"``);
* ``pipeline_rows_per_s``: preprocess + every shard + postprocess (:func:`sluice.pipelines.batch.run_local`).

Run: ``python -m bench bench_batch`` (``SLUICE_BENCH_REPEAT`` repeats, default 3; the median counts).
"""

from __future__ import annotations

import os
from dataclasses import replace

from bench._common import emit, log, median, on_moto, timings

BENCH = "batch"
ROWS = int(os.environ.get("SLUICE_BENCH_BATCH_ROWS", "100000"))
SHARD_ROWS = 10_000
REPEAT = int(os.environ.get("SLUICE_BENCH_REPEAT", "3"))
REGION = "eu-west-1"
TABLE, ARTIFACTS, WORK, CAPTURE = "bench-registry", "bench-artifacts", "bench-work", "bench-capture"


def main() -> None:
    on_moto(_run, region=REGION)


def _best(fn, repeat: int = REPEAT) -> float:
    """Median wall-clock seconds of ``repeat`` calls (after one warm-up call)."""
    return median(timings(fn, repeat=repeat, warmup=1))


def _run() -> None:
    import io

    import boto3
    import pandas as pd

    from sluice import aws
    from sluice.models.packaging import bundle_from_training
    from sluice.models.training import train
    from sluice.pipelines import batch, batch_preprocess, batch_score, batch_scorers, batch_shards
    from sluice.pipelines.batch_request import BatchRequest
    from sluice.pipelines.datasource import write_table
    from sluice.registry.lineage import Lineage
    from sluice.registry.store import create_storage
    from sluice.serving import scoring
    from sluice.serving.capture import CaptureWriter
    from sluice.settings import Settings
    from sluice_demo import datasets

    aws.reset_clients()
    registry = create_storage(TABLE, ARTIFACTS)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (WORK, CAPTURE):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    spec = datasets.credit_spec(max_iter=300)
    trained = train(datasets.credit(5_000, seed=1), spec)
    registry.register("credit", bundle_from_training(trained, onnx=False), lineage=Lineage())
    registry.approve("credit", 1, actor="bench")  # batch scores only Approved versions
    settings = Settings(
        registry_table=TABLE,
        registry_bucket=ARTIFACTS,
        work_bucket=WORK,
        capture_bucket=CAPTURE,
        region=REGION,
    )
    frame = datasets.credit(ROWS, seed=2)
    write_table(frame, f"s3://{WORK}/in/bench.parquet")
    log(f"batch bench: {ROWS} rows, shards of {SHARD_ROWS}, median of {REPEAT}")

    request = BatchRequest(
        model="credit",
        version=1,
        input_uri=f"s3://{WORK}/in/bench.parquet",
        run_id="bench",
        shard_rows=SHARD_ROWS,
    )
    state = batch_preprocess.preprocess(settings, request, registry=registry)
    keys = [f"{state['shard_prefix']}{batch_shards.shard_name(i)}.parquet" for i in range(state["shards"])]
    features = list(spec.features)
    shards = [frame.iloc[a:b][features] for a, b in batch_shards.plan_shards(ROWS, SHARD_ROWS)]
    scoring.clear_cache()
    scorer = batch_scorers.ModelShardScorer.load("credit", 1, registry=registry)

    def plain() -> None:
        for shard in shards:
            trained.estimator.predict(trained.preprocessor.transform(shard))

    def plain_io() -> None:
        for key in keys:
            body = s3.get_object(Bucket=WORK, Key=key)["Body"].read()
            shard = pd.read_parquet(io.BytesIO(body))
            shard["prediction"] = trained.estimator.predict(trained.preprocessor.transform(shard[features]))
            out = io.BytesIO()
            shard.to_parquet(out, index=False)
            s3.put_object(Bucket=WORK, Key=f"bench-plain/{key}", Body=out.getvalue())

    def predict_core() -> None:
        for shard in shards:
            scorer.predict(shard, validated=True)

    def predict_revalidated() -> None:
        for shard in shards:
            scorer.predict(shard)

    no_capture = CaptureWriter()
    captured = CaptureWriter(bucket_name=CAPTURE)

    def step(capture) -> None:
        for key in keys:
            batch_score.score_shard(
                settings, {"key": key, "run": state["run"]}, scorer=scorer, capture=capture
            )

    runs = iter(range(1, 1_000))

    def pipeline() -> None:
        # Each run claims its own work prefix and output folder, so every repeat is a new run id.
        batch.run_local(
            settings, replace(request, run_id=f"bench-{next(runs)}"), registry=registry, scorer=scorer
        )

    baseline = ROWS / _best(plain)
    io_baseline = ROWS / _best(plain_io)
    common = {"rows": ROWS, "shard_rows": SHARD_ROWS, "backend": "moto in-process (mock_aws)"}
    emit(
        BENCH,
        "plain_predict_rows_per_s",
        baseline,
        unit="rows/s",
        note="estimator.predict(preprocessor.transform(shard)) over in-memory shards",
        **common,
    )
    emit(
        BENCH,
        "plain_predict_io_rows_per_s",
        io_baseline,
        unit="rows/s",
        baseline=baseline,
        baseline_name="plain_predict_rows_per_s",
        note="the same loop reading each shard from S3 and writing its predictions back",
        **common,
    )
    step_rate = ROWS / _best(lambda: step(no_capture))
    for metric, rate, base, base_name, target in (
        (
            "score_predict_rows_per_s",
            ROWS / _best(predict_core),
            baseline,
            "plain_predict_rows_per_s",
            ">= 0.8x",
        ),
        (
            "score_predict_revalidated_rows_per_s",
            ROWS / _best(predict_revalidated),
            baseline,
            "plain_predict_rows_per_s",
            None,
        ),
        ("score_step_rows_per_s", step_rate, io_baseline, "plain_predict_io_rows_per_s", ">= 0.8x"),
        ("score_step_vs_in_memory", step_rate, baseline, "plain_predict_rows_per_s", None),
        (
            "score_step_captured_rows_per_s",
            ROWS / _best(lambda: step(captured)),
            io_baseline,
            "plain_predict_io_rows_per_s",
            None,
        ),
        ("pipeline_rows_per_s", ROWS / _best(pipeline), io_baseline, "plain_predict_io_rows_per_s", None),
    ):
        emit(
            BENCH,
            metric,
            rate,
            unit="rows/s",
            baseline=base,
            baseline_name=base_name,
            target=target,
            **common,
        )


if __name__ == "__main__":
    main()
