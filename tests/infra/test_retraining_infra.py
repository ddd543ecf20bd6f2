"""The retraining pipeline as synthesized: steps, retries, failure path, alarm trigger."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk.assertions import Match, Template

from infra.constructs.registry import Registry
from infra.constructs.retraining import TRANSIENT_ERRORS, RetrainingPipeline
from infra.constructs.storage import secure_bucket
from tests.infra.conftest import resources_of


def _definition(template: dict) -> dict:
    machines = resources_of(template, "AWS::StepFunctions::StateMachine")
    # The service stack has other pipelines too (batch scoring): take the retraining one.
    (machine,) = [m for k, m in machines.items() if k.startswith("Retraining")] or machines.values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))


@pytest.fixture(scope="module")
def standalone() -> Template:
    app = cdk.App()
    stack = cdk.Stack(app, "T", env=cdk.Environment(account="111111111111", region="eu-west-1"))
    registry = Registry(
        stack, "Registry", bucket_name="reg", table_name="reg", retain=False, access_logs=None
    )
    work = secure_bucket(stack, "Work", bucket_name="work", retain=False, access_logs=None)
    alarm = cloudwatch.Alarm(
        stack,
        "Drift",
        metric=cloudwatch.Metric(namespace="Sluice/Drift", metric_name="DatasetDriftShare"),
        threshold=0.3,
        evaluation_periods=1,
    )
    RetrainingPipeline(
        stack,
        "Retraining",
        registry=registry,
        work_bucket=work,
        lock_table=dynamodb.Table(
            stack, "Locks", partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING)
        ),
        model_name="credit-risk",
        data_uri="s3://work/datasets/credit-risk/latest.parquet",
        alarms=[alarm],
    )
    return Template.from_stack(stack)


def test_steps_run_in_order_with_retries_and_a_failure_path(templates):
    definition = _definition(templates["Dev-Service"])
    states = definition["States"]
    order, name = [], definition["StartAt"]
    while name in states and states[name].get("Next"):
        order.append(name)
        name = states[name]["Next"]
    assert order == ["Preprocess", "Train", "Evaluate", "Register"]
    assert states[name]["Type"] == "Succeed"
    for step in ("Preprocess", "Train", "Evaluate", "Register"):
        (retry,) = states[step]["Retry"]
        assert retry["ErrorEquals"] == TRANSIENT_ERRORS and retry["BackoffRate"] == 2
        (catch,) = states[step]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == f"{step}Failed"
        named = states[f"{step}Failed"]  # names the failed step for the notification
        assert (named["Type"], named["Result"], named["ResultPath"]) == (
            "Pass",
            step.lower(),
            "$.failed_step",
        )
        assert named["Next"] == "NotifyFailure"
    assert states["NotifyFailure"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    # no step deploys: the only Lambda tasks are the retraining steps function
    assert {s["Parameters"]["step"] for s in states.values() if s["Type"] == "Task"} == {
        "preprocess",
        "train",
        "evaluate",
        "register",
        "notify_failure",
    }


def test_steps_run_in_the_training_image_on_arm64(template):
    template("Dev-Service").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "Architectures": ["arm64"],
            "ImageConfig": {"Command": ["sluice.handlers.retrain.lambda_handler"]},
            "Environment": {"Variables": Match.object_like({"SLUICE_WORK_BUCKET": Match.any_value()})},
        },
    )


def test_alarm_rule_targets_the_single_flight_trigger(standalone):
    standalone.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "detail": {"state": {"value": ["ALARM"]}},
                "resources": [Match.any_value()],
            },
            "Targets": [Match.object_like({"InputTransformer": Match.any_value()})],
        },
    )
    standalone.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "sluice.handlers.retrain_trigger.lambda_handler"}
    )


def test_trigger_may_only_put_the_lock_and_start_executions(standalone):
    policies = resources_of(standalone.to_json(), "AWS::IAM::Policy")
    (trigger,) = [p for name, p in policies.items() if "TriggerRole" in name]
    actions = {
        a
        for statement in trigger["Properties"]["PolicyDocument"]["Statement"]
        for a in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert actions == {
        "dynamodb:PutItem",
        "states:StartExecution",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
