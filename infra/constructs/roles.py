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

    ``monitor`` (drift job) is a Lambda execution role; the endpoint, batch, retraining, capture,
    labels, registry API and promotion constructs build their own roles (a model's, per model).
    ``deployer`` and ``approver`` are assumed by people or CI of the same account; their trust
    policies require the caller to carry the principal tag ``sluice-duty`` naming the duty, and
    the approver's a source identity (``sts:SourceIdentity``: the person, which follows them
    through role chaining into the audit trail).

    Grants follow the duty: only a model's retraining writes its registry artifacts; ``deployer`` may move
    aliases, shift traffic and record events, but neither approve nor write artifacts;
    ``approver`` may only call the registry API, whose resource policy lets no one else approve.

    Parameters
    ----------
    registry
        The stage's model registry.
    capture_bucket
        Bucket of captured requests: monitoring reads it.
    deployer_role_name, approver_role_name
        Physical names of the deployer and approver roles.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        capture_bucket: s3.IBucket,
        deployer_role_name: str,
        approver_role_name: str,
    ) -> None:
        super().__init__(scope, id)
        self.monitor = iam.Role(self, "Monitor", assumed_by=LAMBDA, description="Sluice drift monitoring")
        self.deployer = iam.Role(
            self,
            "Deployer",
            role_name=deployer_role_name,
            assumed_by=duty_principal("deployer"),
            description="Sluice deployments: deploy, shift traffic, move aliases (assumed by people or CI)",
        )
        self.approver = iam.Role(
            self,
            "Approver",
            role_name=approver_role_name,
            assumed_by=duty_principal("approver", source_identity=True),
            description="Sluice approvals: approve or reject versions through the registry API (people only)",
        )
        # A person's source identity must be set when assuming the approver role (see above).
        self.approver.assume_role_policy.add_statements(  # type: ignore[union-attr]
            iam.PolicyStatement(
                actions=["sts:SetSourceIdentity"],
                principals=[iam.AccountRootPrincipal()],
                conditions={"StringEquals": {"aws:PrincipalTag/sluice-duty": "approver"}},
            )
        )

        registry.grant_read(self.monitor)
        registry.grant_record_events(self.deployer)
        registry.grant_read(self.approver)
        capture = bucket_in(self, capture_bucket)
        capture.grant_read(self.monitor)
        for role in self.all_roles:
            acknowledge_grant_wildcards(role, buckets=[registry.bucket, capture_bucket])

    @property
    def all_roles(self) -> list[iam.Role]:
        return [self.monitor, self.deployer, self.approver]


def duty_principal(duty: str, *, source_identity: bool = False) -> iam.IPrincipal:
    """Principals of this account tagged ``sluice-duty=<duty>`` (and naming a source identity)."""
    conditions: dict[str, dict[str, str]] = {"StringEquals": {"aws:PrincipalTag/sluice-duty": duty}}
    if source_identity:
        conditions["Null"] = {"sts:SourceIdentity": "false"}
    return iam.AccountRootPrincipal().with_conditions(conditions)
