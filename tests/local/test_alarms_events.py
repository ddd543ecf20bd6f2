"""Alarms and EventBridge on the embedded local AWS: metric breach -> alarm -> rule -> state machine."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from localaws.alarms import evaluator as alarms_module
from localaws.alarms.evaluator import AlarmEvaluator
from localaws.alarms.rules import decide
from localaws.events import router as events_module
from localaws.events import schedules
from localaws.events.inputs import execution_name, fill_template, json_path, target_input
from localaws.events.router import pattern_matches
from localaws.services import start_event_services
from sluice.errors import NotFound

pytestmark = pytest.mark.local

REGION = "eu-west-1"
OTHER_REGION = "us-west-2"  # the deterministic evaluator tests' alarms, away from the running one
ACCOUNT = DEFAULT_ACCOUNT_ID
ROLE = f"arn:aws:iam::{ACCOUNT}:role/local"


@pytest.fixture(scope="module")
def local():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    hooks = start_event_services(endpoint_url=url, region=REGION, account=ACCOUNT, interval_s=0.2)

    def client(service: str, region: str = REGION) -> Any:
        return boto3.client(
            service,
            endpoint_url=url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    yield SimpleNamespace(url=url, hooks=hooks, client=client)
    hooks.close()
    server.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def _state_machine(local, name: str, definition: dict) -> str:
    return local.client("stepfunctions").create_state_machine(
        name=name, definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]


def _queue_subscribed_to(local, topic_arn: str) -> str:
    sqs = local.client("sqs")
    url = sqs.create_queue(QueueName=_name("alarm-actions"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    local.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def _receive(local, queue_url: str) -> list[dict]:
    messages = (
        local.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in messages]


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def stage(assembly_dir, tmp_path):
    """The synthesized dev stage on LocalAws, which installs these components itself.

    Function-scoped and first in this module, so it never runs beside the bare server below
    (LocalAws sets MOTO_ACCOUNT_ID, which moto reads on every request).
    """
    from localaws import LocalAws

    with LocalAws.start(assembly_dir=assembly_dir, state_dir=tmp_path / "local") as aws:
        yield aws


def test_on_the_dev_stage_a_metric_breach_runs_a_lambda_task_state_machine(stage):
    aws = stage
    function = aws.physical_id("RegistryApiHandlerFunction", resource_type="AWS::Lambda::Function")
    request = {"httpMethod": "GET", "path": "/models", "resource": "/models"}
    sfn = aws.client("stepfunctions")
    # The stage's own state machines (retraining), created by CloudFormation, are in the
    # executing backend that the Step Functions API serves
    stage_machines = [
        r.physical_id for r in aws.resources if r.resource_type == "AWS::StepFunctions::StateMachine"
    ]
    assert stage_machines
    for arn in stage_machines:
        assert sfn.describe_state_machine(stateMachineArn=arn)["status"] == "ACTIVE"

    # Given a state machine whose Lambda task calls a function of the stage, a rule on an
    # alarm entering ALARM that starts it and also invokes the function, and the alarm
    role = f"arn:aws:iam::{aws.account}:role/local"
    machine = sfn.create_state_machine(
        name=_name("stage-run"),
        roleArn=role,
        definition=json.dumps(
            {
                "StartAt": "ListModels",
                "States": {
                    "ListModels": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": function, "Payload": request},
                        "ResultSelector": {"status.$": "$.Payload.statusCode"},
                        "Next": "Direct",
                    },
                    # the form CDK's LambdaInvoke(payload_response_only=True) writes
                    "Direct": {
                        "Type": "Task",
                        "Resource": f"arn:aws:lambda:{aws.region}:{aws.account}:function:{function}",
                        "Parameters": request,
                        "ResultSelector": {"status.$": "$.statusCode"},
                        "ResultPath": "$.direct",
                        "End": True,
                    },
                },
            }
        ),
    )["stateMachineArn"]
    alarm, namespace = _name("stage-drift"), _name("Sluice/StageTest")
    rule = _name("stage-rule")
    events = aws.client("events")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {"source": ["aws.cloudwatch"], "detail": {"alarmName": [alarm], "state": {"value": ["ALARM"]}}}
        ),
    )
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "run", "Arn": machine, "RoleArn": role},
            {
                "Id": "fn",
                "Arn": f"arn:aws:lambda:{aws.region}:{aws.account}:function:{function}",
                "Input": json.dumps(request),
            },
        ],
    )
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        Namespace=namespace,
        MetricName="DriftShare",
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.2,
        ComparisonOperator="GreaterThanThreshold",
    )
    invocations_before = sum(w.invocations for w in aws.runtime.workers(function))

    # When a datapoint above the threshold is put
    cloudwatch.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "DriftShare", "Value": 0.9}])

    # Then the alarm goes to ALARM, the rule starts the state machine, whose Lambda task ran
    # the function's code in a worker, and the rule's Lambda target ran it too
    _until(lambda: cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "ALARM")
    executions = _until(lambda: sfn.list_executions(stateMachineArn=machine)["executions"])
    done = _until(
        lambda: (
            (d := sfn.describe_execution(executionArn=executions[0]["executionArn"]))["status"] != "RUNNING"
            and d
        ),
        timeout=60,
    )
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == {"status": 200, "direct": {"status": 200}}
    _until(
        lambda: sum(w.invocations for w in aws.runtime.workers(function)) == invocations_before + 3,
        timeout=60,
    )
    assert len(executions) == 1

    # And an object under labels/incoming/ in the capture bucket (EventBridge notifications on
    # in its template) fires the stage's label-drop rule, whose Lambda target is invoked
    labels_function = aws.physical_id("MonitoringLabelsFunction", resource_type="AWS::Lambda::Function")
    capture = aws.physical_id("Capture", resource_type="AWS::S3::Bucket")
    aws.client("s3").put_object(Bucket=capture, Key="labels/incoming/none.csv", Body=b"request_id,label\n")
    router = events_module.active_router()
    deliveries = _until(lambda: router.deliveries_to(f":function:{labels_function}"))
    assert deliveries[0].ok
    assert json.loads(deliveries[0].input)["detail"]["object"]["key"] == "labels/incoming/none.csv"
    _until(lambda: sum(w.invocations for w in aws.runtime.workers(labels_function)) >= 1, timeout=60)


def test_metric_above_threshold_alarms_fires_rule_and_completes_a_state_machine(local):
    # Given an alarm on a metric, an SNS alarm action read through SQS, and a rule on the
    # alarm entering ALARM whose target is a state machine (Pass + Wait)
    alarm = _name("drift")
    topic = local.client("sns").create_topic(Name=_name("alerts"))["TopicArn"]
    queue = _queue_subscribed_to(local, topic)
    machine = _state_machine(
        local,
        _name("retrain"),
        {
            "StartAt": "Note",
            "States": {
                "Note": {"Type": "Pass", "Parameters": {"alarm.$": "$.alarm", "ran": True}, "Next": "Pause"},
                "Pause": {"Type": "Wait", "Seconds": 1, "End": True},
            },
        },
    )
    events = local.client("events")
    rule = _name("on-drift")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "detail": {"alarmName": [alarm], "state": {"value": ["ALARM"]}},
            }
        ),
    )
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "retrain",
                "Arn": machine,
                "RoleArn": ROLE,
                "InputTransformer": {
                    "InputPathsMap": {"name": "$.detail.alarmName", "state": "$.detail.state.value"},
                    "InputTemplate": '{"alarm": <name>, "executionName": "<name>-<state>"}',
                },
            }
        ],
    )
    cloudwatch = local.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        Namespace="Sluice/Drift",
        MetricName="DatasetDriftShare",
        Dimensions=[{"Name": "Model", "Value": "credit"}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.3,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[topic],
    )

    # When a datapoint above the threshold is published
    cloudwatch.put_metric_data(
        Namespace="Sluice/Drift",
        MetricData=[
            {
                "MetricName": "DatasetDriftShare",
                "Dimensions": [{"Name": "Model", "Value": "credit"}],
                "Value": 0.6,
            }
        ],
    )

    # Then the alarm goes to ALARM
    _until(lambda: cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "ALARM")
    # and the rule starts one execution, named from the input, which completes
    sfn = local.client("stepfunctions")
    executions = _until(lambda: sfn.list_executions(stateMachineArn=machine)["executions"])
    assert [e["name"] for e in executions] == [f"{alarm}-ALARM"]
    done = _until(
        lambda: (
            (d := sfn.describe_execution(executionArn=executions[0]["executionArn"]))["status"] != "RUNNING"
            and d
        )
    )
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"alarm": alarm, "ran": True}
    # and the alarm action reached SNS (read through the subscribed queue)
    notes = _until(lambda: _receive(local, queue))
    message = json.loads(notes[0]["Message"])
    assert message["AlarmName"] == alarm
    assert (message["OldStateValue"], message["NewStateValue"]) == ("INSUFFICIENT_DATA", "ALARM")
    assert message["Trigger"]["Threshold"] == 0.3
    # and the router recorded the delivery
    deliveries = local.hooks.router.deliveries_to(machine)
    assert [(d.ok, d.service, json.loads(d.input)["alarm"]) for d in deliveries] == [(True, "states", alarm)]


def test_put_events_with_lambda_and_step_functions_targets_no_longer_raises(local):
    # Given a rule with a Lambda target (no such function) and a Step Functions target
    machine = _state_machine(
        local, _name("echo"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    events = local.client("events")
    rule = _name("orders")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps({"source": ["sluice.test"], "detail": {"n": [{"numeric": [">", 5]}]}}),
    )
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{_name('missing')}"
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "fn", "Arn": function_arn, "InputPath": "$.detail"},
            {"Id": "sm", "Arn": machine, "RoleArn": ROLE, "Input": '{"fixed": 1}'},
        ],
    )

    # When matching and non-matching events are put
    response = events.put_events(
        Entries=[
            {"Source": "sluice.test", "DetailType": "t", "Detail": json.dumps({"n": 7})},
            {"Source": "sluice.test", "DetailType": "t", "Detail": json.dumps({"n": 3})},
        ]
    )
    assert response["FailedEntryCount"] == 0
    assert local.hooks.router.wait_idle(timeout=20)

    # Then the matching one reached both targets with their own input, once each
    to_function = local.hooks.router.deliveries_to(function_arn)
    assert [json.loads(d.input) for d in to_function] == [{"n": 7}]
    assert not to_function[0].ok and "ResourceNotFound" in to_function[0].error  # the function does not exist
    to_machine = local.hooks.router.deliveries_to(machine)
    assert [(d.ok, d.input) for d in to_machine] == [(True, '{"fixed": 1}')]
    executions = local.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]
    assert len(executions) == 1


def test_disabled_rules_do_not_fire_and_sqs_targets_still_go_through_moto(local):
    sqs = local.client("sqs")
    queue_url = sqs.create_queue(QueueName=_name("rule-target"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    machine = _state_machine(
        local, _name("off"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    events = local.client("events")
    source = _name("sluice.mixed")
    on, off = _name("on"), _name("off")
    for rule, state in ((on, "ENABLED"), (off, "DISABLED")):
        events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}), State=state)
    events.put_targets(Rule=on, Targets=[{"Id": "q", "Arn": queue_arn}])
    events.put_targets(Rule=off, Targets=[{"Id": "sm", "Arn": machine, "RoleArn": ROLE}])

    events.put_events(Entries=[{"Source": source, "DetailType": "t", "Detail": "{}"}])
    assert local.hooks.router.wait_idle(timeout=20)

    assert [m["source"] for m in _receive(local, queue_url)] == [source]
    assert local.hooks.router.deliveries_to(machine) == []


def test_duplicate_events_with_one_execution_name_start_one_execution(local):
    # Given a rule whose input names the execution per model (a debounce key)
    machine = _state_machine(
        local, _name("single"), {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "End": True}}}
    )
    events = local.client("events")
    rule = _name("debounced")
    source = _name("sluice.debounce")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}))
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "sm",
                "Arn": machine,
                "RoleArn": ROLE,
                "InputTransformer": {
                    "InputPathsMap": {"model": "$.detail.model"},
                    "InputTemplate": '{"model": <model>, "executionName": "retrain-<model>"}',
                },
            }
        ],
    )
    # When two events for one model arrive
    for _ in range(2):
        events.put_events(
            Entries=[{"Source": source, "DetailType": "t", "Detail": json.dumps({"model": "credit"})}]
        )
    assert local.hooks.router.wait_idle(timeout=20)

    # Then exactly one execution exists
    executions = local.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]
    assert [e["name"] for e in executions] == ["retrain-credit"]
    assert all(d.ok for d in local.hooks.router.deliveries_to(machine))


def test_s3_object_created_events_reach_a_step_functions_target(local):
    # Given a bucket sending its events to EventBridge and a rule on new label files
    s3 = local.client("s3")
    bucket = _name("capture")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    machine = _state_machine(
        local, _name("labels"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    events = local.client("events")
    rule = _name("labels")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "labels/incoming/"}]}},
            }
        ),
    )
    events.put_targets(
        Rule=rule, Targets=[{"Id": "sm", "Arn": machine, "RoleArn": ROLE, "InputPath": "$.detail.object"}]
    )

    # When one matching and one other object are written
    s3.put_object(Bucket=bucket, Key="labels/incoming/day1.csv", Body=b"id,label\n1,0\n")
    s3.put_object(Bucket=bucket, Key="other/x.csv", Body=b"x")
    assert local.hooks.router.wait_idle(timeout=20)

    # Then one execution started with the object as input
    [delivery] = local.hooks.router.deliveries_to(machine)
    assert delivery.ok and json.loads(delivery.input)["key"] == "labels/incoming/day1.csv"


def test_router_put_event_matches_rules_itself(local):
    machine = _state_machine(
        local, _name("direct"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    events = local.client("events")
    rule = _name("direct")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps({"source": ["aws.cloudwatch"], "resources": [{"prefix": "arn:direct"}]}),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "sm", "Arn": machine, "RoleArn": ROLE}])

    event = local.hooks.router.put_event(
        source="aws.cloudwatch", detail_type="x", detail={"k": 1}, resources=["arn:direct:1"]
    )
    assert local.hooks.router.wait_idle(timeout=20)

    [delivery] = local.hooks.router.deliveries_to(machine)
    sent = json.loads(delivery.input)
    assert sent["id"] == event["id"] and sent["detail"] == {"k": 1}
    assert sent["time"].endswith("Z")


def test_finished_executions_emit_status_change_events(local):
    # Given a rule on failed executions of one state machine, delivering to a queue
    machine = _state_machine(
        local,
        _name("fails"),
        {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Drift", "Cause": "bad"}}},
    )
    sqs = local.client("sqs")
    queue_url = sqs.create_queue(QueueName=_name("failures"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = local.client("events")
    rule = _name("on-failure")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {"status": ["FAILED"], "stateMachineArn": [machine]},
            }
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn}])

    # When it runs and fails
    execution = local.client("stepfunctions").start_execution(stateMachineArn=machine, input='{"run": 1}')

    # Then the queue receives the status change with the error
    [event] = _until(lambda: _receive(local, queue_url))
    detail = event["detail"]
    assert (detail["executionArn"], detail["status"]) == (execution["executionArn"], "FAILED")
    assert (detail["error"], detail["cause"], json.loads(detail["input"])) == ("Drift", "bad", {"run": 1})
    assert detail["stopDate"] >= detail["startDate"]


# -- schedules -------------------------------------------------------------------------------------


def test_a_schedule_fires_on_demand_and_by_rate(local):
    # Given an EventBridge Scheduler schedule (rate 1 minute) starting a state machine
    machine = _state_machine(
        local, _name("drift-job"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    name = _name("drift-schedule")
    local.client("scheduler").create_schedule(
        Name=name,
        ScheduleExpression="rate(1 minute)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": machine, "RoleArn": ROLE, "Input": '{"model": "credit-risk", "window_minutes": 60}'},
    )
    clock = SimpleNamespace(now=time.time())
    runner = schedules.ScheduleRunner(router=local.hooks.router, clock=lambda: clock.now)
    sfn = local.client("stepfunctions")

    # When it is fired by name, Then one execution gets the schedule's input
    assert runner.fire(name) == f"schedule/default/{name}"
    assert local.hooks.router.wait_idle(timeout=20)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"]) == {"model": "credit-risk", "window_minutes": 60}

    # When time passes, Then it runs once per rate, starting one rate after it was first seen
    assert f"schedule/default/{name}" not in runner.tick()
    clock.now += 30
    assert f"schedule/default/{name}" not in runner.tick()
    clock.now += 31
    assert f"schedule/default/{name}" in runner.tick()
    assert f"schedule/default/{name}" not in runner.tick()
    assert local.hooks.router.wait_idle(timeout=20)
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2


def test_a_scheduled_rule_fires_with_the_scheduled_event(local):
    machine = _state_machine(
        local, _name("nightly"), {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    )
    events = local.client("events")
    rule = _name("nightly")
    events.put_rule(Name=rule, ScheduleExpression="cron(0 2 * * ? *)")
    events.put_targets(Rule=rule, Targets=[{"Id": "sm", "Arn": machine, "RoleArn": ROLE}])
    runner = schedules.ScheduleRunner(router=local.hooks.router)

    # A scheduled rule has no pattern: events never fire it, only its schedule does
    events.put_events(Entries=[{"Source": "sluice.any", "DetailType": "t", "Detail": "{}"}])
    assert local.hooks.router.wait_idle(timeout=20)
    assert local.hooks.router.deliveries_to(machine) == []

    assert runner.fire(rule) == f"rule/{rule}"
    assert local.hooks.router.wait_idle(timeout=20)

    [delivery] = local.hooks.router.deliveries_to(machine)
    sent = json.loads(delivery.input)
    assert (sent["source"], sent["detail-type"], sent["detail"]) == ("aws.events", "Scheduled Event", {})
    assert sent["resources"][0].endswith(f":rule/{rule}")
    with pytest.raises(NotFound, match="no schedule"):
        runner.fire(_name("nothing"))


def test_schedule_expressions():
    assert schedules.rate_seconds("rate(5 minutes)") == 300
    assert schedules.rate_seconds("rate(1 hour)") == 3600
    assert schedules.rate_seconds("cron(0 2 * * ? *)") is None
    assert schedules.at_epoch("at(1970-01-01T00:01:00)") == 60.0
    assert schedules.at_epoch("at(1970-01-01T01:00:00)", "Europe/Berlin") == 0.0  # CET, UTC+1
    assert schedules.at_epoch("rate(1 day)") is None


# -- the evaluator, step by step with a fixed clock ------------------------------------------------


class _Events:
    """Stands in for the router: records what the evaluator emits."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def put_event(self, **event: Any) -> dict:
        self.sent.append(event)
        return event


