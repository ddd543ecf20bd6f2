"""Retraining on the embedded local AWS: drift alarm → rule → single-flight trigger → pipeline.

The state machine, the training-image steps, the EventBridge rule and the trigger function are
the synthesized dev stage's, running on moto with the local fillers (``localaws``).
"""

from __future__ import annotations

import json
import time

import pytest

from sluice.models.training import TrainingSpec
from sluice.names import registry_table_name, stage_bucket_name
from sluice.pipelines.datasource import write_table
from sluice.registry.store import ModelRegistry
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit
from tests.local.conftest import wait_execution

MODEL = "credit-risk"


@pytest.fixture(scope="module")
def stage(local_aws):
    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage="dev", account=local_aws.account, region=local_aws.region)

    machine = local_aws.physical_id(
        "RetrainingStateMachine", resource_type="AWS::StepFunctions::StateMachine"
    )
    registry = ModelRegistry(table_name=registry_table_name("dev"), bucket_name=bucket("artifacts"))
    data = f"s3://{bucket('work')}/datasets/{MODEL}/latest.parquet"
    write_table(credit(1_500, seed=0), data)
    sfn = local_aws.client("stepfunctions")
    spec = TrainingSpec(target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL, hyperparameters={"C": 0.3})
    arn = sfn.start_execution(
        stateMachineArn=machine,
        name="v1",
        input=json.dumps({"model": MODEL, "data_uri": data, "run_id": "v1", "spec": spec.to_dict()}),
    )["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    registry.approve(MODEL, 1, actor="tester")
    registry.set_alias(MODEL, "champion", 1, actor="tester")
    return {"machine": machine, "registry": registry, "data": data, "sfn": sfn}


def _run(stage, run_id: str, data_uri: str) -> dict:
    """Start a retraining run by hand (as ``sluice retrain`` does) and wait for its end."""
    arn = stage["sfn"].start_execution(
        stateMachineArn=stage["machine"],
        name=run_id,
        input=json.dumps({"model": MODEL, "data_uri": data_uri, "run_id": run_id}),
    )["executionArn"]
    return wait_execution(stage["sfn"], arn)


def _subscribe(local_aws, topic_arn: str) -> str:
    sqs = local_aws.client("sqs")
    queue = sqs.create_queue(QueueName=f"inbox-{time.time_ns()}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    local_aws.client("sns").subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    return queue


def _notifications(local_aws, queue: str, **match) -> list[dict]:
    """The JSON notifications in ``queue`` whose fields equal ``match`` (waits up to 30 s for one)."""
    sqs = local_aws.client("sqs")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        found = [json.loads(m["Body"]) for m in received.get("Messages", [])]
        found = [b for b in found if all(b.get(k) == v for k, v in match.items())]
        if found:
            return found
    return []


def test_drift_alarm_retrains_to_a_pending_child_and_deploys_nothing(local_aws, stage):
    registry = stage["registry"]
    cloudwatch = local_aws.client("cloudwatch")
    alarm = f"sluice-dev-{MODEL}-drift-share"
    # Given v1 as champion and whatever the endpoint's live alias routes
    aliases_before = registry.aliases(MODEL)
    topic = local_aws.physical_id("RetrainingNotifications", resource_type="AWS::SNS::Topic")
    queue = _subscribe(local_aws, topic)
    # When the drift job's share metric breaches the alarm twice in a row
    for _ in range(2):
        cloudwatch.put_metric_data(
            Namespace="Sluice/Drift",
            MetricData=[
                {
                    "MetricName": "DatasetDriftShare",
                    "Dimensions": [{"Name": "Model", "Value": MODEL}],
                    "Value": 0.6,
                }
            ],
        )
        time.sleep(1.0)
    # Then the alarm fires, the rule starts exactly one retraining, and v2 is registered Pending
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(registry.list_versions(MODEL)) < 2:
        time.sleep(0.5)
    assert cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "ALARM"
    executions = stage["sfn"].list_executions(stateMachineArn=stage["machine"])["executions"]
    assert len([e for e in executions if e["name"] != "v1"]) == 1
    v2 = registry.get(MODEL, version=2)
    assert (v2.status, v2.parent_version) == ("PendingManualApproval", 1)
    assert v2.lineage["parent_version"] == 1 and v2.metrics["f1"] > 0
    assert v2.hyperparameters == registry.get(MODEL, version=1).hyperparameters
    assert "reports/comparison.html" in v2.artifacts
    # and nothing moved: aliases (champion) are where they were
    assert registry.aliases(MODEL) == aliases_before
    # and people are told, with the champion/challenger figures and the command that would deploy
    notes = _notifications(local_aws, queue, version=2)
    assert notes and notes[0]["parent_version"] == 1
    assert set(notes[0]["comparison"]) >= {"champion", "challenger", "primary_metric"}
    assert notes[0]["deploy_command"].endswith(f"sluice endpoint deploy {MODEL}:2 --weight 0.1")


def test_failed_run_notifies_and_registers_nothing(local_aws, stage):
    registry = stage["registry"]
    topic = local_aws.physical_id("RetrainingNotifications", resource_type="AWS::SNS::Topic")
    queue = _subscribe(local_aws, topic)
    before = [r.version for r in registry.list_versions(MODEL)]
    missing = stage["data"].replace("latest.parquet", "missing.parquet")
    done = _run(stage, "broken", missing)
    assert done["status"] == "FAILED"
    assert [r.version for r in registry.list_versions(MODEL)] == before
    failure = _notifications(local_aws, queue, run_id="broken")
    assert failure and failure[0]["registry"].startswith("unchanged")
    assert failure[0]["step"] == "preprocess"  # the missing data file fails the first step
    # and both the notification and the execution carry the cause: the missing data URI
    assert missing in failure[0]["cause"] and failure[0]["data_uri"] == missing
    assert missing in done["cause"] and done["error"] == "RetrainingFailed"


def test_a_train_step_that_always_fails_notifies_and_leaves_the_registry_unchanged(local_aws, stage):
    # Given a dataset the champion's form cannot be fitted on: every row has the same label, so
    # preprocess splits it but the classifier refuses it in the train step, on every attempt
    registry = stage["registry"]
    topic = local_aws.physical_id("RetrainingNotifications", resource_type="AWS::SNS::Topic")
    queue = _subscribe(local_aws, topic)
    one_class = credit(600, seed=3).assign(**{TARGET: 1})
    data = stage["data"].replace("latest.parquet", "one-class.parquet")
    write_table(one_class, data)
    versions_before = [r.version for r in registry.list_versions(MODEL)]
    history_before = registry.history(MODEL)
    # When a retraining run is started on it
    done = _run(stage, "one-class", data)
    # Then the run fails, the notification says the train step failed and nothing was registered
    assert done["status"] == "FAILED"
    bodies = _notifications(local_aws, queue, run_id="one-class")
    assert bodies, "no failure notification"
    assert bodies[0]["step"] == "train" and bodies[0]["registry"].startswith("unchanged")
    assert "class" in bodies[0]["cause"]
    # and the registry holds exactly what it held: same versions, same audit trail
    assert [r.version for r in registry.list_versions(MODEL)] == versions_before
    assert registry.history(MODEL) == history_before
