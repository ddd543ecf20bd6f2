"""The train step on Fargate (``credit-decisions`` in ``infra/models.json``) and on SageMaker (a context override)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Match

from infra.constructs.training_compute import TRAIN_ENTRY_POINT
from tests.infra.conftest import model_resources, resources_of

MODEL = "credit-decisions"
ROOT = Path(__file__).resolve().parents[2]


def _retraining_definition(template: dict, model: str) -> dict:
    machines = model_resources(template, "AWS::StepFunctions::StateMachine", model)
    (machine,) = [m for k, m in machines.items() if "Retraining" in k]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))


def _statements(policy: dict) -> list[dict]:
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def _pass_role_statements(template: dict) -> list[dict]:
    return [
        s
        for policy in resources_of(template, "AWS::IAM::Policy").values()
        for s in _statements(policy)
        if "iam:PassRole" in _actions(s)
    ]


def test_models_json_trains_the_example_on_fargate():
    models = {m["name"]: m for m in json.loads((ROOT / "infra" / "models.json").read_text())}
    assert models[MODEL]["trainingCompute"] == "fargate"


def test_the_train_task_runs_the_models_own_lambda_image_on_arm64_fargate(templates, template):
    service = templates["Dev-Service"]
    (definition,) = resources_of(service, "AWS::ECS::TaskDefinition").values()
    props = definition["Properties"]
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    (container,) = props["ContainerDefinitions"]
    assert container["EntryPoint"] == TRAIN_ENTRY_POINT
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    # The same image asset as the model's Lambda functions (one build, whichever compute runs it)
    lambda_images = {
        json.dumps(f["Properties"]["Code"]["ImageUri"])
        for f in model_resources(service, "AWS::Lambda::Function", MODEL).values()
        if "ImageUri" in f["Properties"]["Code"]
    }
    assert json.dumps(container["Image"]) in lambda_images
    # Nothing in the environment names code: resource names only, the run comes as overrides
    assert not {v["Name"] for v in container["Environment"]} & {
        "SLUICE_RETRAIN_MODEL",
        "SLUICE_RETRAIN_RUN_ID",
    }


def test_the_train_step_is_an_ecs_run_task_sync_then_collect(templates):
    states = _retraining_definition(templates["Dev-Service"], MODEL)["States"]
    train = states["Train"]
    assert train["Resource"].endswith(":states:::ecs:runTask.sync")
    assert train["Parameters"]["LaunchType"] == "FARGATE"
    network = train["Parameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    (override,) = train["Parameters"]["Overrides"]["ContainerOverrides"]
    assert {e["Name"]: e["Value.$"] for e in override["Environment"]} == {
        "SLUICE_RETRAIN_MODEL": "$.model",
        "SLUICE_RETRAIN_RUN_ID": "$.run_id",
    }
    assert "Command" not in override  # the entry point comes only from the task definition
    assert train["ResultPath"] is None and train["Next"] == "Collect"
    assert states["Collect"]["Parameters"]["step"] == "collect"
    for name in ("Train", "Collect"):
        (catch,) = states[name]["Catch"]
        assert catch["Next"] == "TrainFailed"
    assert states["Collect"]["Next"] == "Evaluate"


def test_the_network_has_no_nat_gateway_and_lets_tasks_out_on_https_only(templates, template):
    for name, body in templates.items():
        for kind in ("AWS::EC2::NatGateway", "AWS::EC2::EIP"):
            assert resources_of(body, kind) == {}, f"{name} has a {kind}"
    service = templates["Dev-Service"]
    subnets = resources_of(service, "AWS::EC2::Subnet").values()
    assert len(subnets) == 2 and all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)
    endpoints = resources_of(service, "AWS::EC2::VPCEndpoint").values()
    assert {e["Properties"]["VpcEndpointType"] for e in endpoints} == {"Gateway"}  # no hourly cost
    template("Dev-Service").has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "SecurityGroupEgress": [
                Match.object_like({"CidrIp": "0.0.0.0/0", "FromPort": 443, "ToPort": 443})
            ],
            "SecurityGroupIngress": Match.absent(),
        },
    )
    assert len(resources_of(service, "AWS::EC2::FlowLog")) == 1


def test_pass_role_names_only_the_task_and_execution_roles(templates):
    service = templates["Dev-Service"]
    (statement,) = _pass_role_statements(service)
    roles = sorted(r["Fn::GetAtt"][0] for r in statement["Resource"])
    assert len(roles) == 2 and all("RetrainingTrainTask" in r for r in roles)
    assert any("TaskRole" in r for r in roles) and any("ExecutionRole" in r for r in roles)


def test_the_task_role_reads_the_registry_and_never_writes_it(templates):
    service = templates["Dev-Service"]
    policies = [p for k, p in resources_of(service, "AWS::IAM::Policy").items() if "TrainTaskTaskRole" in k]
    actions = {a for policy in policies for s in _statements(policy) for a in _actions(s)}
    assert "dynamodb:GetItem" in actions or "dynamodb:Query" in actions
    assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "kms:Sign", "sns:Publish"} & actions


@pytest.fixture(scope="module")
def sagemaker_assembly(tmp_path_factory) -> Path:
    """The app with ``credit-decisions`` training on SageMaker (cdk-nag runs in the synth)."""
    from app import build_app

    models = json.loads((ROOT / "infra" / "models.json").read_text())
    for model in models:
        if model["name"] == MODEL:
            model["trainingCompute"] = "sagemaker"
    outdir = tmp_path_factory.mktemp("cdk.out.sagemaker")
    build_app(context={"sluice:models": models}, outdir=str(outdir)).synth()  # raises on a nag finding
    return outdir


def test_the_sagemaker_variant_synthesizes_a_training_job_sync_clean_of_cfn_lint_errors(sagemaker_assembly):
    (path,) = sagemaker_assembly.glob("assembly-Dev/DevService*.template.json")
    service = json.loads(path.read_text())
    states = _retraining_definition(service, MODEL)["States"]
    train = states["Train"]
    assert train["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    assert train["Parameters"]["AlgorithmSpecification"]["ContainerEntrypoint"] == TRAIN_ENTRY_POINT
    assert train["Next"] == "Collect"
    # SageMaker uploads the job's output where the job role may write: under the model's runs
    output = train["Parameters"]["OutputDataConfig"]["S3OutputPath"]
    assert f"/retraining/{MODEL}/sagemaker-output/" in json.dumps(output)
    job_policies = [p for k, p in resources_of(service, "AWS::IAM::Policy").items() if "TrainJobJobRole" in k]
    written = [
        json.dumps(s["Resource"])
        for policy in job_policies
        for s in _statements(policy)
        if "s3:PutObject" in _actions(s)
    ]
    assert written and all(f"/retraining/{MODEL}/*" in r for r in written)
    assert resources_of(service, "AWS::ECS::TaskDefinition") == {}
    (statement,) = _pass_role_statements(service)
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert "JobRole" in statement["Resource"]["Fn::GetAtt"][0]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [f for f in json.loads(result.stdout or "[]") if f["Level"] == "Error"]
    assert errors == []