@pytest.fixture
def evaluator(local):
    clock = SimpleNamespace(now=time.time())
    sink = _Events()
    made = AlarmEvaluator(
        router=sink, endpoint_url=local.url, region=OTHER_REGION, account=ACCOUNT, clock=lambda: clock.now
    )
    return SimpleNamespace(
        evaluator=made, clock=clock, sink=sink, cloudwatch=local.client("cloudwatch", OTHER_REGION)
    )


def _alarm(cw, *, name: str, metric: str, **extra: Any) -> None:
    settings = {
        "Namespace": "Sluice/Test",
        "MetricName": metric,
        "Dimensions": [{"Name": "Model", "Value": "m"}],
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 3,
        "Threshold": 10.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    }
    settings.update(extra)
    cw.put_metric_alarm(AlarmName=name, **settings)


def _put(cw, metric: str, value: float, at: float, dimensions: list[dict] | None = None) -> None:
    import datetime as dt

    cw.put_metric_data(
        Namespace="Sluice/Test",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": dimensions if dimensions is not None else [{"Name": "Model", "Value": "m"}],
                "Value": value,
                "Timestamp": dt.datetime.fromtimestamp(at, dt.UTC),
            }
        ],
    )


def _put_many(cw, metric: str, values: list[float], at: float) -> None:
    import datetime as dt

    cw.put_metric_data(
        Namespace="Sluice/Test",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "Model", "Value": "m"}],
                "Values": values,
                "Timestamp": dt.datetime.fromtimestamp(at, dt.UTC),
            }
        ],
    )


