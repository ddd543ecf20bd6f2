"""The registry API handler under moto, with API Gateway REST proxy events from ``tests/events``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from moto import mock_aws

from sluice.handlers import registry_api
from tests.unit.test_registry import BUCKET, TABLE, create_registry_resources, lineage, tiny_bundle

EVENTS = Path(__file__).resolve().parents[1] / "events"
APPROVER = "arn:aws:sts::123456789012:assumed-role/ModelApprover/alice"


@dataclass
class Context:
    function_name: str = "registry-api"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:registry-api"
    aws_request_id: str = "lambda-request"


def event(name: str, **changes) -> dict:
    data = json.loads((EVENTS / f"{name}.json").read_text())
    data.update(changes)
    return data


def call(data: dict) -> tuple[int, dict]:
    response = registry_api.lambda_handler(data, Context())
    headers = response.get("headers") or {k: v[-1] for k, v in response.get("multiValueHeaders", {}).items()}
    assert headers["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def with_path(name: str, model: str, version: str | None = None) -> dict:
    data = event(name)
    params = {"name": model} if version is None else {"name": model, "version": version}
    data["pathParameters"] = params
    data["path"] = data["resource"].replace("{name}", model).replace("{version}", version or "")
    return data


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    with mock_aws():
        reg = create_registry_resources()
        reg.register("credit", tiny_bundle(), lineage=lineage())
        yield reg


def test_list_describe_version_and_history(registry):
    status, body = call(event("registry_list"))
    assert status == 200
    assert [(m["name"], m["latest_version"]) for m in body["models"]] == [("credit", 1)]

    status, body = call(event("registry_describe"))
    assert status == 200
    assert body["name"] == "credit" and body["aliases"] == {}
    assert [(v["version"], v["status"]) for v in body["versions"]] == [(1, "PendingManualApproval")]

    status, body = call(event("registry_version"))
    assert status == 200
    assert body["version"] == 1 and "model.joblib" in body["artifacts"]
    assert body["lineage"]["data_uri"] == "s3://data/credit.csv"

    status, body = call(event("registry_history"))
    assert status == 200
    assert [e["kind"] for e in body["events"]] == ["registered"]


def test_approve_records_the_callers_identity_and_comment(registry):
    status, body = call(event("registry_approve"))
    assert status == 200
    assert body["status"] == "Approved"
    assert (body["decided_by"], body["decision_reason"]) == (APPROVER, "holdout f1 above the champion")
    approved = registry.history("credit")[-1]
    assert (approved["kind"], approved["actor"], approved["version"]) == ("approved", APPROVER, 1)


def test_reject_then_approve_is_a_409(registry):
    status, body = call(event("registry_reject"))
    assert (status, body["status"]) == (200, "Rejected")
    status, body = call(event("registry_approve"))
    assert status == 409
    assert body == {"error": "model 'credit' version 1 is Rejected; it cannot become Approved"}


def test_base64_body_and_empty_body_are_accepted(registry):
    data = event("registry_approve")
    data["body"] = base64.b64encode(json.dumps({"comment": "ok"}).encode()).decode()
    data["isBase64Encoded"] = True
    status, body = call(data)
    assert (status, body["decision_reason"]) == (200, "ok")
    registry.register("credit", tiny_bundle("2"), lineage=lineage())
    data = with_path("registry_reject", "credit", "2")
    data["body"] = None
    status, body = call(data)
    assert (status, body["status"], body["decision_reason"]) == (200, "Rejected", "")


@pytest.mark.parametrize(
    ("name", "model", "version", "status", "message"),
    [
        ("registry_describe", "ghost", None, 404, "model 'ghost' not found"),
        ("registry_history", "ghost", None, 404, "model 'ghost' not found"),
        ("registry_version", "credit", "9", 404, "model 'credit' has no version 9"),
        ("registry_version", "credit", "abc", 400, "version must be a positive integer; got 'abc'"),
        ("registry_version", "credit", "0", 400, "version must be a positive integer; got '0'"),
        ("registry_approve", "ghost", "1", 404, "model 'ghost' not found"),
        ("registry_version", "bad%20name", "1", 400, "model name 'bad%20name' is invalid"),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_resource(registry, name, model, version, status, message):
    got_status, body = call(with_path(name, model, version))
    assert got_status == status
    assert message in body["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "request body is not valid JSON"),
        ('["comment"]', "request body must be an object"),
        ('{"comment": 5}', "comment must be a string"),
        (json.dumps({"comment": "x" * 1001}), "reason must be a string of at most 1000 characters"),
    ],
)
def test_bad_bodies_are_400(registry, body, message):
    status, answer = call(event("registry_approve", body=body))
    assert status == 400
    assert message in answer["error"]
    assert registry.get("credit", version=1).status == "PendingManualApproval"


def test_unknown_route_is_a_json_404(registry):
    status, body = call(event("registry_list", path="/nothing", resource="/nothing"))
    assert status == 404
    assert "no route GET /nothing" in body["error"]


def test_handler_imports_without_pandas_sklearn_scipy_or_joblib():
    # The registry API is a zip function: numpy and boto3 (plus Powertools) only
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('pandas', 'sklearn', 'scipy', 'joblib'): sys.modules[m] = None\n"
        "from sluice.handlers import registry_api\n"
        "print(callable(registry_api.lambda_handler))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
