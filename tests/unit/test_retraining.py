"""Retraining steps under moto: same form, pending approval, no partial records, single flight."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from sluice.cli import build_parser
from sluice.errors import Conflict, SluiceError
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.pipelines import retraining
from sluice.pipelines.datasource import write_table
from sluice.registry.lineage import Lineage
from sluice.settings import Settings
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit
from tests.unit.test_registry import BUCKET, REGION, TABLE, create_registry_resources

WORK = "sluice-test-work"
DATA = f"s3://{WORK}/datasets/credit-risk/latest.parquet"


@pytest.fixture
def env():
    with mock_aws():
        registry = create_registry_resources()
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=WORK, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        settings = Settings(registry_table=TABLE, registry_bucket=BUCKET, work_bucket=WORK, region=REGION)
        spec = TrainingSpec(
            target=TARGET,
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            estimator="sklearn.linear_model.LogisticRegression",
            hyperparameters={"C": 0.25, "max_iter": 300},
        )
        result = train(credit(1_500, seed=1), spec)
        v1 = registry.register(
            "credit-risk", bundle_from_training(result, onnx=False), lineage=Lineage()
        )
        registry.approve("credit-risk", v1.version, actor="test")
        registry.set_alias("credit-risk", "champion", v1.version, actor="test")
        write_table(credit(2_000, seed=2, shift={"income": 0.8}), DATA)
        yield settings, registry


def test_retrain_registers_pending_child_with_parent_form(env):
    # Given an approved champion v1 and a fresh dataset
    settings, registry = env
    steps = []
    # When a retraining run completes
    state = retraining.run_all(
        settings,
        retraining.RetrainRequest("credit-risk", DATA, "run-1"),
        registry=registry,
        progress=lambda step, seconds: steps.append(step),
    )
    # Then v2 is pending, descends from v1 and used exactly v1's functional form
    assert steps == ["preprocess", "train", "evaluate", "register"]
    v2 = registry.get("credit-risk", version=state["version"])
    assert (v2.version, v2.status) == (2, "PendingManualApproval")
    assert v2.lineage["parent_version"] == 1
    assert v2.lineage["data_rows"] == 2_000 and len(v2.lineage["data_sha256"]) == 64
    champion = registry.load("credit-risk", version=1).estimator
    challenger = registry.load("credit-risk", version=2).estimator
    assert type(challenger) is type(champion)
    assert challenger.get_params() == champion.get_params()
    assert set(v2.metrics) >= {"f1", "accuracy"}
    comparison = json.loads(registry.fetch("credit-risk", 2, "reports/comparison.json"))
    assert comparison["champion"] and comparison["challenger"]
    assert comparison["holdout_rows"] == state["rows"]["holdout"]
    assert b"<img" in registry.fetch("credit-risk", 2, "reports/comparison.html")
    # and nothing was deployed: the champion alias still points at v1
    assert registry.get("credit-risk", alias="champion").version == 1


def test_retrain_is_idempotent_per_run(env):
    settings, registry = env
    request = retraining.RetrainRequest("credit-risk", DATA, "run-2")
    first = retraining.run_all(settings, request, registry=registry)
    again = retraining.register(settings, first, registry=registry)
    assert again["version"] == first["version"]
    assert [r.version for r in registry.list_versions("credit-risk")] == [1, 2]


def test_failing_train_step_leaves_registry_unchanged(env, monkeypatch):
    settings, registry = env

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("sluice.models.training.fit", broken)
    before = registry.history("credit-risk")
    with pytest.raises(RuntimeError):
        retraining.run_all(
            settings, retraining.RetrainRequest("credit-risk", DATA, "run-3"), registry=registry
        )
    assert [r.version for r in registry.list_versions("credit-risk")] == [1]
    assert registry.history("credit-risk") == before


def test_failure_notification_says_registry_unchanged(env):
    settings, _ = env
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="retrain")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    settings = Settings(**{**settings.__dict__, "notify_topic_arn": topic})
    retraining.notify_failure(
        settings, {"model": "credit-risk", "run_id": "r", "error": {"Error": "RuntimeError", "Cause": "boom"}}
    )
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert body["error"] == "RuntimeError" and body["registry"].startswith("unchanged")


def test_model_without_approved_version_cannot_be_retrained(env):
    settings, registry = env
    registry.register(
        "other", bundle_from_training(train(credit(300), _spec()), onnx=False), lineage=Lineage()
    )
    with pytest.raises(Conflict, match="no champion"):
        retraining.preprocess(settings, retraining.RetrainRequest("other", DATA, "run-4"), registry=registry)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"model": "m", "data_uri": "s3://b/k.csv"},
        {"model": "m", "data_uri": "s3://b/k.csv", "run_id": "a b"},
        {"model": "m", "data_uri": "s3://b/k.csv", "run_id": "r", "train": "os:system"},
    ],
)
def test_bad_retrain_input_names_the_field(event):
    with pytest.raises(SluiceError, match=r"run_id|model|'train'"):
        retraining.RetrainRequest.from_event(event)


def test_duplicate_alarms_start_exactly_one_execution(env):
    # Given a retraining state machine
    settings, _ = env
    sfn = boto3.client("stepfunctions", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    machine = sfn.create_state_machine(
        name="retrain",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=role,
    )["stateMachineArn"]
    locks = boto3.client("dynamodb", region_name=REGION)
    locks.create_table(
        TableName="retrain-locks",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    settings = Settings(
        **{**settings.__dict__, "retrain_state_machine_arn": machine, "retrain_lock_table": "retrain-locks"}
    )
    now = datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC)
    # When two alarm events arrive 1 s apart
    first = retraining.start_run(settings, model="credit-risk", data_uri=DATA, trigger="drift", now=now)
    second = retraining.start_run(
        settings, model="credit-risk", data_uri=DATA, trigger="drift", now=now + timedelta(seconds=1)
    )
    # Then exactly one execution starts
    assert first["started"] is True and second["started"] is False
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    # and after the debounce window another may start
    later = retraining.start_run(
        settings, model="credit-risk", data_uri=DATA, trigger="drift", now=now + timedelta(seconds=901)
    )
    assert later["started"] is True
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2
    # and the lock lives in its own table, never among the registry's records
    assert locks.scan(TableName="retrain-locks")["Count"] == 1
    registry_items = locks.scan(TableName=settings.registry_table)["Items"]
    assert not [item for item in registry_items if "RETRAIN" in json.dumps(item)]


def _spec() -> TrainingSpec:
    return TrainingSpec(target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL)


def test_cli_retrain_here_registers_pending_and_prints_deploy_command(env, monkeypatch, capsys):
    settings, _ = env
    for field, value in settings.__dict__.items():
        if value:
            monkeypatch.setenv(f"SLUICE_{field.upper()}", value)
    from sluice.cli import main

    assert main(["retrain", "--model", "credit-risk", "--data", DATA, "--here", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["status"] == "PendingManualApproval" and state["parent_version"] == 1
    # The printed (and notified) commands are ones the CLI accepts as they are
    commands = [shlex.split(c) for c in state["deploy_command"].split("&&")]
    assert [c[:3] for c in commands] == [["sluice", "models", "approve"], ["sluice", "endpoint", "deploy"]]
    for command in commands:
        assert str(build_parser().parse_args(command[1:]).ref) == "credit-risk:2"  # NAME:VERSION


def test_cli_retrain_unknown_model_exits_2(env, monkeypatch, capsys):
    settings, _ = env
    for field, value in settings.__dict__.items():
        if value:
            monkeypatch.setenv(f"SLUICE_{field.upper()}", value)
    from sluice.cli import main

    assert main(["retrain", "--model", "nope", "--data", DATA, "--here"]) == 2
    assert "nope" in capsys.readouterr().err


def test_first_version_trains_through_the_same_pipeline_from_a_spec(env):
    settings, registry = env
    spec = _spec().to_dict() | {"hyperparameters": {"C": 2.0, "max_iter": 250}}
    request = retraining.RetrainRequest("fresh-model", DATA, "run-first", spec=spec)
    state = retraining.run_all(settings, request, registry=registry)
    record = registry.get("fresh-model", version=state["version"])
    assert (record.version, record.status, record.parent_version) == (1, "PendingManualApproval", None)
    assert registry.load("fresh-model", version=1).estimator.get_params()["C"] == 2.0
    assert b"first version" in registry.fetch("fresh-model", 1, "reports/comparison.html")


def test_spec_must_be_an_object():
    with pytest.raises(SluiceError, match="spec"):
        retraining.RetrainRequest.from_event(
            {"model": "m", "data_uri": "s3://b/k.csv", "run_id": "r", "spec": "x"}
        )
