"""Monitoring end to end on the embedded local AWS (the synthesized dev stage).

capture (Firehose) -> drift job (the stage's image function, in a warm worker) -> CloudWatch
metrics -> the dataset-drift alarm in ALARM -> its SNS topic and the EventBridge event; labels
-> the concept check -> the F1 interval alarm; a large window through the drift state machine's
Distributed Map, publishing what the single-process job does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from localaws.auth import sign
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice.serving.capture import CaptureWriter, capture_records
from sluice_demo import datasets
from tests.local.conftest import wait_execution

pytestmark = pytest.mark.local

MODEL = "credit-risk"
FEATURES = [*datasets.NUMERIC, *datasets.CATEGORICAL]


def _until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def _queue_on(aws, topic_arn: str) -> str:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"watch-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def _messages(aws, url: str) -> list[dict]:
    found = aws.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(json.loads(m["Body"])["Message"]) for m in found]


@pytest.fixture(scope="module")
def deployed(local_aws):
    """A registered, deployed v1 of the stage's model; the drift job's name and environment."""
    aws = local_aws
    job = aws.physical_id("MonitoringDriftJobFunction", resource_type="AWS::Lambda::Function")
    env = aws.client("lambda").get_function_configuration(FunctionName=job)["Environment"]["Variables"]
    spec = datasets.credit_spec(max_iter=200)
    trained = train(datasets.credit(1500, seed=1, missing_rate=0.0), spec)
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    version = registry.register(MODEL, bundle_from_training(trained, onnx=False), lineage=Lineage()).version
    registry.record_event(MODEL, "deployed", actor="test", version=version)
    return SimpleNamespace(job=job, env=env, version=version, trained=trained, registry=registry)


def _capture(deployed, frame, *, predictions=None, prefix: str = "r") -> list[str]:
    """Capture ``frame`` through the stage's Firehose stream, 100 rows per request."""
    rows = frame[FEATURES].to_dict("records")
    writer = CaptureWriter(stream_name=deployed.env.get("SLUICE_CAPTURE_STREAM") or "sluice-dev-capture")
    ids = []
    for i in range(0, len(rows), 100):
        part = rows[i : i + 100]
        ids.append(f"{prefix}{i}")
        preds = [0] * len(part) if predictions is None else [int(p) for p in predictions[i : i + 100]]
        writer.put(
            capture_records(
                request_id=ids[-1], model=MODEL, version=deployed.version, rows=part, predictions=preds
            )
        )
    assert writer.failed == 0
    return ids


def test_drifted_capture_raises_the_drift_alarm_with_sns_and_eventbridge(local_aws, deployed):
    aws = local_aws
    job = deployed.job
    lam = aws.client("lambda")
    # Given the deployed v1 (fixture), and watchers on the alarm topic and on EventBridge alarm events
    topic = aws.physical_id("MonitoringAlarms", resource_type="AWS::SNS::Topic")
    alarm_queue = _queue_on(aws, topic)
    sns = aws.client("sns")
    events_topic = sns.create_topic(Name=f"alarm-events-{uuid.uuid4().hex[:8]}")["TopicArn"]
    events_queue = _queue_on(aws, events_topic)
    alarm_name = f"sluice-dev-{MODEL}-drift-share"
    events = aws.client("events")
    rule = f"watch-{uuid.uuid4().hex[:8]}"
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {"detail-type": ["CloudWatch Alarm State Change"], "detail": {"alarmName": [alarm_name]}}
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "topic", "Arn": events_topic}])
    # When shifted traffic is captured through the stage's Firehose stream
    _capture(deployed, datasets.credit(1000, seed=2, shift={"income": 2.0}, missing_rate=0.0))
    # And the drift job runs (the schedule's input)
    response = lam.invoke(
        FunctionName=job, Payload=json.dumps({"model": MODEL, "window_minutes": 60, "concept": False})
    )
    result = json.loads(response["Payload"].read())
    (drift,) = result["drift"]
    assert drift["rows"] == 1000 and "income" in drift["drifted_features"]
    # Then the dataset-drift alarm goes to ALARM
    cloudwatch = aws.client("cloudwatch")
    _until(
        lambda: (
            cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["StateValue"] == "ALARM"
        )
    )
    # And SNS is notified, and EventBridge carries the state change
    notified = _until(lambda: [m for m in _messages(aws, alarm_queue) if m.get("AlarmName") == alarm_name])
    assert notified[0]["NewStateValue"] == "ALARM"
    changed = _until(lambda: _messages(aws, events_queue))
    assert changed[0]["detail"]["state"]["value"] == "ALARM"


