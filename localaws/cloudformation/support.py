"""How each CloudFormation resource type exists on the embedded local AWS, and what was emulated.

Every type the stage's templates use is in :data:`RESOURCE_SUPPORT`: created by moto
(``moto``), created here through moto's regular APIs (``filled``, :mod:`localaws.cloudformation.fillers`),
recorded for the local components that act on it (``emulated``), or ``ignored (...)`` with the
reason. :func:`support_of` raises for a type nobody decided on, so a new construct cannot
silently deploy half-way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sluice.errors import SluiceError

MOTO = "moto"
FILLED = "filled"
EMULATED = "emulated"
IGNORED = "ignored"

# One explicit table: how each CloudFormation resource type exists locally.
# "ignored (...)" entries carry the reason.
RESOURCE_SUPPORT: dict[str, str] = {
    # Created by moto's CloudFormation.
    "AWS::ApiGateway::Deployment": MOTO,
    "AWS::ApiGateway::Method": MOTO,  # + RequestModels/RequestValidatorId, which moto drops
    "AWS::ApiGateway::Resource": MOTO,
    "AWS::ApiGateway::RestApi": MOTO,
    "AWS::CloudWatch::Dashboard": MOTO,
    "AWS::DynamoDB::Table": MOTO,
    # The Fargate training network and tasks (tasks run as local processes: localaws.ecs).
    "AWS::EC2::FlowLog": MOTO,
    "AWS::EC2::InternetGateway": MOTO,
    "AWS::EC2::Route": MOTO,
    "AWS::EC2::RouteTable": MOTO,
    "AWS::EC2::SecurityGroup": MOTO,
    "AWS::EC2::Subnet": MOTO,
    "AWS::EC2::SubnetRouteTableAssociation": MOTO,
    "AWS::EC2::VPC": MOTO,
    "AWS::EC2::VPCEndpoint": MOTO,
    "AWS::EC2::VPCGatewayAttachment": MOTO,
    "AWS::ECS::Cluster": MOTO,
    "AWS::ECS::TaskDefinition": MOTO,  # + TaskRoleArn and sizes, which moto drops (localaws.ecs)
    "AWS::ECR::Repository": MOTO,
    "AWS::Events::EventBus": MOTO,
    "AWS::Events::Rule": MOTO,
    "AWS::IAM::ManagedPolicy": MOTO,
    "AWS::IAM::Policy": MOTO,
    "AWS::IAM::Role": MOTO,
    "AWS::IAM::User": MOTO,
    "AWS::KMS::Alias": MOTO,
    "AWS::KMS::Key": MOTO,  # + Tags, which moto's model passes in the wrong shape
    "AWS::Kinesis::Stream": MOTO,
    "AWS::Lambda::EventSourceMapping": MOTO,
    "AWS::Lambda::Function": MOTO,  # + PackageType, ImageConfig, Architectures, which moto drops
    "AWS::Lambda::LayerVersion": MOTO,
    "AWS::Lambda::Permission": MOTO,
    "AWS::Logs::LogGroup": MOTO,
    "AWS::Logs::ResourcePolicy": MOTO,
    "AWS::S3::Bucket": MOTO,  # + VersioningConfiguration, which moto ignores
    "AWS::SNS::Topic": MOTO,
    "AWS::SQS::Queue": MOTO,
    "AWS::SSM::Parameter": MOTO,
    "AWS::StepFunctions::StateMachine": MOTO,
    # Skipped by moto's CloudFormation; created here through moto's regular APIs.
    "AWS::ApiGateway::GatewayResponse": FILLED,
    "AWS::ApiGateway::Model": FILLED,
    "AWS::ApiGateway::RequestValidator": FILLED,
    "AWS::ApiGateway::Stage": FILLED,
    "AWS::CloudWatch::Alarm": FILLED,
    "AWS::CloudWatch::CompositeAlarm": FILLED,
    "AWS::KinesisFirehose::DeliveryStream": FILLED,
    "AWS::Lambda::Alias": FILLED,
    "AWS::Logs::LogStream": FILLED,
    "AWS::Lambda::Version": FILLED,  # moto's model has neither a physical id nor GetAtt Version
    "AWS::Scheduler::Schedule": FILLED,
    "AWS::SNS::Subscription": FILLED,
    # No moto API worth driving; recorded for the local components that act on them.
    "AWS::CodeDeploy::Application": EMULATED,
    "AWS::CodeDeploy::DeploymentConfig": EMULATED,
    "AWS::CodeDeploy::DeploymentGroup": EMULATED,
    "AWS::Lambda::EventInvokeConfig": EMULATED,
    "AWS::Scheduler::ScheduleGroup": EMULATED,
    "AWS::Glue::Database": EMULATED,
    "AWS::Glue::Table": EMULATED,
    "AWS::Athena::WorkGroup": EMULATED,
    # Policies are not enforced locally (moto does not evaluate IAM or resource policies).
    "AWS::S3::BucketPolicy": "ignored (resource policies are not enforced locally)",
    "AWS::SNS::TopicPolicy": "ignored (resource policies are not enforced locally)",
    "AWS::SQS::QueuePolicy": "ignored (resource policies are not enforced locally)",
    "AWS::ApiGateway::Account": "ignored (account-wide CloudWatch role, no local effect)",
    "AWS::CDK::Metadata": "ignored (CDK usage analytics, no runtime effect)",
}


def support_of(resource_type: str) -> str:
    """``moto`` | ``filled`` | ``emulated`` | ``ignored (...)`` for one resource type.

    Raises
    ------
    SluiceError
        If nobody decided how the type exists locally (add it to ``RESOURCE_SUPPORT``).
    """
    try:
        return RESOURCE_SUPPORT[resource_type]
    except KeyError:
        raise SluiceError(
            f"resource type {resource_type} is not supported by the local AWS "
            "(add it to localaws.cloudformation.support.RESOURCE_SUPPORT)"
        ) from None


@dataclass
class EmulatedResource:
    """A resource recorded instead of created; local components read ``properties``."""

    stack_name: str
    logical_id: str
    resource_type: str
    physical_id: str
    properties: dict[str, Any] = field(default_factory=dict)


# stack name -> logical id -> resource; read by local components (e.g. CodeDeploy).
EMULATED_RESOURCES: dict[str, dict[str, EmulatedResource]] = {}
_EMULATED_LOCK = threading.Lock()


def emulated_resources(resource_type: str | None = None) -> list[EmulatedResource]:
    """Every emulated resource (optionally of one type), across stacks."""
    with _EMULATED_LOCK:
        found = [r for stack in EMULATED_RESOURCES.values() for r in stack.values()]
    return [r for r in found if resource_type is None or r.resource_type == resource_type]


def record_emulated(
    stack_name: str, logical_id: str, resource_type: str, physical_id: str, properties: dict[str, Any]
) -> EmulatedResource:
    """Record one emulated resource of a stack (replacing an earlier one of that logical id)."""
    resource = EmulatedResource(stack_name, logical_id, resource_type, physical_id, properties)
    with _EMULATED_LOCK:
        EMULATED_RESOURCES.setdefault(stack_name, {})[logical_id] = resource
    return resource


def clear_emulated() -> None:
    """Forget every emulated resource (a new local stage starts)."""
    with _EMULATED_LOCK:
        EMULATED_RESOURCES.clear()
