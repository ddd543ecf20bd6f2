"""Synthesized templates → a :class:`tests.security.iam_sim.Simulator`.

:class:`Resolver` computes what IAM needs of CloudFormation values, per stack (its account and
region from the stack's environment):

- ``Ref``: pseudo parameters (``AWS::AccountId``, ``AWS::Region``, ``AWS::Partition`` = ``aws``,
  ``AWS::URLSuffix`` = ``amazonaws.com``, ``AWS::StackName``); a resource's physical name
  (``RoleName``, ``BucketName``, ``TableName``...), or ``<stack>-<LogicalId>`` where the template
  leaves the name to CloudFormation (lower case for buckets); an ARN for the types whose ``Ref``
  is one (topics, state machines, managed policies, Lambda aliases); the logical ID as the
  id of KMS keys and API Gateway resources.
- ``Fn::GetAtt`` ``Arn`` (and ``TopicArn``, ``KeyId``) of roles, buckets, tables, keys
  (``arn:aws:kms:<region>:<account>:key/<LogicalId>``), functions, topics, state machines, log
  groups, rules, delivery streams and queues.
- ``Fn::Join``, ``Fn::Sub`` (both forms), ``Fn::Select``, ``Fn::Split`` and ``Fn::ImportValue``
  (the export of any stack given, resolved in its own stack).

``AWS::KMS::Alias`` resources give their key's ``kms:ResourceAliases``.

Anything else (``Fn::If``, a parameter, an attribute not listed) becomes a token
(:data:`~tests.security.iam_sim.TOKEN`) that matches nothing, never ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.security.iam_sim import TOKEN, Simulator, Statement, parse_policy

PSEUDO = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
NAME_PROPERTY = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Events::Rule": "Name",
    "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::ApiGateway::Stage": "StageName",
    "AWS::KMS::Alias": "AliasName",
    "AWS::ECS::TaskDefinition": "Family",
}
ARN_FORMAT = {
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::IAM::ManagedPolicy": "arn:aws:iam::{account}:policy/{name}",
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    "AWS::StepFunctions::StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
    "AWS::Events::Rule": "arn:aws:events:{region}:{account}:rule/{name}",
    "AWS::KinesisFirehose::DeliveryStream": "arn:aws:firehose:{region}:{account}:deliverystream/{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    # Ref is the ARN of the revision the stack deployed; the first deployment's is 1.
    "AWS::ECS::TaskDefinition": "arn:aws:ecs:{region}:{account}:task-definition/{name}:1",
}
REF_IS_ARN = {
    "AWS::SNS::Topic",
    "AWS::StepFunctions::StateMachine",
    "AWS::IAM::ManagedPolicy",
    "AWS::ECS::TaskDefinition",
}
ARN_ATTRIBUTES = {"Arn", "TopicArn"}


def token(description: str) -> str:
    """An unresolvable value: never equal to, nor matched by, any request value."""
    return f"{TOKEN}{re.sub(r'[^A-Za-z0-9_.()-]', '_', description)}{TOKEN}"


@dataclass(frozen=True)
class StackInput:
    """What the simulator needs of a stack (``localaws.assembly.StackArtifact`` has these too)."""

    stack_name: str
    account: str
    region: str
    template: dict


class Resolver:
    """Resolves CloudFormation values of several stacks (cross-stack imports included)."""

    def __init__(self, stacks: Iterable[Any]) -> None:
        self.stacks = {
            s.stack_name: StackInput(s.stack_name, s.account, s.region, s.template) for s in stacks
        }
        self._exports: dict[str, tuple[str, Any]] = {}
        for stack in self.stacks.values():
            for output in stack.template.get("Outputs", {}).values():
                if "Export" in output:
                    name = self.resolve(stack.stack_name, output["Export"]["Name"])
                    self._exports[name] = (stack.stack_name, output["Value"])

    def resource(self, stack: str, logical_id: str) -> dict:
        return self.stacks[stack].template.get("Resources", {}).get(logical_id, {})

    def resolve(self, stack: str, value: Any) -> Any:
        """``value`` with every intrinsic replaced by a string (or list, for ``Fn::Split``)."""
        if isinstance(value, list):
            return [self.resolve(stack, v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" or key.startswith("Fn::"):
                return self._intrinsic(stack, key, arg)
        return {k: self.resolve(stack, v) for k, v in value.items()}

    def _intrinsic(self, stack: str, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self.ref(stack, arg)
        if key == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.get_att(stack, logical_id, attribute)
        if key == "Fn::Join":
            delimiter, parts = arg
            resolved = self.resolve(stack, parts)
            if not isinstance(resolved, list):
                return token("Join")
            return delimiter.join(str(p) for p in resolved)
        if key == "Fn::Sub":
            return self._sub(stack, arg)
        if key == "Fn::Split":
            delimiter, source = arg
            return str(self.resolve(stack, source)).split(delimiter)
        if key == "Fn::Select":
            index, items = arg
            items = self.resolve(stack, items)
            if isinstance(items, list) and int(index) < len(items) and TOKEN not in str(items[int(index)]):
                return items[int(index)]
            return token("Select")
        if key == "Fn::ImportValue":
            name = self.resolve(stack, arg)
            if name in self._exports:
                source, expression = self._exports[name]
                return self.resolve(source, expression)
            return token(f"Import({name})")
        return token(key.removeprefix("Fn::"))

    def _sub(self, stack: str, arg: Any) -> str:
        template, variables = (arg, {}) if isinstance(arg, str) else arg
        variables = {k: self.resolve(stack, v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return str(self.get_att(stack, logical_id, attribute))
            return str(self.ref(stack, name))

        return re.sub(r"\$\{([^}]+)\}", replace, template)

    def ref(self, stack: str, name: str) -> str:
        info = self.stacks[stack]
        if name == "AWS::AccountId":
            return info.account
        if name == "AWS::Region":
            return info.region
        if name == "AWS::StackName":
            return info.stack_name
        if name in PSEUDO:
            return PSEUDO[name]
        resource = self.resource(stack, name)
        type_ = resource.get("Type", "")
        if not type_:
            return token(f"Ref({name})")
        if type_ in REF_IS_ARN:
            return self.get_att(stack, name, "Arn")
        if type_ == "AWS::Lambda::Alias":
            function = str(self.resolve(stack, resource["Properties"]["FunctionName"]))
            if not function.startswith("arn:"):
                function = ARN_FORMAT["AWS::Lambda::Function"].format(
                    account=info.account, region=info.region, name=function
                )
            return f"{function}:{self.resolve(stack, resource['Properties']['Name'])}"
        if type_ in NAME_PROPERTY:
            return self.physical_name(stack, name)
        if type_ == "AWS::KMS::Key" or type_.startswith("AWS::ApiGateway::"):
            return name
        return token(f"Ref({name})")

    def physical_name(self, stack: str, logical_id: str) -> str:
        resource = self.resource(stack, logical_id)
        prop = NAME_PROPERTY.get(resource.get("Type", ""), "")
        explicit = resource.get("Properties", {}).get(prop)
        if explicit is not None:
            return str(self.resolve(stack, explicit))
        generated = f"{stack}-{logical_id}"
        return generated.lower() if resource["Type"] == "AWS::S3::Bucket" else generated

    def get_att(self, stack: str, logical_id: str, attribute: str) -> str:
        info = self.stacks[stack]
        type_ = self.resource(stack, logical_id).get("Type", "")
        if type_ == "AWS::KMS::Key" and attribute == "KeyId":
            return logical_id
        if attribute in ARN_ATTRIBUTES and type_ in ARN_FORMAT:
            name = logical_id if type_ == "AWS::KMS::Key" else self.physical_name(stack, logical_id)
            return ARN_FORMAT[type_].format(account=info.account, region=info.region, name=name)
        return token(f"GetAtt({logical_id}.{attribute})")


def simulator_from_stacks(stacks: Iterable[Any]) -> tuple[Simulator, Resolver]:
    """The roles and resource policies of every stack given (objects with ``stack_name``,
    ``account``, ``region`` and ``template``, such as the ``stacks`` fixture's values)."""
    resolver = Resolver(stacks)
    sim = Simulator()
    for name, stack in resolver.stacks.items():
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource["Type"] == "AWS::S3::Bucket":
                sim.bucket_accounts[resolver.physical_name(name, logical_id)] = stack.account
    managed = _managed_policies(resolver)
    for name, stack in resolver.stacks.items():
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource["Type"] == "AWS::IAM::Role":
                _load_role(sim, resolver, name, logical_id, managed)
    for name, stack in resolver.stacks.items():
        for logical_id, resource in stack.template.get("Resources", {}).items():
            _load_policy(sim, resolver, name, logical_id, resource)
    return sim, resolver


def _load_role(
    sim: Simulator, resolver: Resolver, stack: str, logical_id: str, managed: dict[str, tuple[Mapping, str]]
) -> None:
    props = resolver.resolve(stack, resolver.resource(stack, logical_id).get("Properties", {}))
    arn = resolver.get_att(stack, logical_id, "Arn")
    role = sim.add_role(arn, trust=props.get("AssumeRolePolicyDocument"), stack=stack, logical_id=logical_id)
    for inline in props.get("Policies", []):
        role.identity.extend(
            _statements(inline["PolicyDocument"], f"{stack}/{logical_id}/{inline['PolicyName']}")
        )
    for policy_arn in props.get("ManagedPolicyArns", []):
        if policy_arn in managed:
            role.identity.extend(_statements(*managed[policy_arn]))
        else:
            role.unmodelled.append(policy_arn)


def _statements(document: Mapping, source: str) -> list[Statement]:
    return list(parse_policy(document, source))


def _managed_policies(resolver: Resolver) -> dict[str, tuple[Mapping, str]]:
    found = {}
    for name, stack in resolver.stacks.items():
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource["Type"] == "AWS::IAM::ManagedPolicy":
                document = resolver.resolve(name, resource["Properties"]["PolicyDocument"])
                found[resolver.get_att(name, logical_id, "Arn")] = (document, f"{name}/{logical_id}")
    return found


def _attach(
    sim: Simulator, resolver: Resolver, stack: str, roles: list, document: Mapping, source: str
) -> None:
    account = resolver.stacks[stack].account
    for role_name in roles:
        arn = role_name if str(role_name).startswith("arn:") else f"arn:aws:iam::{account}:role/{role_name}"
        role = sim.roles.get(arn) or sim.add_role(arn, stack=stack)
        role.identity.extend(_statements(document, source))


def _load_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, resource: dict) -> None:
    type_ = resource["Type"]
    if type_ not in LOADERS:
        return
    props = resolver.resolve(stack, resource.get("Properties", {}))
    LOADERS[type_](sim, resolver, stack, logical_id, props)


