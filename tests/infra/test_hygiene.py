"""Issue 16 hygiene: no role attached to nothing, reserved concurrency per function, and Step
Functions logs without execution data outside dev (settings from ``cdk.json``)."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match

from infra.config import DEFAULT_RESERVED_CONCURRENCY
from tests.infra.conftest import SESSION_MODELS, model_resources, resources_of

SERVICE_STACKS = ["Dev-Service", "Prod-Service"]


def _referenced_ids(value: object) -> set[str]:
    """Logical ids named by ``Ref`` or ``Fn::GetAtt`` anywhere in ``value``."""
    text = json.dumps(value)
    found: set[str] = set()
    for fragment in text.split('{"Ref": "')[1:]:
        found.add(fragment.split('"', 1)[0])
    for fragment in text.split('{"Fn::GetAtt": ["')[1:]:
        found.add(fragment.split('"', 1)[0])
    return found


@pytest.mark.parametrize("stack", SERVICE_STACKS)
def test_every_role_is_used_by_a_service_or_assumed_by_name(templates, stack):
    # Given the service stack's roles
    template = templates[stack]
    roles = resources_of(template, "AWS::IAM::Role")
    # When we collect what each is used by, other than its own policies
    used = {
        ref
        for resource in template["Resources"].values()
        if resource["Type"] != "AWS::IAM::Policy"
        for ref in _referenced_ids(resource.get("Properties", {}))
    }
    # Then each role runs a function, state machine, schedule, rule, stream or deployment,
    # or is an operator role that people assume by its fixed name (deployer, promotion)
    idle = [rid for rid, role in roles.items() if rid not in used and "RoleName" not in role["Properties"]]
    assert idle == []
    # And the two roles issue 16 found attached to nothing are gone
    assert not [rid for rid in roles if rid.startswith(("RolesPipeline", "RolesEndpoint"))]


@pytest.mark.parametrize("stack", SERVICE_STACKS)
def test_every_function_has_reserved_concurrency(templates, stack):
    functions = resources_of(templates[stack], "AWS::Lambda::Function")
    assert functions
    unreserved = [
        fid for fid, f in functions.items() if "ReservedConcurrentExecutions" not in f["Properties"]
    ]
    assert unreserved == []


@pytest.mark.parametrize(
    ("stack", "handler", "limit"),
    [
        # cdk.json raises prod's endpoint limit; everything else keeps the defaults of infra.config
        ("Prod-Service", "score", 100),
        ("Dev-Service", "score", DEFAULT_RESERVED_CONCURRENCY["endpoint"]),
        ("Dev-Service", "labels", DEFAULT_RESERVED_CONCURRENCY["labels"]),
        ("Prod-Service", "labels", DEFAULT_RESERVED_CONCURRENCY["labels"]),
        ("Prod-Service", "registry_api", DEFAULT_RESERVED_CONCURRENCY["registry_api"]),
        ("Prod-Service", "retrain_trigger", DEFAULT_RESERVED_CONCURRENCY["retrain_trigger"]),
    ],
)
def test_zip_function_reserved_concurrency_comes_from_cdk_json(template, stack, handler, limit):
    template(stack).has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": f"sluice.handlers.{handler}.lambda_handler", "ReservedConcurrentExecutions": limit},
    )


@pytest.mark.parametrize(
    ("stack", "handler", "key"),
    [("Dev-Service", "monitor", "drift"), ("Prod-Service", "batch_score", "batch")],
)
def test_image_function_reserved_concurrency_comes_from_cdk_json(template, stack, handler, key):
    template(stack).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": {"Command": [f"sluice.handlers.{handler}.lambda_handler"]},
            "ReservedConcurrentExecutions": DEFAULT_RESERVED_CONCURRENCY[key],
        },
    )


@pytest.mark.parametrize(("stack", "included"), [("Dev-Service", True), ("Prod-Service", False)])
def test_state_machine_logs_carry_execution_data_only_in_dev(templates, template, stack, included):
    # Given every state machine of the stage (per model: retraining and both batch pipelines; the
    # stage's drift fan-out)
    machines = resources_of(templates[stack], "AWS::StepFunctions::StateMachine")
    assert len(machines) == 3 * len(SESSION_MODELS) + 1
    # Then all log every event, with states' inputs and outputs only where cdk.json says so (dev)
    for machine in machines.values():
        logging = machine["Properties"]["LoggingConfiguration"]
        assert logging["Level"] == "ALL"
        assert logging["IncludeExecutionData"] is included
    template(stack).has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {"LoggingConfiguration": Match.object_like({"IncludeExecutionData": included})},
    )


@pytest.mark.parametrize("model", SESSION_MODELS)
@pytest.mark.parametrize("stack", SERVICE_STACKS)
def test_retrain_trigger_writes_only_its_lock_table(templates, stack, model):
    # Given the model's retraining trigger's role and function
    template = templates[stack]
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in model_resources(template, "AWS::IAM::Policy", model).values()
        if "RetrainingTriggerRole" in json.dumps(p["Properties"]["Roles"])
    ]
    statements = [s for statement_list in policies for s in statement_list]
    table_statements = [s for s in statements if "dynamodb:" in json.dumps(s["Action"])]
    # Then its only table right is PutItem on the stateful stack's lock table, never the registry's
    assert [s["Action"] for s in table_statements] == ["dynamodb:PutItem"]
    resource = json.dumps(table_statements[0]["Resource"])
    assert "RetrainLocks" in resource and "Registry" not in resource
    (function,) = [
        f
        for k, f in model_resources(template, "AWS::Lambda::Function", model).items()
        if "RetrainingTrigger" in k
    ]
    variables = function["Properties"]["Environment"]["Variables"]
    assert "RetrainLocks" in json.dumps(variables["SLUICE_RETRAIN_LOCK_TABLE"])
    assert "SLUICE_REGISTRY_TABLE" not in variables


def test_retrain_lock_table_is_a_small_table_of_its_own(template):
    template("Dev-Stateful").has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )


def test_each_distributed_map_runs_as_many_children_as_its_function_may(tmp_path):
    # Given a dev stage whose batch steps and drift fan-out reserve less than the default 10
    from app import build_app
    from localaws.assembly import read_assembly

    context = {
        "stage": "dev",
        "sluice:models": [{"name": "credit-risk"}],
        "dev:reservedConcurrency": {"batch": 4, "drift_fanout": 3},
    }
    build_app(context=context, outdir=str(tmp_path)).synth()
    service = next(s.template for s in read_assembly(tmp_path) if s.stack_name == "Dev-Service")
    # Then each Map runs at most as many children at once as its function's reserved concurrency,
    # so no child is throttled: both batch pipelines' maps 4, the drift fan-out's 3
    found: dict[str, list[int]] = {}
    for logical_id, machine in resources_of(service, "AWS::StepFunctions::StateMachine").items():
        definition = json.dumps(machine["Properties"]["DefinitionString"])
        name = machine["Properties"].get("StateMachineName", logical_id)
        found[name] = [int(v) for v in re.findall(r'\\"MaxConcurrency\\":(\d+)', definition)]
    assert found["sluice-dev-drift"] == [3]
    assert found["sluice-dev-credit-risk-batch"] == [4]
    assert found["sluice-dev-credit-risk-batch-via-endpoint"] == [4]