def _mine(changes: list, name: str) -> list:
    return [c for c in changes if c.alarm == name]


def _state(cw, name: str) -> str:
    return cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_two_of_three_datapoints_to_alarm(evaluator):
    cw, now = evaluator.cloudwatch, evaluator.clock.now
    name, metric = _name("m-of-n"), _name("latency")
    _alarm(cw, name=name, metric=metric, DatapointsToAlarm=2)
    _put(cw, metric, 50, now - 150)  # oldest period: breaching
    _put(cw, metric, 1, now - 90)  # middle: fine
    evaluator.evaluator.tick()
    assert _state(cw, name) == "OK"  # one breaching period of the three

    _put(cw, metric, 20, now - 10)  # newest period: breaching
    [change] = _mine(evaluator.evaluator.tick(), name)
    assert (change.previous, change.state) == ("OK", "ALARM")
    assert change.values == (20.0, 1.0, 50.0)
    assert _state(cw, name) == "ALARM"


def test_average_over_a_period_and_exact_dimension_set(evaluator):
    cw, now = evaluator.cloudwatch, evaluator.clock.now
    name, metric = _name("avg"), _name("score")
    _alarm(cw, name=name, metric=metric, EvaluationPeriods=1)
    _put(cw, metric, 4, now - 5)
    _put(cw, metric, 14, now - 4)  # average 9 < 10
    _put(
        cw,
        metric,
        1000,
        now - 3,
        dimensions=[{"Name": "Model", "Value": "m"}, {"Name": "Version", "Value": "2"}],
    )
    evaluator.evaluator.tick()
    assert _state(cw, name) == "OK"
    _put(cw, metric, 12, now - 2)  # average 10 >= 10
    evaluator.evaluator.tick()
    assert _state(cw, name) == "ALARM"


