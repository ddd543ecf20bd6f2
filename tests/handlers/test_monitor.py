"""The drift monitor handler under moto, against a real registry with a registered, deployed model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sluice.handlers import monitor
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.monitoring.labels import ingest_labels
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving.capture import CaptureWriter, capture_records
from sluice.settings import Settings
from sluice_demo import datasets

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "eu-west-1"
TABLE, BUCKET, CAPTURE = "monitor-registry", "monitor-artifacts", "monitor-capture"
FEATURES = [*datasets.NUMERIC, *datasets.CATEGORICAL]


@dataclass
class Context:
    function_name: str = "monitor"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:monitor"
    aws_request_id: str = "lambda-request"


@pytest.fixture(scope="module")
def trained():
    spec = datasets.credit_spec(max_iter=300)
    return train(datasets.credit(2000, seed=5, missing_rate=0.0), spec)


@pytest.fixture
def registry(trained, monkeypatch):
    with mock_aws():
        registry = create_storage(TABLE, BUCKET)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=CAPTURE, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        for key, value in {
            "SLUICE_REGISTRY_TABLE": TABLE,
            "SLUICE_REGISTRY_BUCKET": BUCKET,
            "SLUICE_CAPTURE_BUCKET": CAPTURE,
        }.items():
            monkeypatch.setenv(key, value)
        record = registry.register("credit", bundle_from_training(trained), lineage=Lineage())
        registry.approve("credit", record.version, actor="tester")
        registry.record_event("credit", "deployed", actor="tester", version=record.version)
        yield registry


def event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def serve(trained, frame, *, flip: int = 0) -> list[str]:
    """Capture ``frame`` as v1 traffic of the last minutes, predicted by the trained model."""
    predictions = trained.predict(frame).astype(int)
    predictions[:flip] = 1 - predictions[:flip]
    writer = CaptureWriter(bucket_name=CAPTURE)
    rows = frame[FEATURES].to_dict("records")
    ids = []
    for n, i in enumerate(range(0, len(rows), 20)):
        ids.append(f"req-{n}")
        writer.put(
            capture_records(
                request_id=ids[-1],
                model="credit",
                version=1,
                rows=rows[i : i + 20],
                predictions=predictions[i : i + 20],
                ts=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
    return ids


def test_scheduled_run_reports_drift_and_live_quality_of_the_deployed_version(registry, trained):
    # Given shifted traffic on the deployed v1, all of it labelled later
    frame = datasets.credit(400, seed=9, shift={"income": 2.0}, missing_rate=0.0)
    ids = serve(trained, frame)
    truth = frame[datasets.TARGET].tolist()
    labels = [{"request_id": ids[i // 20], "row": i % 20, "label": truth[i]} for i in range(len(frame))]
    ingest_labels(Settings.from_env(), model="credit", labels=labels)
    # When the schedule fires
    result = monitor.lambda_handler(event("monitor_schedule"), Context())
    # Then v1's income drift is reported, with its reports stored
    (drift,) = result["drift"]
    assert drift["version"] == 1 and drift["rows"] == 400
    assert "income" in drift["drifted_features"] and drift["dataset_drift"] is True
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.head_object(Bucket=CAPTURE, Key=drift["html_key"])["ContentLength"] > 0
    # And live quality is compared with the registered metrics
    (quality,) = result["quality"]
    record = registry.get("credit", version=1)
    assert quality["labelled_rows"] == 400
    assert quality["registered"]["f1"] == pytest.approx(record.metrics["f1"])
    assert quality["deltas"]["f1"] == pytest.approx(quality["metrics"]["f1"] - record.metrics["f1"])
    names = {
        m["MetricName"] for m in boto3.client("cloudwatch", region_name=REGION).list_metrics()["Metrics"]
    }
    assert {"DatasetDriftShare", "PSI", "F1", "F1Delta", "LabelledRows"} <= names


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "'model'"),
        ({"model": "credit", "window_minutes": 0}, "'window_minutes'"),
        ({"model": "credit", "versions": ["1"]}, "'versions'"),
        ({"model": "nobody"}, "nobody"),
    ],
)
def test_bad_input_and_unknown_models_are_returned_not_raised(registry, payload, message):
    result = monitor.lambda_handler(payload, Context())
    assert message in result["error"] and 400 <= result["status"] < 500


def test_a_quality_only_run_skips_the_drift_check(registry, trained):
    result = monitor.lambda_handler({"model": "credit", "drift": False}, Context())
    assert result["drift"] == [] and [q["version"] for q in result["quality"]] == [1]
    assert result["quality"][0]["labelled_rows"] == 0
