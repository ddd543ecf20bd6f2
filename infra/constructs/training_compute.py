"""Where the retraining's train step runs outside Lambda: an ECS task on Fargate or a SageMaker job.

Both run ``python -m sluice.pipelines.train_task`` (:mod:`sluice.pipelines.train_task`) in the
image the pipeline's Lambda steps run, and the state machine waits for them with the ``.sync``
integration. The task gets only the model name and the run id; the rest of the state goes
through the work bucket.

Networking adds no idle cost. :class:`TrainingNetwork` is a VPC with public subnets only and
no NAT gateway: a task gets a public IP (``assignPublicIp``; billed only while it runs) and
reaches ECR, CloudWatch Logs, KMS and SNS over their public HTTPS endpoints; S3 and DynamoDB
go through gateway endpoints, which are free. Isolated subnets would need interface endpoints
for ECR, Logs and KMS, each billed per hour whether or not anything trains. The security group
allows no inbound traffic and only HTTPS out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.nag import acknowledge
from infra.constructs.runtime import REPO_ROOT, ModelImage, image_build

__all__ = ["TRAIN_ENTRY_POINT", "FargateTraining", "SageMakerTraining", "TrainingNetwork", "amd64_image"]

#: The container's entry point: the image's own module, fixed at synth time.
TRAIN_ENTRY_POINT = ["python3", "-m", "sluice.pipelines.train_task"]
#: Where the Lambda base images put ``lambdas/`` (``LAMBDA_TASK_ROOT``).
TASK_ROOT = "/var/task"
#: CDK feature flag (``aws_cdk.cx_api``): grant ``ecs:RunTask`` on the task definition's own ARN.
FIX_RUN_ECS_TASK_POLICY = "@aws-cdk/aws-stepfunctions-tasks:fixRunEcsTaskPolicy"
_RUN_ENV = {"SLUICE_RETRAIN_MODEL": "$.model", "SLUICE_RETRAIN_RUN_ID": "$.run_id"}


class TrainingNetwork(Construct):
    """A stack's network for Fargate training: public subnets, no NAT gateway, one ECS cluster.

    Parameters
    ----------
    cidr
        The VPC's range. Default ``10.42.0.0/16``; two ``/24`` subnets are cut from it.
    retain_logs
        Keep the flow log's log group when the stack is deleted.

    Attributes
    ----------
    vpc, internet_gateway, subnets, route_tables, gateway_endpoints, security_group, flow_log_group,
    flow_log_role, flow_log, cluster
        Everything created; ``subnets`` are the public subnets (one per availability zone).
    """

    ID = "TrainingNetwork"

    def __init__(
        self, scope: Construct, id: str, *, cidr: str = "10.42.0.0/16", retain_logs: bool = False
    ) -> None:
        super().__init__(scope, id)
        # L1 resources with Fn::GetAZs: the L2 Vpc would need an availability-zone lookup at synth.
        self.vpc = ec2.CfnVPC(
            self, "Vpc", cidr_block=cidr, enable_dns_hostnames=True, enable_dns_support=True
        )
        self.internet_gateway = ec2.CfnInternetGateway(self, "InternetGateway")
        attachment = ec2.CfnVPCGatewayAttachment(
            self, "Attachment", vpc_id=self.vpc.ref, internet_gateway_id=self.internet_gateway.ref
        )
        self.subnets: list[ec2.ISubnet] = []
        self.route_tables: list[ec2.CfnRouteTable] = []
        azs = cdk.Fn.get_azs()
        for index in range(2):
            self._build_public_subnet(index, cdk.Fn.select(index, azs), cidr, attachment)
        # S3 and DynamoDB stay on AWS's network through gateway endpoints, which cost nothing.
        self.gateway_endpoints = [self._build_gateway_endpoint(name) for name in ("S3", "DynamoDB")]
        ivpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Imported",
            vpc_id=self.vpc.ref,
            availability_zones=[s.availability_zone for s in self.subnets],
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "Tasks",
            vpc=ivpc,
            allow_all_outbound=False,
            description="Sluice training tasks: HTTPS out only",
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs and ECR over HTTPS"
        )
        self.flow_log_group, self.flow_log_role, self.flow_log = self._build_flow_log(retain_logs=retain_logs)
        self.cluster = ecs.Cluster(self, "Cluster", vpc=ivpc)
        acknowledge(
            self.cluster,
            {
                "AwsSolutions-ECS4": "Container Insights bills its metrics per cluster every month, also "
                "while nothing trains; each task's output is in its CloudWatch log group.",
            },
        )

    @classmethod
    def of(cls, scope: Construct) -> TrainingNetwork:
        """The stack's one training network (created on first use), shared by its pipelines."""
        stack = cdk.Stack.of(scope)
        found = stack.node.try_find_child(cls.ID)
        return found if isinstance(found, TrainingNetwork) else cls(stack, cls.ID)

    def _build_gateway_endpoint(self, service: str) -> ec2.CfnVPCEndpoint:
        return ec2.CfnVPCEndpoint(
            self,
            f"{service}Endpoint",
            vpc_id=self.vpc.ref,
            service_name=f"com.amazonaws.{cdk.Aws.REGION}.{service.lower()}",
            vpc_endpoint_type="Gateway",
            route_table_ids=[table.ref for table in self.route_tables],
        )

    def _build_flow_log(self, *, retain_logs: bool) -> tuple[logs.LogGroup, iam.Role, ec2.CfnFlowLog]:
        """The VPC's flow log to CloudWatch Logs, and the role delivering it."""
        group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "FlowLogRole",
            assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com"),
            description="Sluice training network: delivers the VPC's flow log",
        )
        group.grant_write(role)
        group.grant(role, "logs:DescribeLogStreams")
        # L1: the L2 FlowLog adds acknowledgements of its own, outside this project's acknowledge().
        flow_log = ec2.CfnFlowLog(
            self,
            "FlowLog",
            resource_id=self.vpc.ref,
            resource_type="VPC",
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_group_name=group.log_group_name,
            deliver_logs_permission_arn=role.role_arn,
        )
        return group, role, flow_log

    def _build_public_subnet(
        self, index: int, az: str, cidr: str, attachment: ec2.CfnVPCGatewayAttachment
    ) -> None:
        subnet = ec2.CfnSubnet(
            self,
            f"Public{index}",
            vpc_id=self.vpc.ref,
            availability_zone=az,
            cidr_block=str(list(ipaddress.ip_network(cidr).subnets(new_prefix=24))[index]),
            map_public_ip_on_launch=False,  # the task asks for its public IP (assignPublicIp)
        )
        table = ec2.CfnRouteTable(self, f"Public{index}Routes", vpc_id=self.vpc.ref)
        route = ec2.CfnRoute(
            self,
            f"Public{index}Default",
            route_table_id=table.ref,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=self.internet_gateway.ref,
        )
        route.node.add_dependency(attachment)
        ec2.CfnSubnetRouteTableAssociation(
            self, f"Public{index}Association", subnet_id=subnet.ref, route_table_id=table.ref
        )
        self.route_tables.append(table)
        self.subnets.append(
            ec2.Subnet.from_subnet_attributes(
                self,
                f"Public{index}Imported",
                subnet_id=subnet.ref,
                availability_zone=az,
                route_table_id=table.ref,
            )
        )


