"""Non-personal IAM roles, one per duty. Nobody's own credentials run Sluice work."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.nag import acknowledge_grant_wildcards
from infra.constructs.registry import Registry
from infra.constructs.storage import bucket_in

LAMBDA = iam.ServicePrincipal("lambda.amazonaws.com")


class ServiceRoles(Construct):
    """The execution and operator roles of one stage.

    ``training`` (retraining steps) and ``monitor`` (drift job) are Lambda execution roles; the
    endpoint, batch, capture, labels and registry API constructs build their own roles;
    ``deployer`` is assumed by engineers or CI of the same account (fixed name, so the prod
    account can trust it for promotion). ``promotion`` exists only where ``trusted_role_arn``
    is given: a role in this account that only that (dev) role may assume.

    Grants follow the duty: only ``training`` and ``promotion`` may write registry
    artifacts; ``deployer`` may change records (approval, aliases, traffic) but not artifacts.

    Parameters
    ----------
    registry
        The stage's model registry.
    capture_bucket
        Bucket of captured requests: monitoring and training read it.
    deployer_role_name
        Physical name of the deployer role.
    trusted_role_arn
        The dev deployer role, the only principal of the prod promotion role.
    promotion_role_name
        Physical name of the promotion role (prod).
    promotion_target_role_arn
        The prod promotion role (dev): the deployer may assume it, and nothing else across accounts.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        capture_bucket: s3.IBucket,
        deployer_role_name: str,
        trusted_role_arn: str | None = None,
        promotion_role_name: str | None = None,
        promotion_target_role_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.training = iam.Role(self, "Training", assumed_by=LAMBDA, description="Sluice training jobs")
        self.monitor = iam.Role(self, "Monitor", assumed_by=LAMBDA, description="Sluice drift monitoring")
        self.deployer = iam.Role(
            self,
            "Deployer",
            role_name=deployer_role_name,
            assumed_by=iam.AccountRootPrincipal(),
            description="Sluice deployments: approve, deploy, shift traffic, promote (assumed by people or CI)",
        )

        registry.grant_write(self.training)
        registry.grant_read(self.monitor)
        registry.grant_record_events(self.deployer)
        capture = bucket_in(self, capture_bucket)
        for role in (self.monitor, self.training):
            capture.grant_read(role)

        if promotion_target_role_arn:
            self.deployer.add_to_policy(
                iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[promotion_target_role_arn])
            )
        self.promotion: iam.Role | None = None
        if trusted_role_arn:
            self.promotion = iam.Role(
                self,
                "Promotion",
                role_name=promotion_role_name,
                assumed_by=iam.ArnPrincipal(trusted_role_arn),
                description="Promotes registered models from the dev account into this one",
            )
            registry.grant_write(self.promotion)
        for role in self.all_roles:
            acknowledge_grant_wildcards(role, buckets=[registry.bucket, capture_bucket])

    @property
    def all_roles(self) -> list[iam.Role]:
        roles = [self.training, self.monitor, self.deployer]
        return roles + ([self.promotion] if self.promotion else [])
