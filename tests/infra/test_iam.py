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
    # Pulling an image from ECR (the Fargate train task's execution role).
    "ecr:GetAuthorizationToken",
    # ecs:runTask.sync follows and stops a task whose ARN exists only at run time (CDK's grant).
    "ecs:DescribeTasks",
    "ecs:StopTask",
}
# batch/: the batch pipelines' runs (shards, scored shards, outputs) in the work bucket;
# capture/: batch-scored rows captured for monitoring; reports/ and labels/: the drift job's
# reports and the labels of concept-drift checks (labels/incoming/ drops, labels/model= stored). The partition may be a Ref: CDK's
# Distributed Map ItemReader/ResultWriter grants name the work bucket as arn:${AWS::Partition}.
OBJECT_KEY_WILDCARD = re.compile(
    r"^arn:(aws|<Ref>):s3:::sluice-(dev|prod)-[a-z-]+-\d{12}-[a-z0-9-]+/"
    r"(artifacts/|retraining/|datasets/|batch/|capture/|reports/|labels/|labels/incoming/|labels/model=|events/"
    r"|artifacts/[a-z0-9-]+/|events/[a-z0-9-]+/|retraining/[a-z0-9-]+/)?\*$"  # the last three: one model's
)
# Every route of the stage's own registry API (its resource policy keeps approve/reject to the approver).
API_ROUTES = re.compile(r"^arn:aws:execute-api:[a-z0-9-]+:\d{12}:<Ref>/\*/\*/\*$")
# Prod's promotion role: keys of the dev account, narrowed by condition (alias, via S3).
SOURCE_KEYS = re.compile(r"^arn:<Ref>:kms:[a-z0-9-]+:111111111111:key/\*$")
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
            elif (set(actions) <= MAP_CHILD_ACTIONS and MAP_CHILD_EXECUTIONS.match(resource)) or (
                actions == ["execute-api:Invoke"] and API_ROUTES.match(resource)
            ):
                continue
            elif set(actions) <= {"kms:Verify", "kms:Decrypt"} and SOURCE_KEYS.match(resource):
                assert logical_id.startswith("PromotionRole"), logical_id
                continue
            elif "*" in resource and not OBJECT_KEY_WILDCARD.match(resource):
                problems.append(f"{logical_id}: resource {resource}")
    assert problems == [], "\n".join(problems)


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
    assert _can_put_artifacts(dev, "RetrainingStepsRole")
    for reader in ("EndpointRole", "RolesMonitor", "RolesDeployer", "RegistryApiRole"):
        assert not _can_put_artifacts(dev, reader), reader


def test_prod_promotion_role_is_prods_own_function_role(templates):
    # Given the prod service stack
    roles = resources_of(templates["Prod-Service"], "AWS::IAM::Role")
    promotion = [r for r in roles.values() if r["Properties"].get("RoleName") == "sluice-prod-promotion"]
    assert len(promotion) == 1
    trust = promotion[0]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    # Then only Lambda, for a function of the prod account, assumes it: no dev principal
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
    assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": "222222222222"}}
    # And dev has no promotion role at all
    dev_roles = resources_of(templates["Dev-Service"], "AWS::IAM::Role").values()
    assert not [r for r in dev_roles if r["Properties"].get("RoleName", "").endswith("-promotion")]


def test_no_role_assumes_another(templates):
    # Promotion is a pull by prod's own function: no role of either stage may assume a role.
    assumes = [
        (stack, logical_id)
        for stack in SERVICE
        for logical_id, actions, _ in statements(templates[stack])
        if any(a.startswith("sts:") for a in actions)
    ]
    assert assumes == []


def test_people_roles_need_their_duty_tag_and_lambda_roles_lambda(templates):
    roles = resources_of(templates["Dev-Service"], "AWS::IAM::Role")
    trust = {k: roles[k]["Properties"]["AssumeRolePolicyDocument"]["Statement"] for k in roles}
    for duty in ("RetrainingStepsRole", "RolesMonitor"):  # the default model's retraining steps
        (found,) = [t for k, t in trust.items() if k.startswith(duty)]
        assert found[0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    for duty in ("Deployer", "Approver"):
        (found,) = [t for k, t in trust.items() if k.startswith(f"Roles{duty}")]
        assume = found[0]
        assert flatten(assume["Principal"]["AWS"]) == "arn:aws:iam::111111111111:root"
        assert assume["Condition"]["StringEquals"] == {"aws:PrincipalTag/sluice-duty": duty.lower()}
    (approver,) = [t for k, t in trust.items() if k.startswith("RolesApprover")]
    assert approver[0]["Condition"]["Null"] == {"sts:SourceIdentity": "false"}


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
