"""The endpoint handler under moto: a registered model scored through API Gateway proxy events."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
TABLE, BUCKET, CAPTURE = "endpoint-registry", "endpoint-artifacts", "endpoint-capture"


@dataclass
class Context:
    function_name: str = "score"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:score:live"
    aws_request_id: str = "lambda-request"


def event(name: str) -> dict:
    return json.loads((EVENTS / f"score_{name}.json").read_text())


@pytest.fixture(scope="module")
def trained():
    spec = datasets.credit_spec(max_iter=300)
    return train(datasets.credit(2000, seed=5, missing_rate=0.0), spec)


@pytest.fixture
def endpoint(trained, monkeypatch):
    """A registered, approved v1 in a moto registry, and the handler's environment bound to it."""
    with mock_aws():
        registry = create_storage(TABLE, BUCKET)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=CAPTURE, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        record = registry.register("credit", bundle_from_training(trained), lineage=Lineage())
        registry.approve("credit", record.version, actor="tester")

        def bind(version: int = 1, flavour: str = "sklearn") -> None:
            for key, value in {
                "SLUICE_REGISTRY_TABLE": TABLE,
                "SLUICE_REGISTRY_BUCKET": BUCKET,
                "SLUICE_CAPTURE_BUCKET": CAPTURE,
                "SLUICE_MODEL_NAME": "credit",
                "SLUICE_MODEL_VERSION": str(version),
                "SLUICE_MODEL_FLAVOUR": flavour,
            }.items():
                monkeypatch.setenv(key, value)
            score._state.clear()
            scoring.clear_cache()

        bind()
        yield registry, bind
        score._state.clear()
        scoring.clear_cache()


def captured(s3_bucket: str = CAPTURE) -> list[dict]:
    s3 = boto3.client("s3", region_name=REGION)
    records = []
    for item in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []):
        records += read_object(s3_bucket, item["Key"])  # Parquet (JSON lines without pyarrow)
        assert item["Key"].startswith("capture/model=credit/version=1/dt=")
    return records


def emf_documents(text: str) -> list[dict]:
    return [d for d in map(_json_or_none, text.splitlines()) if isinstance(d, dict) and "_aws" in d]


def per_version(docs: list[dict]) -> dict:
    return next(d for d in docs if "Version" in d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0])


def total(value) -> float:
    # EMF values are a number or a list of numbers.
    return sum(value) if isinstance(value, list) else value


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


@pytest.mark.parametrize("flavour", ["sklearn", "onnx"])
def test_single_row_is_scored_with_model_version_and_request_id(endpoint, trained, flavour, capsys):
    # Given v1 deployed with either flavour
    _, bind = endpoint
    bind(flavour=flavour)
    # When one row is posted
    response = score.lambda_handler(event("single"), Context())
    # Then the response names what served it and carries a label and class probabilities
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert (body["model"], body["version"], body["request_id"]) == ("credit", 1, "req-single")
    assert body["predictions"][0] in (0, 1)
    assert len(body["probabilities"][0]) == 2 and abs(sum(body["probabilities"][0]) - 1) < 1e-5
    # And per-version EMF metrics were emitted in the Sluice/Endpoint namespace
    docs = emf_documents(capsys.readouterr().out)
    metric_doc = per_version(docs)
    assert metric_doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice/Endpoint"
    assert metric_doc["Model"] == "credit" and metric_doc["Version"] == "1"
    assert total(metric_doc["Invocations"]) == 1 and total(metric_doc["Rows"]) == 1
    assert "Latency" in metric_doc and "PositiveProbability" in metric_doc


def test_batch_is_scored_and_every_row_captured(endpoint, trained):
    # When a batch of 10 rows is scored
    response = score.lambda_handler(event("batch"), Context())
    # Then 10 predictions come back and 10 capture records carry the request id, in row order
    assert response["statusCode"] == 200
    assert len(json.loads(response["body"])["predictions"]) == 10
    records = captured()
    assert [r["row"] for r in records] == list(range(10))
    assert {r["request_id"] for r in records} == {"req-batch"}
    assert all(r["version"] == 1 and r["source"] == "endpoint" for r in records)
    sent = json.loads(event("batch")["body"])["instances"]
    assert records[3]["features"] == sent[3]


def test_base64_body_is_decoded(endpoint):
    response = score.lambda_handler(event("base64"), Context())
    assert response["statusCode"] == 200
    assert len(json.loads(response["body"])["predictions"]) == 2


@pytest.mark.parametrize(
    ("name", "expected_fields"),
    [("bad_features", {"instances[1].income", "instances[1].age"}), ("malformed", {"body"})],
)
def test_bad_input_is_a_400_naming_the_field(endpoint, name, expected_fields):
    response = score.lambda_handler(event(name), Context())
    assert response["statusCode"] == 400
    body = json.loads(response["body"])
    assert {e["field"] for e in body["errors"]} == expected_fields
    assert body["request_id"] == f"req-{name.replace('_', '-')}"
    assert "Traceback" not in response["body"]
    assert captured() == []


def test_unknown_version_is_a_503_not_a_stack_trace(endpoint, capsys):
    _, bind = endpoint
    bind(version=7)
    response = score.lambda_handler(event("single"), Context())
    assert response["statusCode"] == 503
    assert "credit" in json.loads(response["body"])["error"] and "7" in json.loads(response["body"])["error"]
    metric_doc = per_version(emf_documents(capsys.readouterr().out))
    assert total(metric_doc["Errors"]) == 1


