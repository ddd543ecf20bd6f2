"""Prod decides for prod: a prod-owned function pulls an Approved dev version and registers it Pending."""

from __future__ import annotations

from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction
from sluice.names import approval_key_alias, registry_table_name, stage_bucket_name


class PromotionPull(Construct):
    """The prod side of promotion: ``sluice.handlers.promote`` under a fixed-name role.

    The function reads the source (dev) stage's registry across accounts, verifies the dev
    approval's signature and every artifact's digest, and registers the bytes in this stage's
    registry as ``PendingManualApproval``, signed with this stage's manifest key. Nothing of
    dev can write here: dev's registry only lets this role read it (its resource policies, see
    :class:`~infra.constructs.registry.Registry` ``readers``), and a prod approver must still
    approve the copy. People or CI start a pull with ``lambda:InvokeFunction`` (:meth:`grant_invoke`).

    Parameters
    ----------
    registry
        This stage's registry, written through the registration path (no approval rights).
    role_name
        Physical name of the function's role, which the source registry's policies name.
    function_name
        Physical name of the function (``sluice promote`` invokes it by name).
    source_stage, source_account, source_region
        Where the source registry lives; its table, bucket and key alias follow from these.
    retain_logs
        Keep the function's log group on stack deletion.

    Attributes
    ----------
    role, function
        The pull's execution role and its Lambda function.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        role_name: str,
        function_name: str,
        source_stage: str,
        source_account: str,
        source_region: str,
        retain_logs: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self.role = iam.Role(
            self,
            "Role",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com").with_conditions(
                {"StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}}
            ),
            description=f"Pulls Approved model versions from the {source_stage} registry into this one",
        )
        registry.grant_write(self.role)
        table = registry_table_name(source_stage)
        bucket = stage_bucket_name(
            "artifacts", stage=source_stage, account=source_account, region=source_region
        )
        self._grant_source_reads(table=table, bucket=bucket, account=source_account, region=source_region)
        self.handler = SluiceFunction(
            self,
            "Handler",
            handler="promote",
            role=self.role,
            service="promotion",
            environment={
                **registry.environment,
                "SLUICE_SOURCE_STAGE": source_stage,
                "SLUICE_SOURCE_ACCOUNT": source_account,
                "SLUICE_SOURCE_REGION": source_region,
            },
            timeout_s=300,
            memory_mb=1024,
            retain_logs=retain_logs,
        )
        self.function = self.handler.function
        # A fixed name: `sluice --stage prod promote` invokes it by name.
        cast(lambda_.CfnFunction, self.function.node.default_child).function_name = function_name
        acknowledge_grant_wildcards(self.role, buckets=[registry.bucket], xray=True)

    def _grant_source_reads(self, *, table: str, bucket: str, account: str, region: str) -> None:
        """Identity side of the cross-account read (the source registry's resource policies are the other)."""
        arn = f"arn:{cdk.Aws.PARTITION}"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:Query"],
                resources=[f"{arn}:dynamodb:{region}:{account}:table/{table}"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[f"{arn}:s3:::{bucket}/artifacts/*"])
        )
        keys = f"{arn}:kms:{region}:{account}:key/*"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Verify"],
                resources=[keys],
                conditions={"ForAnyValue:StringEquals": {"kms:ResourceAliases": approval_key_alias(table)}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[keys],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            )
        )
        acknowledge(
            self.role,
            {
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{bucket}/artifacts/*]": (
                    "Reads the source registry's content-addressed artifacts; which ones is decided by "
                    "the signed approval the function verifies first."
                ),
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:kms:{region}:{account}:key/*]": (
                    "Key ids of another account are not known at synth: Verify is narrowed to the key "
                    "with the source approval alias (kms:ResourceAliases), Decrypt to calls through S3."
                ),
            },
        )

    def grant_invoke(self, grantee: iam.IRole) -> None:
        """Start a pull (people or CI of this account, e.g. the deployer): this function only."""
        grantee.add_to_principal_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.function.function_arn])
        )