def test_labels_posted_through_the_gateway_drive_the_concept_drift_alarm(local_aws, deployed):
    import urllib.request

    aws = local_aws
    # Given predictions captured for 400 rows, half of them wrong (the alarm is on the F1 delta's
    # confidence interval: with 400 labels, a drop of a few points would be noise)
    frame = datasets.credit(400, seed=4, missing_rate=0.0)
    truth = frame[datasets.TARGET].to_numpy()
    predictions = truth.copy()
    predictions[:200] = 1 - predictions[:200]
    ids = _capture(deployed, frame, predictions=predictions, prefix="q")
    # When their labels are posted to POST /labels on the stage's API
    labels = [
        {"request_id": ids[i // 100], "row": i % 100, "label": int(truth[i])} for i in range(len(frame))
    ]
    url, body = (
        aws.gateway_url("RegistryApi") + "/labels",
        json.dumps({"model": MODEL, "labels": labels}).encode(),
    )
    headers = sign("POST", url, body=body, headers={"Content-Type": "application/json"})
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        assert json.loads(response.read()) == {"model": MODEL, "accepted": 400}
    # And the concept-drift check runs (the quality schedule's input)
    result = aws.invoke(deployed.job, {"model": MODEL, "drift": False, "versions": [deployed.version]})
    assert result.function_error is None, result.payload
    (quality,) = result.json()["quality"]
    assert quality["labelled_rows"] == 400 and quality["metrics"]["accuracy"] == pytest.approx(0.5)
    # And its verdict is the alarm's rule: the whole interval below -min_effect
    assert quality["intervals"]["f1"]["delta_high"] < -0.01 and quality["worse"]["f1"] is True
    # Then the F1-drop alarm goes to ALARM
    cloudwatch = aws.client("cloudwatch")
    alarm_name = f"sluice-dev-{MODEL}-f1-drop"
    _until(
        lambda: (
            cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["StateValue"] == "ALARM"
        )
    )


def test_a_large_window_fans_out_and_publishes_what_the_single_process_job_does(local_aws, deployed):
    aws = local_aws
    # Given a second version whose window is 1,200 rows captured as 12 objects (one per request)
    version = deployed.registry.register(
        MODEL, bundle_from_training(deployed.trained, onnx=False), lineage=Lineage()
    ).version
    bucket = deployed.env["SLUICE_CAPTURE_BUCKET"]
    writer = CaptureWriter(bucket_name=bucket)
    frame = datasets.credit(1200, seed=7, shift={"income": 1.5}, missing_rate=0.0)
    rows = frame[FEATURES].to_dict("records")
    for i in range(0, len(rows), 100):
        writer.put(
            capture_records(
                request_id=f"f{i}",
                model=MODEL,
                version=version,
                rows=rows[i : i + 100],
                predictions=[0] * 100,
            )
        )
    listed = aws.client("s3").list_objects_v2(
        Bucket=bucket, Prefix=f"capture/model={MODEL}/version={version}/"
    )
    total = sum(o["Size"] for o in listed["Contents"])
    started = time.time()
    # When the scheduled job runs with a quarter of the window per child
    event = {"model": MODEL, "versions": [version], "concept": False}
    fanned = aws.invoke(deployed.job, {**event, "bytes_per_child": total // 4 + 1})
    assert fanned.function_error is None, fanned.payload
    handed = fanned.json()
    assert handed["drift"] == [] and handed["fanout"]["children"] >= 3
    # Then the drift state machine's Distributed Map sketches the groups and the merge publishes
    sfn = aws.client("stepfunctions")
    described = wait_execution(sfn, handed["fanout"]["execution_arn"])
    assert described["status"] == "SUCCEEDED", described
    (merged,) = json.loads(described["output"])["drift"]
    # And the run's work files are gone once the merge has published
    work = handed["fanout"]["plan_key"].removesuffix("plan.json")
    assert aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=work)["KeyCount"] == 0
    # And the single-process job (the whole window in one Lambda) finds the same
    single = aws.invoke(deployed.job, {**event, "bytes_per_child": 10**12})
    assert single.function_error is None, single.payload
    assert "fanout" not in single.json()
    (alone,) = single.json()["drift"]
    for key in ("rows", "dataset_drift_share", "dataset_drift", "drifted_features", "metrics_published"):
        assert merged[key] == alone[key], key
    assert merged["rows"] == 1200 and "income" in merged["drifted_features"]
    # And CloudWatch holds each of the version's metrics twice, with one value
    cloudwatch = aws.client("cloudwatch")
    version_dim = {"Name": "Version", "Value": str(version)}
    metrics = {  # moto lists a metric once per datapoint
        json.dumps(m, sort_keys=True): m
        for m in cloudwatch.list_metrics(Namespace="Sluice/Drift")["Metrics"]
        if version_dim in m["Dimensions"] and {"Name": "Model", "Value": MODEL} in m["Dimensions"]
    }.values()
    assert len(metrics) == alone["metrics_published"]
    for metric in metrics:
        (point,) = cloudwatch.get_metric_statistics(
            Namespace="Sluice/Drift",
            MetricName=metric["MetricName"],
            Dimensions=metric["Dimensions"],
            StartTime=started - 3600,
            EndTime=time.time() + 3600,
            Period=3 * 3600,
            Statistics=["Minimum", "Maximum", "SampleCount"],
        )["Datapoints"]
        assert point["SampleCount"] == 2, metric
        assert point["Maximum"] - point["Minimum"] <= 1e-9 * max(1.0, abs(point["Maximum"])), metric