def test_percentile_statistic(evaluator):
    cw, now = evaluator.cloudwatch, evaluator.clock.now
    name, metric = _name("p90"), _name("duration")
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="Sluice/Test",
        MetricName=metric,
        Dimensions=[{"Name": "Model", "Value": "m"}],
        ExtendedStatistic="p90",
        Period=60,
        EvaluationPeriods=1,
        Threshold=90.5,
        ComparisonOperator="GreaterThanThreshold",
    )
    _put_many(cw, metric, [float(v) for v in range(1, 101)], now - 1)  # p90 (nearest rank) is 90
    evaluator.evaluator.tick()
    assert _state(cw, name) == "OK"
    _put_many(cw, metric, [200.0] * 5, now - 1)  # 105 values: rank ceil(94.5) = 95, value 95
    evaluator.evaluator.tick()
    assert _state(cw, name) == "ALARM"


@pytest.mark.parametrize(
    ("treat", "expected"),
    [
        ("missing", "INSUFFICIENT_DATA"),
        ("breaching", "ALARM"),
        ("notBreaching", "OK"),
        ("ignore", "INSUFFICIENT_DATA"),
    ],
)
def test_treat_missing_data_with_no_datapoints(evaluator, treat, expected):
    cw = evaluator.cloudwatch
    name = _name(f"missing-{treat}")
    _alarm(cw, name=name, metric=_name("silent"), TreatMissingData=treat)
    evaluator.evaluator.tick()
    assert _state(cw, name) == expected


