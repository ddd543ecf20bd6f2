"""Step Functions executing on the embedded local AWS: CloudFormation machines, Distributed Map, Retry/Catch."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from localaws.stepfunctions import cloudformation as sfn_cloudformation
from localaws.stepfunctions import definitions
from localaws.stepfunctions import execution as sfn_module

pytestmark = pytest.mark.local

REGION = "eu-west-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
ROLE = f"arn:aws:iam::{ACCOUNT}:role/local"


@pytest.fixture(scope="module")
def local():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    patch = sfn_module.enable(endpoint_url=url)

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    handle = SimpleNamespace(url=url, port=port, patch=patch, client=client)
    yield handle
    handle.patch.disable()
    server.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


def _run(local, machine_arn: str, payload: dict | None = None) -> dict:
    sfn = local.client("stepfunctions")
    started = sfn.start_execution(stateMachineArn=machine_arn, input=json.dumps(payload or {}))
    return _until(
        lambda: (
            (d := sfn.describe_execution(executionArn=started["executionArn"]))["status"] != "RUNNING" and d
        )
    )


def _create(local, definition: dict) -> str:
    return local.client("stepfunctions").create_state_machine(
        name=_name("sm"), definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]


def test_state_machines_created_by_cloudformation_execute(local):
    # Given a stack with two machines as CDK writes them: a joined DefinitionString, and
    # a Definition object with DefinitionSubstitutions
    template = {
        "Resources": {
            "Joined": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": ROLE,
                    "DefinitionString": {
                        "Fn::Join": [
                            "",
                            [
                                '{"StartAt":"P","States":{"P":{"Type":"Pass","Result":{"region":"',
                                {"Ref": "AWS::Region"},
                                '"},"End":true}}}',
                            ],
                        ]
                    },
                },
            },
            "Substituted": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": ROLE,
                    "StateMachineName": _name("substituted"),
                    "Definition": {
                        "StartAt": "P",
                        "States": {"P": {"Type": "Pass", "Result": {"bucket": "${Bucket}"}, "End": True}},
                    },
                    "DefinitionSubstitutions": {"Bucket": "work-bucket"},
                },
            },
        },
        "Outputs": {
            "JoinedArn": {"Value": {"Ref": "Joined"}},
            "SubstitutedArn": {"Value": {"Ref": "Substituted"}},
        },
    }
    cfn = local.client("cloudformation")
    stack = _name("sfn-stack")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    outputs = {
        o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }

    # When each is started, Then it runs to completion with its definition
    joined = _run(local, outputs["JoinedArn"])
    assert joined["status"] == "SUCCEEDED" and json.loads(joined["output"]) == {"region": REGION}
    substituted = _run(local, outputs["SubstitutedArn"])
    assert json.loads(substituted["output"]) == {"bucket": "work-bucket"}

    # and deleting the stack deletes them
    cfn.delete_stack(StackName=stack)
    names = [
        m["stateMachineArn"] for m in local.client("stepfunctions").list_state_machines()["stateMachines"]
    ]
    assert outputs["JoinedArn"] not in names


def test_machines_created_before_enable_are_moved_and_execute(local):
    from moto.stepfunctions.models import stepfunctions_backends

    plain = stepfunctions_backends[ACCOUNT][REGION]
    early = plain.create_state_machine(
        _name("early"), json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}), ROLE
    )
    moved = sfn_module.move_to_executing_backend()

    assert early.arn in moved and early not in plain.state_machines
    assert _run(local, early.arn, {"x": 1})["status"] == "SUCCEEDED"


def test_distributed_map_reads_items_from_s3_and_writes_results(local):
    # Given items in S3 and a Distributed Map with an S3 ItemReader and ResultWriter
    s3 = local.client("s3")
    bucket = _name("items")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="in/items.json", Body=json.dumps([{"id": i} for i in range(4)]))
    machine = _create(
        local,
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemReader": {
                        "Resource": "arn:aws:states:::s3:getObject",
                        "ReaderConfig": {"InputType": "JSON"},
                        "Parameters": {"Bucket": bucket, "Key": "in/items.json"},
                    },
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Double",
                        "States": {
                            "Double": {
                                "Type": "Pass",
                                "Parameters": {"id.$": "$.id", "seen": True},
                                "End": True,
                            }
                        },
                    },
                    "ResultWriter": {
                        "Resource": "arn:aws:states:::s3:putObject",
                        "Parameters": {"Bucket": bucket, "Prefix": "out"},
                    },
                    "End": True,
                }
            },
        },
    )

    # When it runs
    done = _run(local, machine)

    # Then it succeeds, and the manifest lists a result file holding every item's output
    assert done["status"] == "SUCCEEDED"
    details = json.loads(done["output"])["ResultWriterDetails"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=details["Key"])["Body"].read())
    [result_file] = manifest["ResultFiles"]["SUCCEEDED"]
    records = json.loads(s3.get_object(Bucket=bucket, Key=result_file["Key"])["Body"].read())
    assert sorted(json.loads(r["Output"])["id"] for r in records) == [0, 1, 2, 3]
    assert {r["Status"] for r in records} == {"SUCCEEDED"}
    assert all(json.loads(r["Output"])["seen"] for r in records)


def test_retry_then_catch_around_a_failing_lambda_task(local):
    # Given a Lambda task whose function does not exist, retried twice, then caught
    machine = _create(
        local,
        {
            "StartAt": "Score",
            "States": {
                "Score": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": _name("absent"), "Payload.$": "$"},
                    "Retry": [
                        {
                            "ErrorEquals": ["States.ALL"],
                            "MaxAttempts": 2,
                            "IntervalSeconds": 1,
                            "BackoffRate": 1,
                        }
                    ],
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Notify"}],
                    "End": True,
                },
                "Notify": {"Type": "Pass", "End": True},
            },
        },
    )

    # When it runs
    done = _run(local, machine, {"model": "credit"})

    # Then the task was tried three times through the moto server's Lambda API, and caught
    assert done["status"] == "SUCCEEDED"
    output = json.loads(done["output"])
    assert output["model"] == "credit" and output["error"]["Error"] == "Lambda.ResourceNotFoundException"
    history = local.client("stepfunctions").get_execution_history(executionArn=done["executionArn"])["events"]
    assert sum(e["type"] == "TaskScheduled" for e in history) == 3


def test_fail_state_without_catch_fails_the_execution(local):
    machine = _create(
        local, {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Drift", "Cause": "too much"}}}
    )
    done = _run(local, machine)
    assert (done["status"], done.get("error"), done.get("cause")) == ("FAILED", "Drift", "too much")


def test_enable_sets_the_moto_switches_and_disable_restores_them(local):
    from moto.core.config import default_user_config

    assert default_user_config["stepfunctions"]["execute_state_machine"] is True
    assert os.environ["MOTO_PORT"] == str(local.port)

    # Enabling for a second server nests: disabling it points moto back at the first
    second = sfn_module.enable(endpoint_url="http://127.0.0.1:1")
    assert os.environ["MOTO_PORT"] == "1"
    assert second.originals == []  # moto's methods are wrapped once, by the first patch
    second.disable()
    assert os.environ["MOTO_PORT"] == str(local.port)
    assert default_user_config["stepfunctions"]["execute_state_machine"] is True
    assert (
        _run(local, _create(local, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))[
            "status"
        ]
        == "SUCCEEDED"
    )


def test_disable_restores_moto(local):
    from moto.core.config import default_user_config
    from moto.stepfunctions.models import StateMachine

    local.patch.disable()
    try:
        assert default_user_config["stepfunctions"]["execute_state_machine"] is local.patch.previous_execute
        assert os.environ.get("MOTO_PORT") == local.patch.previous_port
        originals = {name: original for _, name, original in local.patch.originals}
        assert len(originals) == len(sfn_module.PATCHES)
        assert (
            StateMachine.__dict__["create_from_cloudformation_json"]
            is originals["create_from_cloudformation_json"]
        )
    finally:
        local.patch = sfn_module.enable(endpoint_url=local.url)


def test_enable_fails_loudly_if_moto_stops_reading_the_switch(monkeypatch):
    import moto.stepfunctions.responses as responses

    monkeypatch.setattr(responses, "get_backend", lambda account, region: None)
    with pytest.raises(RuntimeError, match=r"moto\.stepfunctions\.responses\.get_backend"):
        sfn_module.check()


def test_enable_fails_loudly_if_moto_moves_the_result_writer(monkeypatch):
    writer, _, _ = sfn_module.RESULT_WRITER.current()
    monkeypatch.delattr(writer, "_handle_put_object")
    with pytest.raises(RuntimeError, match=r"_handle_put_object"):
        sfn_module.check()


def test_enable_fails_loudly_if_moto_moves_the_parser_backend(monkeypatch):
    import moto.stepfunctions.parser.models as parser_models

    monkeypatch.delattr(parser_models, "stepfunctions_parser_backends")
    with pytest.raises(RuntimeError, match=r"stepfunctions_parser_backends"):
        sfn_module.check()


def test_item_batcher_and_other_definitions_moto_rejects(local):
    # Given shards in S3 and a Distributed Map with ItemBatcher, an integer
    # ToleratedFailurePercentage and EXPRESS children (all valid ASL that moto's grammar rejects)
    s3 = local.client("s3")
    bucket = _name("shards")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for index in range(5):
        s3.put_object(Bucket=bucket, Key=f"in/shard-{index}.csv", Body=b"a\n1\n")
    machine = _create(
        local,
        {
            "StartAt": "Shards",
            "States": {
                "Shards": {
                    "Type": "Map",
                    "ItemReader": {
                        "Resource": "arn:aws:states:::s3:listObjectsV2",
                        "Parameters": {"Bucket": bucket, "Prefix": "in/"},
                    },
                    "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {"run": "r1"}},
                    "ToleratedFailurePercentage": 10,
                    "MaxConcurrency": 2,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                        "StartAt": "Score",
                        "States": {
                            "Score": {
                                "Type": "Pass",
                                "Parameters": {"keys.$": "$.Items[*].Key", "run.$": "$.BatchInput.run"},
                                "End": True,
                            }
                        },
                    },
                    "End": True,
                }
            },
        },
    )

    # When it runs, Then the items arrive in batches of two with the batch input
    done = _run(local, machine)
    assert done["status"] == "SUCCEEDED", done
    batches = json.loads(done["output"])
    assert [b["keys"] for b in batches] == [
        [f"in/shard-{i}.csv" for i in (0, 1)],
        [f"in/shard-{i}.csv" for i in (2, 3)],
        ["in/shard-4.csv"],
    ]
    assert {b["run"] for b in batches} == {"r1"}


def test_batch_items_groups_like_item_batcher():
    assert definitions.batch_items([1, 2, 3], {"MaxItemsPerBatch": 2}) == [{"Items": [1, 2]}, {"Items": [3]}]
    assert definitions.batch_items([], {"MaxItemsPerBatch": 2}) == []
    definition, batchers = definitions.normalise_definition(
        json.dumps(
            {
                "StartAt": "P",
                "States": {
                    "P": {
                        "Type": "Parallel",
                        "End": True,
                        "Branches": [
                            {
                                "StartAt": "M",
                                "States": {"M": {"Type": "Map", "ItemBatcher": {"MaxItemsPerBatch": 3}}},
                            }
                        ],
                    }
                },
            }
        )
    )
    assert batchers == {"M": {"ItemBatcher": {"MaxItemsPerBatch": 3}}} and "ItemBatcher" not in definition
    untouched = '{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}'
    assert definitions.normalise_definition(untouched) == (untouched, {})


def test_cloudformation_deploys_a_machine_moto_cannot_interpret(local):
    template = {
        "Resources": {
            "Manifest": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": ROLE,
                    "Definition": {
                        "StartAt": "M",
                        "States": {
                            "M": {
                                "Type": "Map",
                                "ItemReader": {
                                    "Resource": "arn:aws:states:::s3:getObject",
                                    "ReaderConfig": {"InputType": "MANIFEST"},
                                    "Parameters": {"Bucket": "b", "Key": "k"},
                                },
                                "ItemProcessor": {
                                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                                    "StartAt": "P",
                                    "States": {"P": {"Type": "Pass", "End": True}},
                                },
                                "End": True,
                            }
                        },
                    },
                },
            }
        },
        "Outputs": {"Arn": {"Value": {"Ref": "Manifest"}}},
    }
    cfn = local.client("cloudformation")
    stack = _name("manifest")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))

    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    arn = described["Outputs"][0]["OutputValue"]
    assert "MANIFEST" in sfn_cloudformation.UNPARSEABLE[arn]
    sfn = local.client("stepfunctions")
    assert sfn.describe_state_machine(stateMachineArn=arn)["status"] == "ACTIVE"
    # starting it says why instead of hanging in RUNNING
    with pytest.raises(sfn.exceptions.InvalidDefinition, match="cannot interpret"):
        sfn.start_execution(stateMachineArn=arn, input="{}")


def test_jsonl_item_reader(local):
    s3 = local.client("s3")
    bucket = _name("jsonl")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="rows.jsonl", Body=b'{"id": 1}\n{"id": 2}\n\n{"id": 3}\n')
    machine = _create(
        local,
        {
            "StartAt": "Rows",
            "States": {
                "Rows": {
                    "Type": "Map",
                    "ItemReader": {
                        "Resource": "arn:aws:states:::s3:getObject",
                        "ReaderConfig": {"InputType": "JSONL"},
                        "Parameters": {"Bucket": bucket, "Key": "rows.jsonl"},
                    },
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "P",
                        "States": {"P": {"Type": "Pass", "End": True}},
                    },
                    "End": True,
                }
            },
        },
    )
    done = _run(local, machine)
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == [{"id": 1}, {"id": 2}, {"id": 3}]


@pytest.mark.parametrize(
    ("config", "suffix", "expected"),
    [
        ({"Transformation": "COMPACT", "OutputType": "JSON"}, ".json", [[0, 1], [2]]),
        ({"Transformation": "FLATTEN", "OutputType": "JSONL"}, ".jsonl", [0, 1, 2]),
    ],
)
def test_result_writer_config(local, config, suffix, expected):
    # Given a Distributed Map with a WriterConfig (CDK's ResultWriterV2), which moto rejects
    s3 = local.client("s3")
    bucket = _name("results")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    machine = _create(
        local,
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.groups",
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "P",
                        "States": {"P": {"Type": "Pass", "End": True}},
                    },
                    "ResultWriter": {
                        "Resource": "arn:aws:states:::s3:putObject",
                        "Parameters": {"Bucket": bucket, "Prefix": "out"},
                        "WriterConfig": config,
                    },
                    "End": True,
                }
            },
        },
    )

    # When it runs over two groups
    done = _run(local, machine, {"groups": [[0, 1], [2]]})

    # Then the result file has the configured shape and format
    assert done["status"] == "SUCCEEDED", done
    manifest_key = json.loads(done["output"])["ResultWriterDetails"]["Key"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    [result] = manifest["ResultFiles"]["SUCCEEDED"]
    assert result["Key"].endswith(suffix)
    body = s3.get_object(Bucket=bucket, Key=result["Key"])["Body"].read().decode()
    records = json.loads(body) if suffix == ".json" else [json.loads(line) for line in body.splitlines()]
    assert sorted(records, key=json.dumps) == sorted(expected, key=json.dumps)
