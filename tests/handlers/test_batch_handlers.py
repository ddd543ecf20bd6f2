"""The batch step handlers under moto, with the payloads the state machine sends them."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
from moto import mock_aws

from sluice.handlers import batch_notify, batch_postprocess, batch_preprocess, batch_score
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.pipelines.datasource import write_table
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving import scoring
from sluice_demo import datasets

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "eu-west-1"
TABLE, ARTIFACTS, WORK, CAPTURE = "batch-registry", "batch-artifacts", "batch-work", "batch-capture"


@dataclass
class Context:
    function_name: str = "batch"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:batch"
    aws_request_id: str = "lambda-request"


def event(name: str) -> dict:
    return json.loads((EVENTS / f"batch_{name}.json").read_text())


@pytest.fixture(scope="module")
def trained():
    spec = datasets.credit_spec(max_iter=300)
    return train(datasets.credit(2000, seed=5), spec)


@pytest.fixture
def env(trained, monkeypatch):
    with mock_aws():
        registry = create_storage(TABLE, ARTIFACTS)
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (WORK, CAPTURE):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        registry.register("credit", bundle_from_training(trained, onnx=False), lineage=Lineage())
        registry.approve("credit", 1, actor="tester")
        registry.set_alias("credit", "champion", 1, actor="tester")
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="batch")["TopicArn"]
        for key, value in {
            "SLUICE_REGISTRY_TABLE": TABLE,
            "SLUICE_REGISTRY_BUCKET": ARTIFACTS,
            "SLUICE_WORK_BUCKET": WORK,
            "SLUICE_CAPTURE_BUCKET": CAPTURE,
            "SLUICE_NOTIFY_TOPIC_ARN": topic,
            "SLUICE_MODEL_NAME": "credit",  # the pipeline's scope, as the construct sets it
        }.items():
            monkeypatch.setenv(key, value)
        scoring.clear_cache()
        yield {"s3": s3, "topic": topic}
        scoring.clear_cache()


def test_steps_chain_from_preprocess_to_manifest(env, trained):
    s3 = env["s3"]
    frame = datasets.credit(4_000, seed=6)
    write_table(frame, "s3://batch-work/in/credit.csv")
    # preprocess: the run id is the execution name, four shards of 1,000 (the smallest allowed)
    state = batch_preprocess.lambda_handler(event("preprocess"), Context())
    assert state["run"]["run_id"] == "8f0c3a52-4c1e-4a51-9d55-2d1f7f1b0e11"
    assert (state["rows_in"], state["rejected"], state["shards"]) == (4_000, 0, 4)
    # score: one Distributed Map child per listed shard, as the ItemSelector shapes it
    listed = s3.list_objects_v2(Bucket=WORK, Prefix=state["shard_prefix"])["Contents"]
    results = [batch_score.lambda_handler({"key": o["Key"], "run": state["run"]}, Context()) for o in listed]
    assert [r["rows"] for r in results] == [1_000] * 4 and {r["via"] for r in results} == {"model"}
    # postprocess: reads the ResultWriter manifest the map wrote
    s3.put_object(
        Bucket=WORK, Key="mr/SUCCEEDED_0.json", Body=json.dumps([{"Output": json.dumps(r)} for r in results])
    )
    s3.put_object(
        Bucket=WORK,
        Key="mr/manifest.json",
        Body=json.dumps({"ResultFiles": {"SUCCEEDED": [{"Key": "mr/SUCCEEDED_0.json"}], "FAILED": []}}),
    )
    summary = batch_postprocess.lambda_handler(
        {**state, "map": {"ResultWriterDetails": {"Bucket": WORK, "Key": "mr/manifest.json"}}}, Context()
    )
    assert summary["status"] == "SUCCEEDED"
    body = s3.get_object(Bucket=WORK, Key=summary["manifest_uri"].split("/", 3)[3])["Body"].read()
    assert json.loads(body)["rows_out"] == 4_000
    key = summary["manifest"]["predictions_uri"].split("/", 3)[3]

    out = pd.read_csv(io.BytesIO(s3.get_object(Bucket=WORK, Key=key)["Body"].read()))
    assert np.array_equal(
        out["prediction"].to_numpy(), trained.estimator.predict(trained.preprocessor.transform(frame))
    )


def test_preprocess_refuses_a_request_without_a_model_naming_the_field(env):
    from sluice.errors import SluiceError

    with pytest.raises(SluiceError, match="'model'"):
        batch_preprocess.lambda_handler(
            {"request": {"input_uri": "s3://batch-work/x.csv"}, "execution": "e"}, Context()
        )


def test_notify_publishes_a_caught_error_before_preprocess(env):
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=env["topic"], Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    message = batch_notify.lambda_handler(event("notify_caught"), Context())
    assert message["model"] == "credit" and message["failed_shards"] == []
    assert message["reasons"] == ["NotFound: data file s3://batch-work/in/missing.csv does not exist"]
    received = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert received == message
