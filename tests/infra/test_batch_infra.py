"""The batch scoring pipelines as synthesized: steps, Distributed Map, retries, failure path, triggers."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from infra.constructs.batch_pipeline import BATCH_TRANSIENT_ERRORS
from sluice.names import BATCH_RETRY_ATTEMPTS
from tests.infra.conftest import SESSION_MODELS, resources_of
from tests.infra.test_iam import flatten

MODEL = "credit-risk"
MACHINES = {
    "Batch": "sluice-dev-credit-risk-batch",
    "BatchViaEndpoint": "sluice-dev-credit-risk-batch-via-endpoint",
}


def _machine(template: dict, prefix: str) -> tuple[str, dict]:
    machines = resources_of(template, "AWS::StepFunctions::StateMachine")
    (found,) = [(k, m) for k, m in machines.items() if k.startswith(f"{prefix}StateMachine")]
    return found


def _definition(template: dict, prefix: str) -> dict:
    _, machine = _machine(template, prefix)
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))


def _functions(template: dict, prefix: str) -> dict[str, dict]:
    """Step name (``batch_score``...) → function properties, for one pipeline."""
    out = {}
    for logical_id, fn in resources_of(template, "AWS::Lambda::Function").items():
        command = (fn["Properties"].get("ImageConfig") or {}).get("Command") or [""]
        if logical_id.startswith(prefix) and logical_id[len(prefix)] in "PSN" and "batch_" in command[0]:
            out[command[0].split(".")[2]] = fn["Properties"]
    return out


@pytest.mark.parametrize("prefix", list(MACHINES))
def test_pipeline_runs_preprocess_map_postprocess_with_a_failure_path(templates, prefix):
    _, machine = _machine(templates["Dev-Service"], prefix)
    assert machine["Properties"]["StateMachineName"] == MACHINES[prefix]
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    states = _definition(templates["Dev-Service"], prefix)["States"]
    # preprocess → Distributed Map → postprocess → choice: succeed, or notify and fail
    assert states["PreprocessInput"]["Next"] == "ScoreShards"
    assert states["ScoreShards"]["Next"] == "PostprocessOutput"
    assert states["PostprocessOutput"]["Next"] == "RunSucceeded?"
    choice = states["RunSucceeded?"]
    assert choice["Choices"] == [
        {"Variable": "$.summary.status", "StringEquals": "SUCCEEDED", "Next": "Scored"}
    ]
    assert choice["Default"] == "NotifyFailure" and states["NotifyFailure"]["Next"] == "Failed"
    for name in ("PreprocessInput", "ScoreShards", "PostprocessOutput"):
        assert states[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}
        ]
    # the run's id is its execution name; its ARN and start time identify its claims
    assert states["PreprocessInput"]["Parameters"] == {
        "request.$": "$",
        "execution.$": "$$.Execution.Name",
        "execution_id.$": "$$.Execution.Id",
        "started.$": "$$.Execution.StartTime",
    }


@pytest.mark.parametrize("prefix", list(MACHINES))
def test_distributed_map_lists_shards_and_writes_results_to_s3(templates, prefix):
    shard_map = _definition(templates["Dev-Service"], prefix)["States"]["ScoreShards"]
    assert shard_map["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "STANDARD",
    }
    assert shard_map["MaxConcurrency"] == 10
    reader = shard_map["ItemReader"]
    assert reader["Resource"].endswith(":states:::s3:listObjectsV2")
    assert reader["Parameters"] == {
        "Bucket": "sluice-dev-work-111111111111-eu-west-1",
        "Prefix.$": "$.shard_prefix",
    }
    assert shard_map["ItemSelector"] == {"key.$": "$$.Map.Item.Value.Key", "run.$": "$.run"}
    writer = shard_map["ResultWriter"]
    assert writer["Resource"].endswith(":states:::s3:putObject")
    assert writer["Parameters"]["Prefix"] == "batch/map-results"


@pytest.mark.parametrize("prefix", list(MACHINES))
def test_shards_retry_transient_errors_with_backoff_then_are_recorded_as_failed(templates, prefix):
    processor = _definition(templates["Dev-Service"], prefix)["States"]["ScoreShards"]["ItemProcessor"]
    score = processor["States"]["ScoreShard"]
    assert score["Retry"] == [
        {
            "ErrorEquals": BATCH_TRANSIENT_ERRORS,
            "IntervalSeconds": 2,
            "MaxAttempts": BATCH_RETRY_ATTEMPTS - 1,
            "BackoffRate": 2,
            "JitterStrategy": "FULL",
        }
    ]
    assert "BatchTransientError" in score["Retry"][0]["ErrorEquals"]
    assert score["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ShardFailed"}]
    assert processor["States"]["ShardFailed"]["Parameters"]["failed"] is True


@pytest.mark.parametrize("prefix", list(MACHINES))
def test_each_step_is_its_own_image_function(templates, prefix):
    functions = _functions(templates["Dev-Service"], prefix)
    assert set(functions) == {"batch_preprocess", "batch_score", "batch_postprocess", "batch_notify"}
    assert all(f["PackageType"] == "Image" for f in functions.values())
    memory = {name: f["MemorySize"] for name, f in functions.items()}
    assert memory == {
        "batch_preprocess": 3008,
        "batch_score": 2048,
        "batch_postprocess": 3008,
        "batch_notify": 512,
    }
    assert functions["batch_score"]["Timeout"] == 900


def test_model_variant_captures_and_endpoint_variant_calls_the_endpoint(templates):
    dev = templates["Dev-Service"]
    model = _functions(dev, "Batch")["batch_score"]["Environment"]["Variables"]
    via = _functions(dev, "BatchViaEndpoint")["batch_score"]["Environment"]["Variables"]
    assert model["SLUICE_CAPTURE_BUCKET"] == "sluice-dev-capture-111111111111-eu-west-1"
    assert "SLUICE_BATCH_ENDPOINT_URL" not in model
    url = flatten(via["SLUICE_BATCH_ENDPOINT_URL"])
    assert url.startswith("https://<Ref>.execute-api.eu-west-1.") and url.endswith("/<Ref>/predict")
    assert "SLUICE_CAPTURE_BUCKET" not in via
    # and only the endpoint variant's steps may call the endpoint (SigV4, POST /predict only)
    invokes = [
        (policy["Properties"]["Roles"], flatten(statement["Resource"]))
        for policy in resources_of(dev, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "execute-api:Invoke"
    ]
    batch_invokes = [(roles, r) for roles, r in invokes if any("BatchViaEndpoint" in x["Ref"] for x in roles)]
    assert len(batch_invokes) == len(SESSION_MODELS)  # one endpoint variant per model
    assert all(r.endswith("/dev/POST/predict") for _, r in batch_invokes)
    assert not [roles for roles, _ in invokes if any(x["Ref"].startswith("BatchSteps") for x in roles)]


def test_s3_objects_under_the_input_prefix_start_a_run(template, templates):
    service = template("Dev-Service")
    machine_id, _ = _machine(templates["Dev-Service"], "Batch")
    service.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": ["sluice-dev-work-111111111111-eu-west-1"]},
                    "object": {"key": [{"prefix": f"batch/input/{MODEL}/"}]},
                },
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Ref": machine_id},
                        "InputTransformer": Match.object_like(
                            {"InputPathsMap": {"detail-object-key": "$.detail.object.key"}}
                        ),
                    }
                )
            ],
        },
    )
    service.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": Match.object_like(
                {
                    "detail": Match.object_like(
                        {"object": {"key": [{"prefix": f"batch/input-via-endpoint/{MODEL}/"}]}}
                    )
                }
            )
        },
    )
    # and the work bucket sends its object events to EventBridge
    template("Dev-Stateful").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "sluice-dev-work-111111111111-eu-west-1",
            "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
        },
    )


def test_a_schedule_starts_the_model_variant(templates):
    machine_id, _ = _machine(templates["Dev-Service"], "Batch")
    schedules = [
        s["Properties"]
        for s in resources_of(templates["Dev-Service"], "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Ref": machine_id}
    ]
    assert len(schedules) == 1 and schedules[0]["ScheduleExpression"] == "rate(1 day)"
    assert json.loads(flatten(schedules[0]["Target"]["Input"])) == {
        "model": MODEL,
        "input_uri": f"s3://sluice-dev-work-111111111111-eu-west-1/batch/scheduled/{MODEL}/latest.parquet",
        "trigger": "schedule",
    }
    # the scheduler's role may start this state machine and nothing else
    role = schedules[0]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    granted = [
        (statement["Action"], statement["Resource"])
        for policy in resources_of(templates["Dev-Service"], "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert granted == [("states:StartExecution", {"Ref": machine_id})]


def test_failures_notify_a_kms_encrypted_topic(templates):
    dev = templates["Dev-Service"]
    topics = {k: t for k, t in resources_of(dev, "AWS::SNS::Topic").items() if k.startswith("Batch")}
    assert len(topics) == 2
    assert all("KmsMasterKeyId" in t["Properties"] for t in topics.values())
    notify = _functions(dev, "Batch")["batch_notify"]["Environment"]["Variables"]
    assert flatten(notify["SLUICE_NOTIFY_TOPIC_ARN"]).startswith("<Ref>")


@pytest.mark.parametrize(("stage", "drill"), [("Dev", "true"), ("Prod", "false")])
@pytest.mark.parametrize("prefix", list(MACHINES))
def test_each_pipeline_fixes_its_model_and_the_fault_drill_per_stage(templates, stage, drill, prefix):
    # The input cannot widen the scope: it comes from the construct (cdk.json), not the run.
    for fn in _functions(templates[f"{stage}-Service"], prefix).values():
        variables = fn["Environment"]["Variables"]
        assert variables["SLUICE_MODEL_NAME"] == MODEL
        assert variables["SLUICE_BATCH_FAULT_DRILL"] == drill
