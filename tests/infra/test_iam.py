"""IAM: non-personal roles per duty, least privilege, no wildcard that grant_* did not produce."""

from __future__ import annotations

import json
import re

import pytest

from infra.constructs.nag import GRANT_ACTION_WILDCARDS
from tests.infra.conftest import resources_of

SERVICE = ["Dev-Service", "Prod-Service"]
# Actions AWS only supports on resource "*".
STAR_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData",
    # Step Functions log delivery to CloudWatch Logs (vended logs API).
    "logs:CreateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:DescribeLogGroups",
    "logs:DescribeResourcePolicies",
    "logs:GetLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:UpdateLogDelivery",
}
# batch/: the batch pipelines' runs (shards, scored shards, outputs) in the work bucket;
# capture/: batch-scored rows captured for monitoring; reports/ and labels/: the drift job's
# reports and the labels of concept-drift checks (labels/incoming/ drops, labels/model= stored). The partition may be a Ref: CDK's
# Distributed Map ItemReader/ResultWriter grants name the work bucket as arn:${AWS::Partition}.
OBJECT_KEY_WILDCARD = re.compile(
    r"^arn:(aws|<Ref>):s3:::sluice-(dev|prod)-[a-z-]+-\d{12}-[a-z0-9-]+/"
    r"(artifacts/|retraining/|datasets/|batch/|capture/|reports/|labels/|labels/incoming/|labels/model=)?\*$"
)
# A Distributed Map describes, stops and redrives its own child executions (ids generated per run).
MAP_CHILD_ACTIONS = {"states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"}
MAP_CHILD_EXECUTIONS = re.compile(r"^arn:aws:states:[a-z0-9-]+:\d{12}:execution:<Select>(/\*)?:\*$")


def flatten(value) -> str:
    """A readable string for a policy resource (tokens shown as <Ref>, <GetAtt>, <Import>)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        (key, arg), *_ = value.items()
        if key == "Fn::Join":
            return arg[0].join(flatten(part) for part in arg[1])
        return f"<{key.removeprefix('Fn::')}>"
    return json.dumps(value)


def statements(template: dict):
    for logical_id, policy in resources_of(template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            yield logical_id, actions, [flatten(r) for r in resources]


@pytest.mark.parametrize("stack", SERVICE)
def test_wildcards_are_only_those_grants_produce(templates, stack):
    problems = []
    for logical_id, actions, resources in statements(templates[stack]):
        for action in actions:
            if "*" in action and action not in GRANT_ACTION_WILDCARDS:
                problems.append(f"{logical_id}: action {action}")
        for resource in resources:
            if resource == "*":
                if not set(actions) <= STAR_RESOURCE_ACTIONS:
                    problems.append(f"{logical_id}: resource * for {actions}")
            elif actions == ["lambda:InvokeFunction"] and resource == "<GetAtt>:*":
                continue  # any version or alias of one function (Step Functions tasks)
            elif set(actions) <= MAP_CHILD_ACTIONS and MAP_CHILD_EXECUTIONS.match(resource):
                continue
            elif "*" in resource and not OBJECT_KEY_WILDCARD.match(resource):
                problems.append(f"{logical_id}: resource {resource}")
    assert problems == []


@pytest.mark.parametrize("stack", [*SERVICE, "Dev-Stateful", "Prod-Stateful"])
def test_no_personal_credentials(templates, stack):
    types = {r["Type"] for r in templates[stack]["Resources"].values()}
    assert not types & {"AWS::IAM::User", "AWS::IAM::AccessKey", "AWS::IAM::Group"}


def _role_policies(template: dict, role_fragment: str) -> list[tuple[list[str], list[str]]]:
    out = []
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if any(role_fragment in r for r in roles):
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                resources = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                out.append((actions, [flatten(r) for r in resources]))
    return out


def _can_put_artifacts(template: dict, role_fragment: str) -> bool:
    return any(
        any(a.startswith("s3:PutObject") for a in actions) and any("-artifacts-" in r for r in resources)
        for actions, resources in _role_policies(template, role_fragment)
    )


def test_only_the_training_role_writes_artifacts(templates):
    dev = templates["Dev-Service"]
    assert _can_put_artifacts(dev, "RolesTraining")
    for reader in ("EndpointRole", "RolesMonitor", "RolesDeployer", "RegistryApiRole"):
        assert not _can_put_artifacts(dev, reader), reader


def test_prod_promotion_role_trusts_only_the_dev_deployer(templates):
    # Given the prod service stack
    roles = resources_of(templates["Prod-Service"], "AWS::IAM::Role")
    promotion = [r for r in roles.values() if r["Properties"].get("RoleName") == "sluice-prod-promotion"]
    assert len(promotion) == 1
    trust = promotion[0]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    # Then exactly one principal may assume it: the dev account's deployer role
    assert [s["Principal"] for s in trust] == [{"AWS": "arn:aws:iam::111111111111:role/sluice-dev-deployer"}]
    # And dev has no promotion role at all
    dev_roles = resources_of(templates["Dev-Service"], "AWS::IAM::Role").values()
    assert not [r for r in dev_roles if r["Properties"].get("RoleName", "").endswith("-promotion")]


def test_only_the_dev_deployer_may_assume_into_prod(templates):
    # Every cross-account AssumeRole in either stage
    assumes = [
        (stack, logical_id, resources)
        for stack in SERVICE
        for logical_id, actions, resources in statements(templates[stack])
        if "sts:AssumeRole" in actions
    ]
    # is the dev deployer's, on exactly the prod promotion role
    assert len(assumes) == 1
    stack, logical_id, resources = assumes[0]
    assert stack == "Dev-Service" and "Deployer" in logical_id
    assert resources == ["arn:aws:iam::222222222222:role/sluice-prod-promotion"]


def test_duty_roles_are_assumed_by_lambda_and_deployer_by_the_account(templates):
    roles = resources_of(templates["Dev-Service"], "AWS::IAM::Role")
    principals = {
        logical_id: roles[logical_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        for logical_id in roles
    }
    for duty in ("Training", "Monitor"):
        (found,) = [p for k, p in principals.items() if k.startswith(f"Roles{duty}")]
        assert found == {"Service": "lambda.amazonaws.com"}
    (deployer,) = [p for k, p in principals.items() if k.startswith("RolesDeployer")]
    assert flatten(deployer["AWS"]) == "arn:aws:iam::111111111111:root"


@pytest.mark.parametrize("stack", SERVICE)
def test_functions_run_current_python_on_arm64(templates, stack):
    functions = resources_of(templates[stack], "AWS::Lambda::Function").values()
    assert functions
    for function in functions:
        properties = function["Properties"]
        assert properties["Architectures"] == ["arm64"]
        # Zip functions name a current runtime; image functions carry theirs in the image.
        if properties.get("PackageType") != "Image":
            assert re.match(r"^python3\.1[2-9]$", properties["Runtime"])
