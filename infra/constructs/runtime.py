"""Lambda functions that run the shared runtime package ``sluice`` (one code asset for all)."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
POWERTOOLS_VERSION = "3.37.0"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64


def lambda_code() -> lambda_.Code:
    """The ``lambdas/`` source root as one zip asset, shared by every zip function."""
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        exclude=["**/__pycache__", "**/*.pyc", "*.egg-info", "sluice/local/**"],
    )


class SluiceFunction(Construct):
    """A zip Lambda running ``sluice.handlers.<module>.lambda_handler``.

    It runs on a current Python runtime on arm64 with X-Ray tracing, its own log group
    (one month retention) and the Powertools layer, resolved at deploy time from the
    public SSM parameter for the pinned Powertools version (no network at synth).

    Parameters
    ----------
    handler
        Module under ``sluice.handlers``, e.g. ``"registry_api"``.
    role
        Execution role. The function gets write access to its own log group only.
    environment
        Extra environment variables; ``POWERTOOLS_SERVICE_NAME`` is set from ``service``.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        handler: str,
        role: iam.IRole,
        service: str,
        environment: dict[str, str] | None = None,
        memory_mb: int = 512,
        timeout_s: int = 30,
        retain_logs: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        powertools_arn = (
            "{{resolve:ssm:/aws/service/powertools/python/"
            f"{ARCHITECTURE.name}/{RUNTIME.name}/{POWERTOOLS_VERSION}}}}}"
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_code(),
            handler=f"sluice.handlers.{handler}.lambda_handler",
            role=role,
            memory_size=memory_mb,
            timeout=cdk.Duration.seconds(timeout_s),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_arn)],
            environment={
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": "Sluice",
                **(environment or {}),
            },
        )
        self.log_group.grant_write(role)
