"""``local up``: the synthesized dev stage deployed onto the embedded local AWS."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from localaws.assembly import read_assembly
from localaws.bootstrap import VERSION_PARAMETER, assets_bucket, container_repository
from localaws.cloudformation import deploy, models
from localaws.cloudformation import support as cfn_support
from localaws.env import read_state
from localaws.patches import moto_symbol
from sluice.errors import NotFound, SluiceError

pytestmark = pytest.mark.local


def _dev_templates(assembly_dir: Path) -> dict[str, dict]:
    return {s.stack_name: s.template for s in read_assembly(assembly_dir) if s.stage == "Dev"}


def _verifiers(aws) -> dict:
    """Per resource type: a call that raises unless the physical resource exists in moto."""
    s3, ddb, lam, iam = aws.client("s3"), aws.client("dynamodb"), aws.client("lambda"), aws.client("iam")
    api, logs, kms = aws.client("apigateway"), aws.client("logs"), aws.client("kms")
    apis = {a["id"] for a in api.get_rest_apis()["items"]}

    def log_group(name: str) -> None:
        assert any(
            g["logGroupName"] == name for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        )

    def stage(name: str) -> None:
        assert any(name in {s["stageName"] for s in api.get_stages(restApiId=a)["item"]} for a in apis)

    return {
        "AWS::S3::Bucket": lambda pid: s3.head_bucket(Bucket=pid),
        "AWS::DynamoDB::Table": lambda pid: ddb.describe_table(TableName=pid),
        "AWS::Lambda::Function": lambda pid: lam.get_function(FunctionName=pid),
        "AWS::IAM::Role": lambda pid: iam.get_role(RoleName=pid),
        "AWS::KMS::Key": lambda pid: kms.describe_key(KeyId=pid),
        "AWS::Logs::LogGroup": log_group,
        "AWS::ApiGateway::RestApi": lambda pid: api.get_rest_api(restApiId=pid),
        "AWS::ApiGateway::Stage": stage,
        "AWS::SNS::Topic": lambda pid: aws.client("sns").get_topic_attributes(TopicArn=pid),
        "AWS::StepFunctions::StateMachine": lambda pid: aws.client("stepfunctions").describe_state_machine(
            stateMachineArn=pid
        ),
        "AWS::KinesisFirehose::DeliveryStream": lambda pid: aws.client("firehose").describe_delivery_stream(
            DeliveryStreamName=pid
        ),
    }


def test_every_template_resource_exists_in_moto_or_is_listed(local_aws, assembly_dir):
    # Given the dev stage's synthesized templates
    templates = _dev_templates(assembly_dir)
    expected = {
        (stack, lid): r["Type"] for stack, t in templates.items() for lid, r in t["Resources"].items()
    }
    # Then every resource was accounted for, once, with its type
    deployed = {(s.stack_name, r.logical_id): r for s in local_aws.deployed for r in s.resources}
    assert len(local_aws.resources) == len(expected) == len(deployed)
    assert {k: r.resource_type for k, r in deployed.items()} == expected
    kinds = Counter(r.support.split(" ")[0] for r in local_aws.resources)
    assert set(kinds) <= {"moto", "filled", "emulated", "ignored"}
    assert sum(kinds.values()) == len(expected)
    assert kinds["moto"] > 0 and kinds["filled"] > 0
    # And moto's CloudFormation holds every created (moto or filled) resource
    cfn = local_aws.client("cloudformation")
    for stack in templates:
        listed = {
            s["LogicalResourceId"]
            for s in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        }
        created = {
            lid for (name, lid), r in deployed.items() if name == stack and r.support in ("moto", "filled")
        }
        assert created <= listed, created - listed
    # And the resources of the main types really exist in their services
    verifiers = _verifiers(local_aws)
    checked = 0
    for resource in local_aws.resources:
        verify = verifiers.get(resource.resource_type)
        if verify is not None:
            verify(resource.physical_id)
            checked += 1
    assert checked >= 10


def test_support_table_matches_moto():
    from moto.cloudformation import parsing

    models.install()
    model_map = parsing.get_model_map()
    for resource_type, support in cfn_support.RESOURCE_SUPPORT.items():
        if support == "moto":
            assert not model_map[resource_type].__name__.startswith("Filled"), resource_type
        elif support in ("filled", "emulated"):
            assert model_map[resource_type].__name__.startswith("Filled"), resource_type
        else:
            assert support.startswith("ignored (") and support.endswith(")"), resource_type


def test_a_type_nobody_decided_on_fails_loudly():
    with pytest.raises(SluiceError, match="AWS::Made::Up"):
        cfn_support.support_of("AWS::Made::Up")


def test_bootstrap_and_assets(local_aws, assembly_dir):
    s3 = local_aws.client("s3")
    bucket = assets_bucket(local_aws.account, local_aws.region)
    assert int(local_aws.client("ssm").get_parameter(Name=VERSION_PARAMETER)["Parameter"]["Value"]) >= 6
    # Every file asset sits at the key its manifest names; image assets are tagged in ECR
    for stack in read_assembly(assembly_dir):
        if stack.stage != "Dev" or stack.assets_path is None:
            continue
        manifest = json.loads(stack.assets_path.read_text())
        for asset in manifest["files"].values():
            for dest in asset["destinations"].values():
                s3.head_object(Bucket=bucket, Key=dest["objectKey"])
        for image in manifest.get("dockerImages", {}).values():
            for dest in image["destinations"].values():
                ecr = local_aws.client("ecr")
                found = ecr.describe_images(
                    repositoryName=container_repository(local_aws.account, local_aws.region),
                    imageIds=[{"imageTag": dest["imageTag"]}],
                )
                assert found["imageDetails"]


def test_function_code_asset_is_the_zipped_lambdas_directory(local_aws):
    import io
    import zipfile

    # Given the registry API function and the code location its template names
    name = local_aws.physical_id("RegistryApiHandlerFunction", resource_type="AWS::Lambda::Function")
    code = local_aws.runtime.template_properties()[name]["Code"]
    assert code["S3Bucket"] == assets_bucket(local_aws.account, local_aws.region)
    # Then the published asset there is the zipped lambdas/ source root, without the emulator
    body = local_aws.client("s3").get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert "sluice/handlers/registry_api.py" in names
    assert not any(n.startswith("sluice/local/") for n in names)  # the emulator is outside lambdas/


def test_image_functions_run_their_cmd_from_source(local_aws):
    images = [
        r
        for r in local_aws.resources
        if r.resource_type == "AWS::Lambda::Function"
        and local_aws.client("lambda")
        .get_function(FunctionName=r.physical_id)["Configuration"]
        .get("PackageType")
        == "Image"
    ]
    for resource in images:
        fn, _ = local_aws.runtime.resolve(resource.physical_id, None)
        spec = local_aws.runtime.spec_for(fn)
        module = spec.handler.rpartition(".")[0]
        assert (Path(spec.code_root) / (module.replace(".", "/") + ".py")).is_file(), spec.handler


def test_outputs_state_file_and_lookups(local_aws):
    assert any(url.startswith("https://") for url in local_aws.outputs.values())
    assert os.environ["AWS_ENDPOINT_URL"] == local_aws.endpoint_url
    state = read_state(local_aws.state_dir)
    assert state["stage"] == "Dev" and state["account"] == local_aws.account
    assert sum(len(s["resources"]) for s in state["stacks"]) == len(local_aws.resources)
    assert state["apis"] and state["apis"][0]["url"].startswith("http://127.0.0.1:")
    with pytest.raises(NotFound, match="NoSuchThing"):
        local_aws.physical_id("NoSuchThing")


def test_dynamic_references_resolve(local_aws):
    body = json.dumps(
        {
            "Layers": ["{{resolve:ssm:/aws/service/powertools/python/arm64/python3.14/3.37.0}}"],
            "Version": f"{{{{resolve:ssm:{VERSION_PARAMETER}}}}}",
        }
    )
    resolved = json.loads(deploy.resolve_dynamic_references(body, region=local_aws.region))
    assert resolved["Layers"][0].startswith(f"arn:aws:lambda:{local_aws.region}:017000801446:layer:")
    assert resolved["Version"].isdigit()
    with pytest.raises(SluiceError, match="/not/there"):
        deploy.resolve_dynamic_references('"{{resolve:ssm:/not/there}}"', region=local_aws.region)


def test_unknown_stage_is_a_user_error(assembly_dir, tmp_path):
    from localaws import LocalAws

    with pytest.raises(SluiceError, match="Nope"):
        LocalAws.start(assembly_dir=assembly_dir, state_dir=tmp_path, stage="Nope")


def test_cli_up_background_status_down(assembly_dir, tmp_path):
    import subprocess
    import sys

    state_dir = tmp_path / "state"

    def sluice(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sluice", "local", *args, "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    # Given a local stage started in the background
    up = sluice("up", "--assembly", str(assembly_dir), "--background")
    assert up.returncode == 0, up.stderr
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in up.stdout
    try:
        # Then status reports it running, and a second up is a one-line user error
        status = sluice("status")
        assert status.returncode == 0 and "running" in status.stdout
        # and `local env` prints what other tools need, as export lines
        exports = sluice("env")
        assert exports.returncode == 0, exports.stderr
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "SLUICE_REGISTRY_TABLE", "SLUICE_ENDPOINT_URL"):
            assert f"export {name}=" in exports.stdout
        assert "/dev" in exports.stdout  # the API's real stage path
        again = sluice("up", "--assembly", str(assembly_dir))
        assert again.returncode == 2 and again.stderr.startswith("sluice: error: a local stage already runs")
    finally:
        down = sluice("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "stopped" in sluice("status").stdout


def test_data_is_saved_and_restored_by_logical_id(local_aws):
    from localaws.persistence import restore_data, save_data

    # Given an object in a stage bucket and an item in a stage table
    bucket = local_aws.physical_id("Capture", resource_type="AWS::S3::Bucket")
    table = local_aws.physical_id("RegistryTable", resource_type="AWS::DynamoDB::Table")
    s3, ddb = local_aws.client("s3"), local_aws.client("dynamodb")
    s3.put_object(Bucket=bucket, Key="capture/a/b.json", Body=b'{"x": 1}')
    keys = [k["AttributeName"] for k in ddb.describe_table(TableName=table)["Table"]["KeySchema"]]
    item = {k: {"S": f"snapshot-test-{k}"} for k in keys} | {"note": {"S": "kept"}}
    ddb.put_item(TableName=table, Item=item)
    # When the data is saved, deleted, and restored
    save_data(local_aws)
    s3.delete_object(Bucket=bucket, Key="capture/a/b.json")
    ddb.delete_item(TableName=table, Key={k: item[k] for k in keys})
    assert restore_data(local_aws) >= 2
    # Then both are back
    assert s3.get_object(Bucket=bucket, Key="capture/a/b.json")["Body"].read() == b'{"x": 1}'
    assert ddb.get_item(TableName=table, Key={k: item[k] for k in keys})["Item"]["note"] == {"S": "kept"}


def test_fillers_create_what_moto_cloudformation_skips(local_aws, tmp_path):
    from localaws.assembly import StackArtifact
    from tests.local.conftest import create_tiny_function

    # Given a template with the resource types moto's CloudFormation skips
    function = create_tiny_function(local_aws)
    lam = local_aws.client("lambda")
    lam.publish_version(FunctionName=function)
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": {"COLOUR": "green"}})
    template = {
        "Resources": {
            "V2": {"Type": "AWS::Lambda::Version", "Properties": {"FunctionName": function}},
            "Live": {
                "Type": "AWS::Lambda::Alias",
                "Properties": {
                    "FunctionName": function,
                    "Name": "live",
                    "FunctionVersion": "1",
                    "RoutingConfig": {
                        "AdditionalVersionWeights": [
                            {"FunctionVersion": {"Fn::GetAtt": ["V2", "Version"]}, "FunctionWeight": 0.25}
                        ]
                    },
                },
            },
            "Errors": {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {
                    "AlarmName": "tiny-errors",
                    "Namespace": "AWS/Lambda",
                    "MetricName": "Errors",
                    "Dimensions": [{"Name": "FunctionName", "Value": function}],
                    "Statistic": "Sum",
                    "Period": 60,
                    "EvaluationPeriods": 1,
                    "Threshold": 1,
                    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "AlarmActions": [],
                },
            },
            "Group": {
                "Type": "AWS::CodeDeploy::DeploymentGroup",
                "Properties": {"ApplicationName": "tiny", "DeploymentGroupName": "tiny-group"},
            },
        },
        "Outputs": {
            "Alias": {"Value": {"Ref": "Live"}},
            "Second": {"Value": {"Fn::GetAtt": ["V2", "Version"]}},
        },
    }
    path = tmp_path / "Fillers.template.json"
    path.write_text(json.dumps(template))
    stack = StackArtifact("Fillers", "Dev-Fillers", "Dev", local_aws.account, local_aws.region, path, None)
    # When it is deployed
    deployed = deploy.deploy_stack(stack)
    # Then the alias exists with its weights, the alarm exists, and CodeDeploy is recorded
    assert deployed.outputs["Alias"].endswith(f":function:{function}:live")
    alias = local_aws.client("lambda").get_alias(FunctionName=function, Name="live")
    assert alias["FunctionVersion"] == "1"
    assert deployed.outputs["Second"] == "2"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.25}
    assert local_aws.invoke(function, qualifier="2").json()["colour"] == "green"
    alarms = local_aws.client("cloudwatch").describe_alarms(AlarmNames=["tiny-errors"])["MetricAlarms"]
    assert alarms and alarms[0]["Threshold"] == 1.0
    [group] = [
        r
        for r in cfn_support.emulated_resources("AWS::CodeDeploy::DeploymentGroup")
        if r.stack_name == "Dev-Fillers"
    ]
    assert group.properties["DeploymentGroupName"] == "tiny-group"
    assert {r.support for r in deployed.resources} == {"filled", "emulated"}


def test_cloudformation_patches_fail_loudly_when_moto_moves(monkeypatch):
    from moto.apigateway.models import Method
    from moto.cloudformation import parsing

    # A moved module attribute is named
    monkeypatch.delattr(parsing, "get_model_map")
    with pytest.raises(RuntimeError, match=r"moto\.cloudformation\.parsing\.get_model_map is gone"):
        moto_symbol("moto.cloudformation.parsing.get_model_map")
    # And so is a moved model method the patches wrap
    monkeypatch.delattr(Method, "create_from_cloudformation_json")
    with pytest.raises(RuntimeError, match=r"Method\.create_from_cloudformation_json is gone"):
        models.METHOD_REQUEST_MODELS.apply()


def test_directory_assets_are_zipped_once_per_content_hash(tmp_path, monkeypatch):
    import io
    import zipfile

    from localaws import bootstrap

    monkeypatch.setenv("SLUICE_LOCAL_ASSET_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "asset"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    first = bootstrap._cached_zip(source, "abc123")
    assert (tmp_path / "cache" / "abc123.zip").read_bytes() == first
    assert zipfile.ZipFile(io.BytesIO(first)).read("pkg/mod.py") == b"X = 1\n"
    (source / "pkg" / "mod.py").write_text("X = 2\n")  # same hash means same content: cache wins
    assert bootstrap._cached_zip(source, "abc123") == first
    assert bootstrap.zip_directory(source) == bootstrap.zip_directory(source)  # deterministic
