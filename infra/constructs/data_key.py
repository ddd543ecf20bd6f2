"""The stage's data key: one customer-managed KMS key for captured data, Firehose and log groups."""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

LOGS_KEY_ACTIONS = ("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*")


class DataKey(Construct):
    """A rotating KMS key that CloudWatch Logs may use for the stage's log groups.

    The key policy trusts the account (IAM policies grant the rest, through ``grant_*``) and lets
    the ``logs.<region>.amazonaws.com`` service principal use the key only for log groups of this
    account and region (``kms:EncryptionContext:aws:logs:arn``), as CloudWatch Logs requires of a
    customer-managed key.

    Parameters
    ----------
    retain
        Keep the key when the stack is deleted (prod). Otherwise it is scheduled for deletion
        after ``pending_window_days``.
    description
        Shown in the KMS console. Default ``"Sluice captured data, Firehose and log groups"``.
    pending_window_days
        Days a deleted key waits before it is destroyed (7-30). Default 30.

    Attributes
    ----------
    key
        The key; ``key.key_arn`` is what log groups, the capture bucket and Firehose take.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        retain: bool,
        description: str = "Sluice captured data, Firehose and log groups",
        pending_window_days: int = 30,
    ) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description=description,
            enable_key_rotation=True,
            pending_window=cdk.Duration.days(pending_window_days),
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=list(LOGS_KEY_ACTIONS),
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )


@jsii.implements(cdk.IAspect)
class EncryptLogGroups:
    """Aspect: every CloudWatch log group in the scope without a key is encrypted with ``key``.

    It reaches the log groups that constructs create themselves (a function's, a state
    machine's, an API's access logs, Firehose's error logs) without threading the key through
    every construct: ``cdk.Aspects.of(stack).add(EncryptLogGroups(data_key.key))``.
    """

    def __init__(self, key: kms.IKey) -> None:
        self.key = key

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, logs.CfnLogGroup) and node.kms_key_id is None:
            node.kms_key_id = self.key.key_arn
