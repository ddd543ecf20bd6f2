"""Monitoring end to end on the embedded local AWS (the synthesized dev stage).

capture (Firehose) -> drift job (the stage's image function, in a warm worker) -> CloudWatch
metrics -> the dataset-drift alarm in ALARM -> its SNS topic and the EventBridge event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from sluice import datasets
from sluice.capture import CaptureWriter, capture_records
from sluice.registry import Lineage, ModelBundle, ModelRegistry
from sluice.training import TrainingSpec, train

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


def test_drifted_capture_raises_the_drift_alarm_with_sns_and_eventbridge(local_aws):
    aws = local_aws
    job = aws.physical_id("MonitoringDriftJobFunction", resource_type="AWS::Lambda::Function")
    lam = aws.client("lambda")
    env = lam.get_function_configuration(FunctionName=job)["Environment"]["Variables"]
    # Given a registered, deployed v1 of the stage's model
    spec = TrainingSpec(
        target=datasets.TARGET,
        numeric=datasets.NUMERIC,
        categorical=datasets.CATEGORICAL,
        hyperparameters={"max_iter": 200},
    )
    trained = train(datasets.credit(1500, seed=1, missing_rate=0.0), spec)
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    version = registry.register(
        MODEL, ModelBundle.from_training(trained, onnx=False), lineage=Lineage()
    ).version
    registry.record_event(MODEL, "deployed", actor="test", version=version)
    # And watchers on the alarm topic and on EventBridge alarm events
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
    frame = datasets.credit(1000, seed=2, shift={"income": 2.0}, missing_rate=0.0)
    rows = frame[FEATURES].to_dict("records")
    writer = CaptureWriter(stream_name=env.get("SLUICE_CAPTURE_STREAM") or "sluice-dev-capture")
    for i in range(0, len(rows), 100):
        part = rows[i : i + 100]
        writer.put(
            capture_records(
                request_id=f"r{i}", model=MODEL, version=version, rows=part, predictions=[0] * len(part)
            )
        )
    assert writer.failed == 0
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