def test_aligned_mode_waits_for_the_period_to_close(local):
    cw = local.client("cloudwatch", OTHER_REGION)
    period_start = (int(time.time()) // 60) * 60
    clock = SimpleNamespace(now=period_start + 30.0)
    aligned = AlarmEvaluator(
        router=_Events(),
        endpoint_url=local.url,
        region=OTHER_REGION,
        account=ACCOUNT,
        evaluate_now=False,
        clock=lambda: clock.now,
    )
    name, metric = _name("aligned"), _name("aligned")
    _alarm(cw, name=name, metric=metric, EvaluationPeriods=1, TreatMissingData="notBreaching")
    _put(cw, metric, 99, period_start + 10)
    aligned.tick()
    assert _state(cw, name) == "OK"  # its period has not ended yet
    clock.now = period_start + 61.0
    aligned.tick()
    assert _state(cw, name) == "ALARM"


def test_state_change_event_shape_and_external_changes(evaluator):
    cw, now = evaluator.cloudwatch, evaluator.clock.now
    name, metric = _name("shape"), _name("shape")
    _alarm(cw, name=name, metric=metric, EvaluationPeriods=1, AlarmDescription="drift share")
    _put(cw, metric, 11, now - 1)
    evaluator.evaluator.tick()
    [event] = [e for e in evaluator.sink.sent if e["detail"]["alarmName"] == name]
    assert event["source"] == "aws.cloudwatch"
    assert event["detail_type"] == "CloudWatch Alarm State Change"
    assert event["resources"] == [f"arn:aws:cloudwatch:{OTHER_REGION}:{ACCOUNT}:alarm:{name}"]
    detail = event["detail"]
    assert (detail["previousState"]["value"], detail["state"]["value"]) == ("INSUFFICIENT_DATA", "ALARM")
    assert detail["configuration"]["description"] == "drift share"
    assert detail["configuration"]["metrics"][0]["metricStat"]["metric"]["name"] == metric

    # When someone sets the state by hand, the next tick emits that change too
    cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="testing")
    changes = _mine(evaluator.evaluator.tick(), name)
    assert [(c.previous, c.state, c.external) for c in changes] == [
        ("ALARM", "OK", True),
        ("OK", "ALARM", False),
    ]