def _iam_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    if "PolicyDocument" in props:
        _attach(
            sim, resolver, stack, props.get("Roles", []), props["PolicyDocument"], f"{stack}/{logical_id}"
        )


def _bucket_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    bucket = str(props["Bucket"])
    account = sim.bucket_accounts.get(bucket, resolver.stacks[stack].account)
    sim.add_resource_policy(
        f"arn:aws:s3:::{bucket}", props["PolicyDocument"], source=f"{stack}/{logical_id}", account=account
    )


def _key_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    arn = resolver.get_att(stack, logical_id, "Arn")
    sim.add_resource_policy(arn, props.get("KeyPolicy", {}), kind="kms", source=f"{stack}/{logical_id}")


def _rest_api_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    if not props.get("Policy"):
        return
    info = resolver.stacks[stack]
    owner = f"arn:aws:execute-api:{info.region}:{info.account}:{logical_id}"

    def expand(value: Any) -> Any:
        # API Gateway reads ``execute-api:/stage/METHOD/path`` as this API's own ARN.
        if isinstance(value, list):
            return [expand(v) for v in value]
        if isinstance(value, str) and value.startswith("execute-api:"):
            return owner + value.removeprefix("execute-api:")
        return value

    statements = props["Policy"].get("Statement", [])
    document = {
        "Statement": [
            {**s, **{k: expand(s[k]) for k in ("Resource", "NotResource") if k in s}}
            for s in (statements if isinstance(statements, list) else [statements])
        ]
    }
    sim.add_resource_policy(owner, document, source=f"{stack}/{logical_id}")