def test_onnx_flavour_of_a_version_without_onnx_is_a_503(endpoint, trained):
    registry, bind = endpoint
    v2 = registry.register("credit", bundle_from_training(trained, onnx=False), lineage=Lineage())
    bind(version=v2.version, flavour="onnx")
    response = score.lambda_handler(event("single"), Context())
    assert response["statusCode"] == 503
    assert "onnx" in json.loads(response["body"])["error"]


def test_warm_invocations_reuse_the_loaded_model(endpoint):
    score.lambda_handler(event("single"), Context())
    first = scoring.get_scorer("credit", 1, "sklearn")
    score.lambda_handler(event("single"), Context())
    assert scoring.get_scorer("credit", 1, "sklearn") is first


def test_a_cold_load_pauses_the_collector_and_freezes_what_it_loaded(endpoint):
    import gc

    # Given a collector that runs, and records when it does
    gc.unfreeze()
    runs: list[int] = []

    def record(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(record)
    try:
        scoring.clear_cache()
        scoring.get_scorer("credit", 1, "sklearn")  # the cold load
    finally:
        gc.callbacks.remove(record)
    # Then no collection ran during the load, the collector is back on, and the model and its
    # modules sit in the permanent generation that later collections skip
    assert runs == [] and gc.isenabled() and gc.get_freeze_count() > 0
    # And a collector someone had switched off stays off
    gc.unfreeze()
    gc.disable()
    try:
        scoring.clear_cache()
        scoring.get_scorer("credit", 1, "sklearn")
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_model_level_metrics_for_the_alarms(endpoint, capsys):
    # The alarms follow the model whatever version serves: a second EMF line has dimension Model only
    score.lambda_handler(event("single"), Context())
    docs = emf_documents(capsys.readouterr().out)
    # (Powertools adds its "service" dimension, POWERTOOLS_SERVICE_NAME, to both.)
    dimension_sets = [set(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) - {"service"} for d in docs]
    assert {"Model"} in dimension_sets and {"Model", "Version"} in dimension_sets
    model_doc = docs[dimension_sets.index({"Model"})]
    assert {"Latency", "Invocations", "PositiveProbability"} <= set(model_doc)


def test_unbound_version_serves_the_champion_alias(endpoint, monkeypatch):
    # Given the Lambda version cdk deploy creates (no SLUICE_MODEL_VERSION) and champion -> v1
    registry, bind = endpoint
    registry.set_alias("credit", "champion", 1, actor="tester")
    bind()
    monkeypatch.setenv("SLUICE_MODEL_VERSION", "")
    score._state.clear()
    # When scored, then v1 answers
    response = score.lambda_handler(event("single"), Context())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["version"] == 1


@pytest.mark.parametrize("bad_event", [[], "text", {"requestContext": "x", "body": None}])
def test_events_that_are_not_proxy_events_are_400s(endpoint, bad_event):
    response = score.lambda_handler(bad_event, Context())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["errors"][0]["field"] in ("event", "body")


# -- required and nullable features (issue 17) -------------------------------------------------


@pytest.fixture(scope="module")
def trained_with_gaps():
    """The credit model trained on data with missing numeric values: its numerics are nullable."""
    spec = datasets.credit_spec(max_iter=300)
    return train(datasets.credit(2000, seed=6, missing_rate=0.02), spec)


def _post(instances: list[dict]) -> dict:
    request = event("single")
    request["body"] = json.dumps({"instances": instances})
    return score.lambda_handler(request, Context())


def _rows(trained, n: int = 5) -> list[dict]:
    rows = trained.holdout[list(trained.spec.features)].head(n).fillna(1.0)
    return json.loads(rows.to_json(orient="records"))


def test_a_missing_required_feature_is_a_400_naming_it_not_imputed(endpoint, trained_with_gaps):
    # Given v2, whose numerics were nullable in its training data (so the model imputes them)
    registry, bind = endpoint
    v2 = registry.register("credit", bundle_from_training(trained_with_gaps, onnx=False), lineage=Lineage())
    registry.approve("credit", v2.version, actor="tester")
    bind(version=v2.version)
    rows = _rows(trained_with_gaps)
    # When instance 3 leaves out "age", a required feature
    del rows[3]["age"]
    response = _post(rows)
    # Then the request is refused, naming the instance and the feature, and nothing is captured
    assert response["statusCode"] == 400
    body = json.loads(response["body"])
    assert body["errors"] == [
        {
            "field": "instances[3].age",
            "feature": "age",
            "code": "missing",
            "message": "instances[3].age: required",
        }
    ]
    assert captured() == []


def test_null_is_scored_only_where_the_schema_allows_it(endpoint, trained, trained_with_gaps):
    registry, bind = endpoint
    v2 = registry.register("credit", bundle_from_training(trained_with_gaps, onnx=False), lineage=Lineage())
    registry.approve("credit", v2.version, actor="tester")
    # Given v2 (numerics nullable, categoricals not): a null age is imputed and scored
    bind(version=v2.version)
    rows = _rows(trained_with_gaps)
    rows[3]["age"] = None
    assert _post(rows)["statusCode"] == 200
    # But a null region is refused
    rows[3]["region"] = None
    body = json.loads(_post(rows)["body"])
    assert [e["message"] for e in body["errors"]] == ["instances[3].region: may not be null"]
    # And v1, trained without missing values, refuses a null age
    bind(version=1)
    rows = _rows(trained)
    rows[3]["age"] = None
    response = _post(rows)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["errors"][0]["message"] == "instances[3].age: may not be null"