def test_decide_rules():
    alarm = {"ComparisonOperator": "LessThanThreshold", "Threshold": 0.5, "DatapointsToAlarm": 2}
    assert decide(alarm, [0.1, None, 0.2], current="OK")[0] == "ALARM"
    assert decide(alarm, [0.1, None, 0.9], current="OK")[0] == "OK"
    assert decide({**alarm, "TreatMissingData": "breaching"}, [0.1, None, 0.9], current="OK")[0] == "ALARM"
    assert decide({**alarm, "TreatMissingData": "ignore"}, [None, None, None], current="ALARM")[0] == "ALARM"


# -- EventBridge semantics ------------------------------------------------------------------------

EVENT = {
    "source": "sluice.monitoring",
    "detail-type": "Drift",
    "resources": ["arn:aws:cloudwatch:eu-west-1:1:alarm:drift-credit"],
    "detail": {
        "model": "credit-v2",
        "share": 0.42,
        "features": ["age", "income"],
        "state": {"value": "ALARM"},
    },
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["sluice.monitoring"]}, True),
        ({"source": ["other"]}, False),
        ({"detail": {"model": [{"prefix": "credit"}]}}, True),
        ({"detail": {"model": [{"prefix": "fraud"}]}}, False),
        ({"detail": {"model": [{"anything-but": ["credit-v1"]}]}}, True),
        ({"detail": {"model": [{"anything-but": "credit-v2"}]}}, False),
        ({"detail": {"model": [{"anything-but": {"prefix": "credit"}}]}}, False),
        ({"detail": {"share": [{"numeric": [">", 0.3, "<=", 0.5]}]}}, True),
        ({"detail": {"share": [{"numeric": [">=", 0.5]}]}}, False),
        ({"detail": {"share": [{"numeric": ["<", 0]}, {"numeric": [">", 0.4]}]}}, True),
        ({"detail": {"features": ["income"]}}, True),
        ({"detail": {"labels": [{"exists": False}]}}, True),
        ({"detail": {"labels": [{"exists": True}]}}, False),
        ({"detail": {"state": {"value": ["ALARM"]}}, "resources": [{"suffix": "credit"}]}, True),
        ({"$or": [{"source": ["x"]}, {"detail": {"model": ["credit-v2"]}}]}, True),
    ],
)
def test_event_pattern_semantics(pattern, expected):
    assert pattern_matches(pattern, EVENT) is expected


