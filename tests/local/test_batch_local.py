"""Batch scoring on the embedded local AWS: the synthesized dev stage's pipelines, end to end.

The state machines (Distributed Map over S3 shards, ResultWriter), the training-image steps, the
endpoint behind the local REST gateway, the S3 → EventBridge rule and the schedule are the
stage's own, running on moto with the local fillers (``localaws``).
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pytest

from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.names import batch_state_machine_name, registry_table_name, stage_bucket_name
from sluice.pipelines.datasource import write_table
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice_demo import datasets
from tests.local.conftest import wait_execution

MODEL = "credit-risk"


@pytest.fixture(scope="module")
def stage(local_aws):
    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage="dev", account=local_aws.account, region=local_aws.region)

    spec = datasets.credit_spec(max_iter=300)
    trained = train(datasets.credit(3_000, seed=21), spec)
    registry = ModelRegistry(table_name=registry_table_name("dev"), bucket_name=bucket("artifacts"))
    version = registry.register(MODEL, bundle_from_training(trained), lineage=Lineage()).version
    registry.approve(MODEL, version, actor="tester")
    registry.set_alias(MODEL, "champion", version, actor="tester")
    arn = f"arn:aws:states:{local_aws.region}:{local_aws.account}:stateMachine:"
    return {
        "trained": trained,
        "version": version,
        "work": bucket("work"),
        "capture": bucket("capture"),
        "machine": arn + batch_state_machine_name("dev", MODEL),
        "via_endpoint": arn + batch_state_machine_name("dev", MODEL, via_endpoint=True),
        "sfn": local_aws.client("stepfunctions"),
        "s3": local_aws.client("s3"),
    }


def _start(stage, machine: str, name: str, **event) -> str:
    return stage["sfn"].start_execution(
        stateMachineArn=stage[machine], name=name, input=json.dumps({"model": MODEL, **event})
    )["executionArn"]


def _read(s3, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _manifest(stage, run_id: str) -> dict:
    return json.loads(_read(stage["s3"], f"s3://{stage['work']}/batch/output/{MODEL}/{run_id}/manifest.json"))


def _expected(stage, frame: pd.DataFrame) -> np.ndarray:
    trained = stage["trained"]
    return trained.estimator.predict(trained.preprocessor.transform(frame))


def test_100k_rows_in_shards_score_like_predict_with_matching_manifest(stage):
    # Given 100,000 rows in a Parquet file
    frame = datasets.credit(100_000, seed=7)
    uri = f"s3://{stage['work']}/data/big.parquet"
    write_table(frame, uri)
    # When the model variant scores it in shards of 10,000
    arn = _start(stage, "machine", "big", input_uri=uri, shard_rows=10_000)
    done = wait_execution(stage["sfn"], arn)
    # Then the run succeeds and its predictions equal model.predict on the same rows, in order
    assert done["status"] == "SUCCEEDED", done.get("cause")
    manifest = _manifest(stage, "big")
    out = pd.read_parquet(io.BytesIO(_read(stage["s3"], manifest["predictions_uri"])))
    assert np.array_equal(out["prediction"].to_numpy(), _expected(stage, frame))
    assert out["input_row"].tolist() == list(range(100_000))
    # and the manifest counts match
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rejects"]) == (100_000, 100_000, 0)
    assert (manifest["shards"], manifest["failed_shards"], manifest["status"]) == (10, [], "SUCCEEDED")
    assert manifest["model_version"] == stage["version"] and manifest["scored_by"] == ["model"]
    # and the scored rows were captured as source "batch"
    keys = [
        o["Key"]
        for page in stage["s3"]
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stage["capture"], Prefix=f"capture/model={MODEL}/")
        for o in page.get("Contents", [])
    ]
    # (one Parquet object per shard, in the capture table's columns)
    assert keys and all(k.endswith(".parquet") for k in keys)
    captured = pd.concat(
        pd.read_parquet(io.BytesIO(_read(stage["s3"], f"s3://{stage['capture']}/{key}"))) for key in keys
    )
    big = captured[captured["request_id"].str.startswith("big/")]
    assert set(big["source"]) == {"batch"} and len(big) == 100_000


def test_endpoint_variant_scores_through_the_gateway_like_predict(local_aws, stage):
    # Given 100k rows as CSV: every row goes through the local HTTP gateway, its request
    # validation and the endpoint's ONNX Runtime worker, in signed requests of 2,000 rows
    frame = datasets.credit(100_000, seed=8)
    uri = f"s3://{stage['work']}/data/via.csv"
    write_table(frame, uri)
    # When the endpoint-calling variant scores it (locally, the run names the gateway's URL)
    url = local_aws.gateway_url("EndpointRest") + "/predict"
    arn = _start(stage, "via_endpoint", "via", input_uri=uri, shard_rows=10_000, endpoint_url=url)
    done = wait_execution(stage["sfn"], arn)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    manifest = _manifest(stage, "via")
    out = pd.read_csv(io.BytesIO(_read(stage["s3"], manifest["predictions_uri"])))
    # Then the predictions equal model.predict on the same rows, and the counts match
    assert np.array_equal(out["prediction"].to_numpy(), _expected(stage, frame))
    assert (manifest["rows_in"], manifest["rows_out"], manifest["shards"]) == (100_000, 100_000, 10)
    assert manifest["scored_by"] == ["endpoint"] and manifest["model_version"] == stage["version"]


def test_bad_rows_go_to_rejects_and_too_many_fail_the_run(stage):
    frame = datasets.credit(500, seed=9)
    frame["region"] = frame["region"].astype(object)
    frame.loc[[5, 50], "region"] = "atlantis"
    uri = f"s3://{stage['work']}/data/dirty.csv"
    write_table(frame, uri)
    ok = wait_execution(stage["sfn"], _start(stage, "machine", "dirty", input_uri=uri, shard_rows=1_000))
    assert ok["status"] == "SUCCEEDED", ok.get("cause")
    manifest = _manifest(stage, "dirty")
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rejects"]) == (500, 498, 2)
    rejects = pd.read_csv(io.BytesIO(_read(stage["s3"], manifest["rejects_uri"])))
    assert rejects["input_row"].tolist() == [5, 50]
    assert set(rejects["reason"]) == {"region: unknown_category"}
    # and the same file with a zero reject allowance fails, saying why
    strict = wait_execution(
        stage["sfn"], _start(stage, "machine", "strict", input_uri=uri, shard_rows=1_000, max_reject_share=0.0)
    )
    assert strict["status"] == "FAILED"
    assert "2 of 500 rows rejected" in _manifest(stage, "strict")["reasons"][0]


def _subscribe(local_aws, topic_arn: str) -> str:
    sqs = local_aws.client("sqs")
    queue = sqs.create_queue(QueueName=f"batch-inbox-{time.time_ns()}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    local_aws.client("sns").subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    return queue


def test_a_shard_failing_once_is_retried_and_one_always_failing_fails_with_a_notification(local_aws, stage):
    topic = local_aws.physical_id("BatchNotifications", resource_type="AWS::SNS::Topic")
    queue = _subscribe(local_aws, topic)
    uri = f"s3://{stage['work']}/data/faults.parquet"
    write_table(datasets.credit(3_000, seed=10), uri)
    # A shard whose first attempt fails is retried and the run succeeds
    once = wait_execution(
        stage["sfn"],
        _start(stage, "machine", "once", input_uri=uri, shard_rows=1_000, faults={"shard-00001": 1}),
    )
    assert once["status"] == "SUCCEEDED", once.get("cause")
    assert _manifest(stage, "once")["rows_out"] == 3_000
    markers = stage["s3"].list_objects_v2(Bucket=stage["work"], Prefix="batch/once/faults/shard-00001/")
    assert markers["KeyCount"] == 1
    # A shard that always fails ends the run failed, with a manifest and a notification naming it
    always = wait_execution(
        stage["sfn"],
        _start(stage, "machine", "always", input_uri=uri, shard_rows=1_000, faults={"shard-00002": 99}),
    )
    assert always["status"] == "FAILED"
    manifest = _manifest(stage, "always")
    assert [s["shard"] for s in manifest["failed_shards"]] == ["shard-00002"]
    assert manifest["predictions_uri"] is None and manifest["status"] == "FAILED"
    bodies: list[dict] = []
    deadline = time.monotonic() + 30
    while not bodies and time.monotonic() < deadline:
        messages = local_aws.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
        bodies = [b for b in bodies if b.get("run_id") == "always"]
    assert bodies and bodies[0]["failed_shards"] == ["shard-00002"]
    assert bodies[0]["manifest_uri"].endswith("/always/manifest.json")


def test_s3_drop_and_schedule_start_runs(local_aws, stage):
    sfn = stage["sfn"]

    def executions() -> set[str]:
        return {
            e["executionArn"] for e in sfn.list_executions(stateMachineArn=stage["machine"])["executions"]
        }

    before = executions()
    # An object created under the input prefix starts a run on it
    write_table(datasets.credit(200, seed=12), f"s3://{stage['work']}/batch/input/{MODEL}/drop.csv")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not executions() - before:
        time.sleep(0.5)
    (started,) = executions() - before
    assert json.loads(sfn.describe_execution(executionArn=started)["input"])["input_uri"].endswith(
        f"/batch/input/{MODEL}/drop.csv"
    )
    assert wait_execution(sfn, started)["status"] == "SUCCEEDED"
    # The schedule, fired now, starts a run on the scheduled input
    write_table(datasets.credit(200, seed=13), f"s3://{stage['work']}/batch/scheduled/{MODEL}/latest.parquet")
    events = next(c for c in local_aws._components if getattr(c, "schedules", None) is not None)
    schedule = local_aws.physical_id("BatchSchedule", resource_type="AWS::Scheduler::Schedule")
    before = executions()
    events.schedules.fire(schedule.split("/")[-1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not executions() - before:
        time.sleep(0.5)
    (scheduled,) = executions() - before
    assert json.loads(sfn.describe_execution(executionArn=scheduled)["input"])["trigger"] == "schedule"
    assert wait_execution(sfn, scheduled)["status"] == "SUCCEEDED"


def test_cli_starts_the_stage_pipeline_by_name_and_follows_it(stage, capsys):
    from sluice.cli import main

    uri = f"s3://{stage['work']}/data/cli.parquet"
    write_table(datasets.credit(4_000, seed=14), uri)
    code = main(["batch", "run", "--model", MODEL, "--input", uri, "--shard-rows", "1000", "--json"])
    manifest = json.loads(capsys.readouterr().out)
    assert code == 0 and manifest["status"] == "SUCCEEDED"
    assert (manifest["rows_in"], manifest["rows_out"], manifest["shards"]) == (4_000, 4_000, 4)
