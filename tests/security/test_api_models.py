"""Threat: a request body that skips its request model, or labels for a model the stage doesn't serve.

API Gateway validates a body only against the model of its own content type, else ``$default``
("If no matching content type is found, request validation is not performed"). With models
under ``application/json`` only, an approval body the model refuses passed as ``text/plain``.
``POST /labels`` had no model at all and took labels for any model name, and labels feed the
concept-drift alarm that starts retraining.

Each attack is sent, signed with the key the local stack issues, through the local API Gateway
serving the synthesized dev stage (it applies ``$default`` as API Gateway does).
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.credentials import Credentials
from moto import mock_aws

from localaws.auth import sign
from sluice.handlers import labels as labels_handler
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice_demo import datasets
from tests.local.conftest import local_aws  # noqa: F401  (the fixture)

pytestmark = pytest.mark.local

MODEL = "credit-risk"
FUNCTION = f"sluice-dev-{MODEL}-endpoint"
PLAIN = {"Content-Type": "text/plain"}


def signed(url: str, body: bytes, headers: dict[str, str], credentials=None) -> tuple[int, dict]:
    """POST ``body`` signed with ``credentials`` (default the developer key): status and JSON answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        headers = sign("POST", url, body=body, headers=dict(headers), credentials=credentials)
        conn.request("POST", parts.path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stage(local_aws):  # noqa: F811
    """The dev stage with version 1 of its model registered, pending approval."""
    lambdas = local_aws.client("lambda")
    env = lambdas.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    spec = TrainingSpec(numeric=datasets.NUMERIC, categorical=datasets.CATEGORICAL, target=datasets.TARGET)
    registry.register(
        MODEL, bundle_from_training(train(datasets.credit(400, seed=1), spec)), lineage=Lineage()
    )
    labels_env = next(
        f["Environment"]["Variables"]
        for page in lambdas.get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f.get("Handler", "").startswith("sluice.handlers.labels.")
    )
    role = local_aws.client("iam").get_role(RoleName="sluice-dev-approver")["Role"]["Arn"]
    issued = local_aws.client("sts").assume_role(RoleArn=role, RoleSessionName="carol")["Credentials"]
    return {
        "registry": registry,
        "approver": Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"]),
        "api": local_aws.gateway_url("RegistryApi"),
        "capture": labels_env["SLUICE_CAPTURE_BUCKET"],
        "s3": local_aws.client("s3"),
    }


def stored_labels(stage: dict, model: str) -> list[str]:
    listed = stage["s3"].list_objects_v2(Bucket=stage["capture"], Prefix=f"labels/model={model}/")
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"]
)
def test_an_approval_body_that_fails_the_model_is_refused_whatever_its_content_type(stage, content_type):
    # Given version 1 pending approval
    approve = stage["api"] + f"/models/{MODEL}/versions/1/approve"
    # When an approval whose body the model refuses (an extra field) is sent under another content type
    body = json.dumps({"comment": "ok", "actor": "someone-else"}).encode()
    status, answer = signed(approve, body, {"Content-Type": content_type}, stage["approver"])
    # Then the gateway refuses it before the function runs, and nothing is approved
    assert status == 400, answer
    assert answer["message"].startswith("Invalid request body") and "actor" in answer["message"]
    assert stage["registry"].get(MODEL, version=1).status == "PendingManualApproval"


def test_a_plain_text_approval_body_that_is_not_json_is_refused(stage):
    approve = stage["api"] + f"/models/{MODEL}/versions/1/reject"
    status, answer = signed(approve, b"reject it", PLAIN, stage["approver"])
    assert status == 400 and answer["message"].startswith("Invalid request body: body is not JSON")
    assert stage["registry"].get(MODEL, version=1).status == "PendingManualApproval"


def test_labels_for_a_model_the_stage_does_not_serve_are_refused_and_nothing_is_stored(stage):
    # When well-formed labels name a model the dev stage does not serve
    url = stage["api"] + "/labels"
    body = json.dumps({"model": "someone-elses-model", "labels": [{"request_id": "r1", "label": 1}]}).encode()
    status, answer = signed(url, body, {"Content-Type": "application/json"})
    # Then the labels function refuses them naming the field, and stores nothing
    assert status == 400 and "'model'" in answer["error"] and "someone-elses-model" in answer["error"]
    assert stored_labels(stage, "someone-elses-model") == []


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/json", {"model": MODEL, "labels": [{"request_id": "r1", "label": 1, "note": "x"}]}),
        ("application/json", {"model": MODEL, "labels": []}),
        ("application/json", {"model": MODEL, "labels": [{"request_id": "r1"}]}),
        ("application/json", {"model": "../x", "labels": [{"request_id": "r1", "label": 1}]}),
        ("text/plain", {"model": MODEL, "labels": [{"request_id": "r1", "label": 1}], "extra": 1}),
        (
            "text/plain",
            {"model": MODEL, "labels": [{"request_id": str(i), "label": 0} for i in range(10_001)]},
        ),
    ],
)
def test_a_malformed_labels_body_is_refused_at_the_gateway(stage, content_type, payload):
    status, answer = signed(
        stage["api"] + "/labels", json.dumps(payload).encode(), {"Content-Type": content_type}
    )
    assert status == 400 and answer["message"].startswith("Invalid request body"), answer
    assert stored_labels(stage, MODEL) == []


def test_a_label_file_for_an_unknown_model_is_refused_by_the_function(monkeypatch):
    # The S3 drop path of the same function applies the same list (set by the construct)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="capture", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        monkeypatch.setenv("SLUICE_CAPTURE_BUCKET", "capture")
        monkeypatch.setenv("SLUICE_LABEL_MODELS", MODEL)
        key = "labels/incoming/someone-elses-model/day.csv"
        s3.put_object(Bucket="capture", Key=key, Body=b"request_id,label\nr1,1\n")
        event = {"source": "aws.s3", "detail": {"bucket": {"name": "capture"}, "object": {"key": key}}}
        result = labels_handler.lambda_handler(event, _Context())
        refusal = result["files"][key]
        assert isinstance(refusal, str) and "'model'" in refusal, refusal
        assert "Contents" not in s3.list_objects_v2(Bucket="capture", Prefix="labels/model=")


class _Context:
    function_name = "labels"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:labels"
    aws_request_id = "lambda-request"
