"""Data capture stores only the model's schema features, never what else a caller sent."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sluice.handlers import score
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving import scoring
from sluice.serving.capture_reader import read_object
from sluice_demo import datasets

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "eu-west-1"
TABLE, BUCKET, CAPTURE = "fields-registry", "fields-artifacts", "fields-capture"
SSN = "078-05-1120"


class Context:
    function_name = "score"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:score:live"
    aws_request_id = "lambda-request"


@pytest.fixture(scope="module")
def trained():
    return train(datasets.credit(600, seed=11, missing_rate=0.0), datasets.credit_spec(max_iter=200))


@pytest.fixture
def endpoint(trained, monkeypatch):
    """v1 registered and approved in a moto registry, the handler bound to it with direct-S3 capture."""
    with mock_aws():
        registry = create_storage(TABLE, BUCKET)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=CAPTURE, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        record = registry.register("credit", bundle_from_training(trained), lineage=Lineage())
        registry.approve("credit", record.version, actor="tester")
        for key, value in {
            "SLUICE_REGISTRY_TABLE": TABLE,
            "SLUICE_REGISTRY_BUCKET": BUCKET,
            "SLUICE_CAPTURE_BUCKET": CAPTURE,
            "SLUICE_MODEL_NAME": "credit",
            "SLUICE_MODEL_VERSION": "1",
            "SLUICE_MODEL_FLAVOUR": "sklearn",
        }.items():
            monkeypatch.setenv(key, value)
        score._state.clear()
        scoring.clear_cache()
        yield trained
        score._state.clear()
        scoring.clear_cache()


def captured_keys() -> list[str]:
    s3 = boto3.client("s3", region_name=REGION)
    return [i["Key"] for i in s3.list_objects_v2(Bucket=CAPTURE).get("Contents", [])]


def test_an_extra_field_sent_for_scoring_never_reaches_capture(endpoint):
    # Given a valid request whose row also carries a social security number and a note
    event = json.loads((EVENTS / "score_single.json").read_text())
    body = json.loads(event["body"])
    features = dict(body["instances"][0])
    body["instances"][0] = {**features, "ssn": SSN, "note": "VIP"}
    event["body"] = json.dumps(body)
    # When it is scored
    response = score.lambda_handler(event, Context())
    # Then it is scored, and the capture holds the schema features only, with the drop counted
    assert response["statusCode"] == 200, response["body"]
    keys = captured_keys()
    # (every column of every object decoded: Parquet pages are compressed, raw bytes prove nothing)
    records = [r for key in keys for r in read_object(CAPTURE, key)]
    assert keys and not any(SSN in json.dumps(r) or "ssn" in json.dumps(r) for r in records)
    assert [r["features"] for r in records] == [features]
    assert [r["dropped_fields"] for r in records] == [2]
    assert set(records[0]["features"]) == set(scoring.get_scorer("credit", "1", "sklearn").schema.names)