class FargateTraining(Construct):
    """The train step as an ECS task on Fargate (arm64), run with ``ecs:runTask.sync``.

    Parameters
    ----------
    network
        Where the task runs (:meth:`TrainingNetwork.of`).
    image
        The container image: the pipeline's Lambda image asset (same build, same hash).
    environment
        Resource names the task needs (registry, work bucket); no secrets.
    cpu, memory_mib
        The task's size. Default 2 vCPU and 8 GiB.
    role_name
        The task role's physical name (the work bucket's policy names it); default generated.
    retain_logs
        Keep the task's log group when the stack is deleted.

    Attributes
    ----------
    task_role, log_group, task_definition, container
        Everything created. ``task_role`` is what the training code runs as: grant it access.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        network: TrainingNetwork,
        image: ecs.ContainerImage,
        environment: Mapping[str, str],
        cpu: int = 2048,
        memory_mib: int = 8192,
        role_name: str | None = None,
        retain_logs: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self.network = network
        self.task_role = iam.Role(
            self,
            "TaskRole",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Sluice retraining: the train step's ECS task",
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=cpu,
            memory_limit_mib=memory_mib,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.container = self.task_definition.add_container(
            "Train",
            image=image,
            entry_point=TRAIN_ENTRY_POINT,
            working_directory=TASK_ROOT,
            environment={**environment, "PYTHONPATH": TASK_ROOT, "PYTHONUNBUFFERED": "1"},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="train", log_group=self.log_group),
        )
        acknowledge(
            self.task_definition,
            {
                "AwsSolutions-ECS2": "The variables are resource names (tables, buckets, keys), no secrets.",
                "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken (pulling the image) supports "
                "only resource '*'.",
            },
        )

    def step(self, scope: Construct, id: str, *, timeout: cdk.Duration) -> tasks.EcsRunTask:
        """The state running the task and waiting for it (``.sync``); the state passes through."""
        # Under this flag RunTask is granted on the task definition's ARN, not on every revision
        # of its family (``family:*``); the flag must be set before the state exists.
        holder = Construct(scope, f"{id}Scope")
        holder.node.set_context(FIX_RUN_ECS_TASK_POLICY, True)
        return tasks.EcsRunTask(
            holder,
            id,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            cluster=self.network.cluster,
            task_definition=self.task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(platform_version=ecs.FargatePlatformVersion.LATEST),
            assign_public_ip=True,
            subnets=ec2.SubnetSelection(subnets=self.network.subnets),
            security_groups=[self.network.security_group],
            container_overrides=[
                tasks.ContainerOverride(
                    container_definition=self.container,
                    environment=[
                        tasks.TaskEnvironmentVariable(name=name, value=sfn.JsonPath.string_at(path))
                        for name, path in _RUN_ENV.items()
                    ],
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=sfn.Timeout.duration(timeout),
        )


def amd64_image(scope: Construct, id: str, *, image: ModelImage | None) -> ecr_assets.DockerImageAsset:
    """The steps' image built for x86_64: SageMaker training runs no arm64 (Graviton) instances.

    Same Dockerfile, build context and build args as :func:`infra.constructs.runtime.image_code`.
    """
    container, project = ("model", image.declaration.path) if image is not None else ("training", None)
    return ecr_assets.DockerImageAsset(
        scope,
        id,
        directory=str(REPO_ROOT),
        platform=ecr_assets.Platform.LINUX_AMD64,
        **image_build(container, project),
    )


class SageMakerTraining(Construct):
    """The train step as a SageMaker training job, run with ``sagemaker:createTrainingJob.sync``.

    SageMaker starts the image with :data:`TRAIN_ENTRY_POINT` as ``ContainerEntrypoint``
    (SageMaker's ``/opt/ml`` contract: a failure's reason goes to ``/opt/ml/output/failure``).
    The job runs without a VPC configuration, in SageMaker's own network: no NAT gateway.

    Parameters
    ----------
    asset
        The image (:func:`amd64_image`: SageMaker training runs on x86_64 instances).
    environment
        Resource names the job needs (registry, work bucket); no secrets.
    output_uri
        ``s3://`` prefix SageMaker writes the job's (empty) model output to.
    instance_type, volume_gb, max_runtime
        The job's instance, its storage and how long it may run. Default ``ml.m5.xlarge``, 30 GB, 1 hour.
    role_name
        The job role's physical name (the work bucket's policy names it); default generated.

    Attributes
    ----------
    role, asset
        The job's role (what the training code runs as: grant it access) and its image.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        asset: ecr_assets.DockerImageAsset,
        environment: Mapping[str, str],
        output_uri: str,
        instance_type: str = "ml.m5.xlarge",
        volume_gb: int = 30,
        max_runtime: cdk.Duration | None = None,
        role_name: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.asset, self.environment, self.output_uri = asset, dict(environment), output_uri
        self.resources = {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": volume_gb}
        self.max_runtime = max_runtime or cdk.Duration.hours(1)
        self.role = iam.Role(
            self,
            "JobRole",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Sluice retraining: the train step's SageMaker training job",
        )
        asset.repository.grant_pull(self.role)
        logs_arn = cdk.Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TrainingJobs:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[logs_arn],
            )
        )
        acknowledge(
            self.role,
            {
                "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken (pulling the image) supports "
                "only resource '*'.",
                f"AwsSolutions-IAM5[Resource::{logs_arn}]": "SageMaker names each job's log stream after "
                "the job; the grant is the one log group SageMaker writes training logs to.",
            },
        )

    def step(self, scope: Construct, id: str) -> sfn.CustomState:
        """The state running the job and waiting for it (``.sync``); the state passes through."""
        parameters = {
            "TrainingJobName.$": "States.UUID()",
            "AlgorithmSpecification": {
                "TrainingImage": self.asset.image_uri,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": TRAIN_ENTRY_POINT,
            },
            "RoleArn": self.role.role_arn,
            "OutputDataConfig": {"S3OutputPath": self.output_uri},
            "ResourceConfig": self.resources,
            "StoppingCondition": {"MaxRuntimeInSeconds": int(self.max_runtime.to_seconds())},
            "Environment": {
                **self.environment,
                "PYTHONPATH": TASK_ROOT,
                **{f"{name}.$": path for name, path in _RUN_ENV.items()},
            },
        }
        return sfn.CustomState(
            scope,
            id,
            state_json={
                "Type": "Task",
                "Resource": f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": parameters,
                "ResultPath": None,
            },
        )

    def grant_run(self, role: iam.IRole) -> None:
        """Let a state machine's ``role`` start, follow and stop the job, passing only the job's role."""
        stack = cdk.Stack.of(self)
        jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name="*")
        rule = stack.format_arn(
            service="events",
            resource="rule",
            resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
        )
        for statement in (
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                ],
                resources=[jobs],
            ),
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"], resources=[rule]
            ),
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
        ):
            role.add_to_principal_policy(statement)
        acknowledge(
            role,
            {
                f"AwsSolutions-IAM5[Resource::{jobs}]": "Each run's job has a new name (States.UUID()), "
                "known only at run time; the grant is limited to training jobs of this account and region.",
            },
        )
