"""Deploy synthesized CDK templates onto moto's CloudFormation.

The stacks are created by moto's own ``CreateStack`` from the synthesized template bodies,
so references, ``Fn::ImportValue`` across stacks, parameters and outputs behave as they do
in AWS. Before the body is sent, ``{{resolve:ssm:...}}`` dynamic references are resolved
(moto does not), using the local SSM or, for AWS public parameters such as the Powertools
layer ARN, a fixed local value. What moto's CloudFormation skips is filled by the models of
:mod:`localaws.cloudformation.models`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from localaws.assembly import StackArtifact
from localaws.cloudformation.models import install
from localaws.cloudformation.support import support_of
from sluice import aws
from sluice.errors import SluiceError

# A failed CreateStack must not be retried: it would create the stack's resources twice.
NO_RETRY = Config(retries={"max_attempts": 0}, read_timeout=300)


# --------------------------------------------------------------------------- templates

_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:(ssm|ssm-secure|secretsmanager):([^}]+)\}\}")
_POWERTOOLS_PARAMETER = re.compile(
    r"^/aws/service/powertools/python/(?P<arch>[^/]+)/(?P<runtime>[^/]+)/(?P<version>[^/]+)$"
)


def resolve_dynamic_references(body: str, *, region: str) -> str:
    """Replace ``{{resolve:ssm:name}}`` (and secretsmanager) references in a template body.

    AWS public parameters under ``/aws/service/`` cannot be written to moto's SSM; the
    Powertools layer parameter resolves to the public layer's ARN shape. Locally, layers do
    not run: workers use the packages installed next to Sluice.
    """

    def resolve(match: re.Match) -> str:
        service, reference = match.group(1), match.group(2)
        if service == "secretsmanager":
            secret_id = reference.split(":SecretString:")[0]
            return aws.client("secretsmanager", region=region).get_secret_value(SecretId=secret_id)[
                "SecretString"
            ]
        name = reference.rsplit(":", 1)[0] if re.search(r":\d+$", reference) else reference
        public = _POWERTOOLS_PARAMETER.match(name)
        if public:
            runtime = public["runtime"].replace(".", "")
            return (
                f"arn:aws:lambda:{region}:017000801446:layer:"
                f"AWSLambdaPowertoolsPythonV3-{runtime}-{public['arch']}:1"
            )
        ssm = aws.client("ssm", region=region)
        try:
            return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            raise SluiceError(
                f"template references SSM parameter {name}, which does not exist locally"
            ) from None

    return _DYNAMIC_REFERENCE.sub(resolve, body)


@dataclass(frozen=True)
class DeployedResource:
    logical_id: str
    resource_type: str
    physical_id: str
    support: str


@dataclass(frozen=True)
class DeployedStack:
    stack_name: str
    stack_id: str
    outputs: dict[str, str]
    resources: tuple[DeployedResource, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack_name": self.stack_name,
            "stack_id": self.stack_id,
            "outputs": self.outputs,
            "resources": [r.__dict__ for r in self.resources],
        }


def deploy_stack(stack: StackArtifact) -> DeployedStack:
    """Create one synthesized stack with moto's CloudFormation and describe what exists.

    Raises
    ------
    SluiceError
        If a resource type has no local support, or CloudFormation rejects the template.
    """
    install()
    template = stack.template
    for _logical_id, resource in template.get("Resources", {}).items():
        support_of(resource["Type"])  # fail before creating anything
    body = resolve_dynamic_references(json.dumps(template), region=stack.region)
    cfn = aws.client("cloudformation", region=stack.region, config=NO_RETRY)
    try:
        created = cfn.create_stack(
            StackName=stack.stack_name,
            TemplateBody=body,
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            Tags=[{"Key": "sluice:local", "Value": "true"}],
        )
    except cfn.exceptions.ClientError as err:
        raise SluiceError(f"local CloudFormation rejected stack {stack.stack_name}: {err}") from err
    described = cfn.describe_stacks(StackName=stack.stack_name)["Stacks"][0]
    if described["StackStatus"] != "CREATE_COMPLETE":
        raise SluiceError(
            f"stack {stack.stack_name} ended in {described['StackStatus']}: {described.get('StackStatusReason')}"
        )
    summaries = cfn.list_stack_resources(StackName=stack.stack_name)["StackResourceSummaries"]
    physical = {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries}
    resources = tuple(
        DeployedResource(
            logical_id=logical_id,
            resource_type=resource["Type"],
            physical_id=str(physical.get(logical_id, "")),
            support=support_of(resource["Type"]),
        )
        for logical_id, resource in template.get("Resources", {}).items()
    )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
    return DeployedStack(stack.stack_name, created["StackId"], outputs, resources)