def test_input_shaping():
    event = {**EVENT, "id": "e-1", "time": 0, "ingestion-time": 0}
    assert target_input({"Input": '{"a": 1}'}, event) == '{"a": 1}'
    assert json.loads(target_input({"InputPath": "$.detail.features[1]"}, event)) == "income"
    shaped = target_input(
        {
            "InputTransformer": {
                "InputPathsMap": {
                    "model": "$.detail.model",
                    "share": "$.detail.share",
                    "f": "$.detail.features",
                },
                "InputTemplate": '{"model": <model>, "text": "model <model> at <share>", "features": <f>}',
            }
        },
        event,
    )
    assert json.loads(shaped) == {
        "model": "credit-v2",
        "text": "model credit-v2 at 0.42",
        "features": ["age", "income"],
    }
    assert json.loads(target_input({}, event))["time"] == "1970-01-01T00:00:00Z"
    # the shape CDK's RuleTargetInput.from_object synthesizes: placeholders outside quotes
    cdk = {
        "InputPathsMap": {"detail-alarmName": "$.detail.alarmName"},
        "InputTemplate": '{"model":"credit-risk","alarm":<detail-alarmName>,"debounce_s":900}',
    }
    alarm_event = {**event, "detail": {"alarmName": "sluice-dev-credit-risk-drift-share"}}
    assert json.loads(target_input({"InputTransformer": cdk}, alarm_event)) == {
        "model": "credit-risk",
        "alarm": "sluice-dev-credit-risk-drift-share",
        "debounce_s": 900,
    }
    assert fill_template('"hi <who>"', {"who": 'a "q"'}) == '"hi a \\"q\\""'
    assert json_path(event, "$['detail-type']") == "Drift" and json_path(event, "$.detail.nope") is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), value=_JSON)