def _table_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    document = props.get("ResourcePolicy", {}).get("PolicyDocument")
    if document:
        owner = resolver.get_att(stack, logical_id, "Arn")
        sim.add_resource_policy(owner, document, source=f"{stack}/{logical_id}")


def _lambda_permission(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    principal = str(props["Principal"])
    kind = "Service" if principal.endswith(".amazonaws.com") else "AWS"
    statement: dict[str, Any] = {"Effect": "Allow", "Action": props["Action"], "Principal": {kind: principal}}
    function = str(props["FunctionName"])
    if not function.startswith("arn:"):
        info = resolver.stacks[stack]
        function = ARN_FORMAT["AWS::Lambda::Function"].format(
            account=info.account, region=info.region, name=function
        )
    statement["Resource"] = [function, f"{function}:*"]
    conditions: dict[str, dict[str, str]] = {}
    if "SourceArn" in props:
        conditions["ArnLike"] = {"aws:SourceArn": props["SourceArn"]}
    if "SourceAccount" in props:
        conditions["StringEquals"] = {"aws:SourceAccount": props["SourceAccount"]}
    if conditions:
        statement["Condition"] = conditions
    sim.add_resource_policy(function, {"Statement": [statement]}, source=f"{stack}/{logical_id}")


def _topic_policy(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    for topic in props.get("Topics", []):
        sim.add_resource_policy(str(topic), props["PolicyDocument"], source=f"{stack}/{logical_id}")


def _alias(sim: Simulator, resolver: Resolver, stack: str, logical_id: str, props: dict) -> None:
    target = str(props["TargetKeyId"])
    if not target.startswith("arn:"):
        info = resolver.stacks[stack]
        target = ARN_FORMAT["AWS::KMS::Key"].format(account=info.account, region=info.region, name=target)
    sim.resource_context.setdefault(target, {}).setdefault("kms:ResourceAliases", []).append(
        props["AliasName"]
    )


LOADERS = {
    "AWS::KMS::Alias": _alias,
    "AWS::IAM::Policy": _iam_policy,
    "AWS::IAM::ManagedPolicy": _iam_policy,
    "AWS::S3::BucketPolicy": _bucket_policy,
    "AWS::KMS::Key": _key_policy,
    "AWS::ApiGateway::RestApi": _rest_api_policy,
    "AWS::DynamoDB::Table": _table_policy,
    "AWS::Lambda::Permission": _lambda_permission,
    "AWS::SNS::TopicPolicy": _topic_policy,
}
