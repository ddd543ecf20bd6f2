"""The model endpoint: function + live alias, validated IAM REST API, alarms, CodeDeploy, both flavours."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from infra.constructs.endpoint import SCORING_LAYER_DIR, Endpoint, request_json_schema
from infra.constructs.registry import Registry
from infra.model_schemas import load_feature_schema, load_request_schema
from tests.infra.conftest import SESSION_MODELS, model_resources, resources_of

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ["Dev-Service", "Prod-Service"]
DEFAULT_MODEL = SESSION_MODELS[0]  # credit-risk, the zip flavour
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def endpoint_function(templates, stack: str, model: str = DEFAULT_MODEL) -> tuple[str, dict]:
    functions = model_resources(templates[stack], "AWS::Lambda::Function", model)
    found = [
        (k, r)
        for k, r in functions.items()
        if r["Properties"].get("Handler") == "sluice.handlers.score.lambda_handler"
        or r["Properties"].get("ImageConfig", {}).get("Command") == ["sluice.handlers.score.lambda_handler"]
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("stack", SERVICE)
def test_zip_endpoint_function_serves_onnx_with_the_scoring_layer(templates, stack):
    _, function = endpoint_function(templates, stack)
    props = function["Properties"]
    env = props["Environment"]["Variables"]
    assert env["SLUICE_MODEL_FLAVOUR"] == "onnx"
    assert env["SLUICE_MODEL_NAME"] == "credit-risk"
    assert "SLUICE_MODEL_VERSION" not in env  # bound per Lambda version by `sluice endpoint deploy`
    assert {"SLUICE_REGISTRY_TABLE", "SLUICE_REGISTRY_BUCKET", "SLUICE_CAPTURE_STREAM"} <= set(env)
    assert props["FunctionName"] == f"sluice-{stack.split('-')[0].lower()}-credit-risk-endpoint"
    assert props["Architectures"] == ["arm64"] and props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["Layers"]) == 2  # Powertools + numpy/ONNX Runtime


@pytest.mark.parametrize("model", SESSION_MODELS)
@pytest.mark.parametrize("stack", SERVICE)
def test_live_alias_on_one_cdk_version(template, templates, stack, model):
    aliases = model_resources(templates[stack], "AWS::Lambda::Alias", model)
    live = [a for a in aliases.values() if a["Properties"]["Name"] == "live"]
    assert len(live) == 1
    version_ref = live[0]["Properties"]["FunctionVersion"]
    assert "Fn::GetAtt" in version_ref and version_ref["Fn::GetAtt"][1] == "Version"
    # CodeDeploy owns alias updates made through CloudFormation
    assert "CodeDeployLambdaAliasUpdate" in live[0]["UpdatePolicy"]


@pytest.mark.parametrize("model", SESSION_MODELS)
@pytest.mark.parametrize("stack", SERVICE)
def test_predict_route_requires_iam_and_validates_the_body(templates, stack, model):
    template = templates[stack]
    methods = [
        m
        for m in model_resources(template, "AWS::ApiGateway::Method", model).values()
        if m["Properties"]["HttpMethod"] == "POST"
        and "RequestModels" in m["Properties"]
        and "ScoringRequest" in json.dumps(m["Properties"]["RequestModels"])
    ]
    assert len(methods) == 1
    method = methods[0]["Properties"]
    assert method["AuthorizationType"] == "AWS_IAM"
    assert "RequestValidatorId" in method
    # The integration targets the live alias, not $LATEST
    uri = json.dumps(method["Integration"]["Uri"])
    assert "EndpointLive" in uri
    validators = resources_of(template, "AWS::ApiGateway::RequestValidator").values()
    assert any(v["Properties"].get("ValidateRequestBody") for v in validators)


@pytest.mark.parametrize("stack", SERVICE)
def test_request_model_is_the_feature_schema(templates, stack):
    models = [
        m
        for m in model_resources(templates[stack], "AWS::ApiGateway::Model", DEFAULT_MODEL).values()
        if m["Properties"].get("Name") == "ScoringRequest"
    ]
    assert len(models) == 1
    schema = models[0]["Properties"]["Schema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    instance = schema["properties"]["instances"]["items"]
    feature_schema = load_feature_schema("credit-risk")
    assert set(instance["properties"]) == {f["name"] for f in feature_schema["features"]}
    assert instance["properties"]["region"]["enum"] == ["east", "north", "south", "west"]
    assert schema["properties"]["instances"]["maxItems"] == 10_000


def test_envelope_schema_without_a_feature_schema():
    schema = request_json_schema(None)
    assert schema["required"] == ["instances"]
    assert schema["properties"]["instances"]["items"] == {"type": "object"}


@pytest.mark.parametrize("stack", SERVICE)
def test_stage_is_throttled_and_logged(template, stack):
    template(stack).has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "Description": Match.absent(),
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": Match.array_with(
                [Match.object_like({"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100})]
            ),
        },
    )


@pytest.mark.parametrize("model", SESSION_MODELS)
@pytest.mark.parametrize("stack", SERVICE)
def test_canary_deployment_group_rolls_back_on_alarms(templates, stack, model):
    template = templates[stack]
    groups = list(model_resources(template, "AWS::CodeDeploy::DeploymentGroup", model).values())
    assert len(groups) == 1
    group = groups[0]["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert len(group["AlarmConfiguration"]["Alarms"]) == 4
    assert set(group["AutoRollbackConfiguration"]["Events"]) >= {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
    }


@pytest.mark.parametrize("model", SESSION_MODELS)
@pytest.mark.parametrize("stack", SERVICE)
def test_alarms_watch_the_metrics_the_handler_emits(templates, stack, model):
    # The handler's model-level EMF line has dimensions Model and service (POWERTOOLS_SERVICE_NAME).
    _, function = endpoint_function(templates, stack, model)
    service = function["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    alarms = [
        a["Properties"]
        for a in model_resources(templates[stack], "AWS::CloudWatch::Alarm", model).values()
        if a["Properties"].get("Namespace") == "Sluice/Endpoint"
    ]
    assert {a["MetricName"] for a in alarms} == {"Errors", "Latency", "PositiveProbability"}
    for alarm in alarms:
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
            "Model": model,
            "service": service,
        }
        assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("stack", SERVICE)
def test_deployer_may_move_the_alias_but_nothing_broader(templates, stack):
    template = templates[stack]
    roles = resources_of(template, "AWS::IAM::Role")
    deployer = next(k for k, r in roles.items() if r["Properties"].get("RoleName", "").endswith("-deployer"))
    actions = set()
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        if {"Ref": deployer} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                listed = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                actions |= {a for a in listed if a.startswith("lambda:")}
    assert {"lambda:UpdateAlias", "lambda:PublishVersion", "lambda:UpdateFunctionConfiguration"} <= actions
    assert not any("*" in a for a in actions)


def _asset_size(root: Path, exclude: list[str]) -> int:
    total = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(
            fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(f"/{rel}", f"*/{pattern}") for pattern in exclude
        ):
            continue
        total += path.stat().st_size
    return total


def test_zip_flavour_fits_the_250_mb_unzipped_limit():
    # Function code (lambdas/ as runtime.lambda_code stages it) + scoring layer + Powertools layer
    import aws_lambda_powertools

    code = _asset_size(
        ROOT / "lambdas",
        ["*__pycache__*", "*.pyc", "*.egg-info*"],
    )
    layer = _asset_size(SCORING_LAYER_DIR, [])
    powertools = _asset_size(Path(aws_lambda_powertools.__file__).parent, ["*__pycache__*"])
    assert layer > 50 * 1024 * 1024  # numpy + onnxruntime really are in it
    total = code + layer + powertools
    print(
        f"zip flavour unzipped: code {code / 2**20:.1f} MB + layer {layer / 2**20:.1f} MB "
        f"+ powertools {powertools / 2**20:.1f} MB = {total / 2**20:.1f} MB"
    )
    assert total < LAMBDA_UNZIPPED_LIMIT
    # And nothing of scikit-learn, scipy or pandas sneaked into the layer
    names = {p.name for p in (SCORING_LAYER_DIR / "python").iterdir()}
    assert not names & {"sklearn", "scipy", "pandas", "joblib"}


# --- the container flavour -----------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def test_dockerfile_is_pinned_and_compiles_bytecode():
    dockerfile = (ROOT / "containers/scoring/Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert base.startswith("public.ecr.aws/lambda/python:3.14") and base.endswith("-arm64")
    assert "FROM ${BASE_IMAGE}" in dockerfile
    assert "COPY lambdas/ ${LAMBDA_TASK_ROOT}/" in dockerfile
    assert "python -m compileall" in dockerfile
    assert 'CMD ["sluice.handlers.score.lambda_handler"]' in dockerfile
    assert "--only-binary=:all:" in dockerfile


def test_container_requirements_match_requirements_txt():
    image = _pins(ROOT / "containers/scoring/requirements.txt")
    dev = _pins(ROOT / "requirements.txt")
    shared = ("numpy", "scipy", "scikit-learn", "joblib", "pandas", "skops", "aws-lambda-powertools", "boto3")
    for package in (*shared, "botocore"):
        assert image[package] == dev[package], package
    import importlib.metadata as md

    for package, version in image.items():  # transitive pins equal what the tests ran with
        assert md.version(package) == version, package


def test_dockerignore_sends_only_the_runtime_package():
    rules = (ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*"
    assert {"!lambdas/", "!containers/"} <= set(rules)


def test_container_flavour_with_api_key_synthesizes_without_docker(tmp_path):
    # Given an endpoint of the container flavour with an API key, in its own app
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe", env=cdk.Environment(account="111111111111", region="eu-west-1"))
    logs = s3.Bucket(stack, "Logs")
    registry = Registry(
        stack,
        "Registry",
        bucket_name="probe-artifacts",
        table_name="probe-registry",
        retain=False,
        access_logs=logs,
    )
    endpoint = Endpoint(
        stack,
        "Endpoint",
        registry=registry,
        capture=None,
        model_name="probe",
        flavour="container",
        request_schema=load_request_schema("credit-risk"),
        api_key=True,
        quota_per_day=10_000,
    )
    # When synthesized (no Docker engine here), then the image function and usage plan exist
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "SLUICE_MODEL_FLAVOUR": "sklearn",
                        # what deploy compares a fitted model's recorded scikit-learn with
                        "SLUICE_SERVING_LIBRARIES": json.dumps(
                            {
                                "scikit-learn": _pins(ROOT / "containers/scoring/requirements.txt")[
                                    "scikit-learn"
                                ]
                            },
                            separators=(",", ":"),
                        ),
                    }
                )
            },
        },
    )
    template.resource_count_is("AWS::Lambda::LayerVersion", 0)
    template.has_resource_properties(
        "AWS::ApiGateway::Method", {"ApiKeyRequired": True, "HttpMethod": "POST"}
    )
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan", {"Quota": {"Limit": 10_000, "Period": "DAY"}}
    )
    assert endpoint.layer is None and endpoint.api_key is not None
    # And the image asset is built from containers/scoring/Dockerfile with the repo root as context
    assembly = app.synth()
    manifest = json.loads(next(Path(assembly.directory).glob("*.assets.json")).read_text())
    images = list(manifest["dockerImages"].values())
    assert images[0]["source"]["dockerFile"] == "containers/scoring/Dockerfile"
    assert images[0]["source"]["platform"] == "linux/arm64"