def test_template_placeholders_round_trip(text, value):
    # a placeholder inside a JSON string is replaced by the raw text, outside by the JSON value
    filled = fill_template('{"quoted": "<t>", "bare": <v>}', {"t": text, "v": value})
    assert json.loads(filled) == {"quoted": text, "bare": value}


def test_execution_names_are_deterministic():
    event = {"id": "0f1e2d3c-aaaa-bbbb-cccc-000000000000"}
    first = execution_name("{}", event=event, rule="r", target_id="t")
    assert first == execution_name("{}", event=event, rule="r", target_id="t")
    assert first != execution_name("{}", event=event, rule="r2", target_id="t")
    assert execution_name('{"executionName": "retrain credit/1"}', event=event, rule="r", target_id="t") == (
        "retrain-credit-1"
    )
    assert (
        len(execution_name(json.dumps({"executionName": "x" * 200}), event=event, rule="r", target_id="t"))
        == 80
    )


# -- moto internals guards ------------------------------------------------------------------------


def test_events_patch_fails_loudly_if_moto_moves_send_to_targets(monkeypatch):
    from moto.events import models

    monkeypatch.delattr(models.Rule, "send_to_targets")
    with pytest.raises(RuntimeError, match=r"moto\.events\.models\.Rule\.send_to_targets"):
        events_module.SEND_TO_TARGETS.apply()


def test_events_patch_fails_loudly_if_moto_moves_the_pattern_class(monkeypatch):
    from moto.events import models

    monkeypatch.delattr(models, "EventPattern")
    with pytest.raises(RuntimeError, match=r"moto\.events\.models\.EventPattern"):
        pattern_matches({"source": ["x"]}, {"source": "x"})


def test_alarms_fail_loudly_if_moto_moves_metric_data(monkeypatch):
    from moto.cloudwatch import models

    alarms_module.MOTO_NEEDS.check()  # passes on the pinned moto
    monkeypatch.delattr(models, "MetricAggregatedDatum")
    with pytest.raises(RuntimeError, match=r"moto\.cloudwatch\.models\.MetricAggregatedDatum"):
        alarms_module.MOTO_NEEDS.check()


def test_install_accepts_a_local_aws_like_object(local):
    with pytest.raises(ValueError, match="endpoint_url"):
        start_event_services(SimpleNamespace(endpoint_url="", region=REGION, account=ACCOUNT))
