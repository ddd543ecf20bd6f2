"""The registry's HTTP API: list, describe, history and approve/reject, behind IAM auth."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.api import SecureRestApi, body_models
from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards, logical_id
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction


class RegistryApi(Construct):
    """A zip Lambda (``sluice.handlers.registry_api``) behind a :class:`SecureRestApi`.

    Routes (all IAM-authorized)::

        GET  /models
        GET  /models/{name}
        GET  /models/{name}/history
        GET  /models/{name}/versions/{version}
        POST /models/{name}/versions/{version}/approve   {"comment": "..."}
        POST /models/{name}/versions/{version}/reject    {"comment": "..."}

    The function can read the registry, change records and sign approvals; it cannot write
    artifacts. The API's resource policy denies approve and reject to every principal but
    ``approver`` (by ``aws:PrincipalArn``), so approving takes that role whatever identity
    policies say; the function records the verified caller as the actor and refuses an approval
    by the principal that registered the version. ``api_stage`` names the API's stage, the URL
    path's first segment (default ``prod``; the Sluice stage passes its own name). ``role_name``
    fixes the function role's name, so the approval key's policy can name it.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        approver: iam.IRole,
        role_name: str | None = None,
        retain_logs: bool = False,
        api_stage: str = "prod",
    ) -> None:
        super().__init__(scope, id)
        self.role = iam.Role(
            self,
            "Role",
            role_name=role_name,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Sluice registry API",
        )
        registry.grant_approve(self.role)
        acknowledge_grant_wildcards(self.role, buckets=[registry.bucket], xray=True)
        self.handler = SluiceFunction(
            self,
            "Handler",
            handler="registry_api",
            role=self.role,
            service="registry-api",
            environment=registry.environment,
            retain_logs=retain_logs,
        )
        self.rest = SecureRestApi(
            self,
            "Rest",
            description="Sluice model registry",
            stage_name=api_stage,
            retain_logs=retain_logs,
            policy=decisions_only_by(approver),
        )
        self._build_routes(apigw.LambdaIntegration(self.handler.function))

    def _build_routes(self, integration: apigw.LambdaIntegration) -> None:
        decision_body = self.rest.api.add_model(
            "DecisionBody",
            content_type="application/json",
            schema=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                properties={"comment": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, max_length=1000)},
                additional_properties=False,
            ),
        )
        models = self.rest.api.root.add_resource("models")
        models.add_method("GET", integration)
        model = models.add_resource("{name}")
        model.add_method("GET", integration)
        model.add_resource("history").add_method("GET", integration)
        version = model.add_resource("versions").add_resource("{version}")
        version.add_method("GET", integration)
        for decision in ("approve", "reject"):
            version.add_resource(decision).add_method(
                "POST",
                integration,
                request_validator=self.rest.validator,
                request_models=body_models(decision_body),
            )

    def grant_invoke(self, grantee: iam.IRole) -> None:
        """Call every route (approve and reject still need the approver role, see the class)."""
        grantee.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["execute-api:Invoke"], resources=[self.rest.api.arn_for_execute_api()]
            )
        )
        stack = cdk.Stack.of(self)
        api = f"<{logical_id(self.rest.api)}>"
        route = f"arn:aws:execute-api:{stack.region}:{stack.account}:{api}/*/*/*"
        acknowledge(
            grantee,
            {
                f"AwsSolutions-IAM5[Resource::{route}]": (
                    "Every route of this stage's registry API (stage/method/path); the API's resource "
                    "policy still lets only the approver role approve or reject."
                )
            },
        )


#: The resource paths of the two decisions, in a resource policy's ``execute-api:/`` form.
DECISION_PATHS = tuple(f"execute-api:/*/POST/models/*/versions/*/{d}" for d in ("approve", "reject"))


def decisions_only_by(approver: iam.IRole) -> iam.PolicyDocument:
    """Any principal of the account may call the API (IAM auth), only ``approver`` may decide."""
    return iam.PolicyDocument(
        statements=[
            iam.PolicyStatement(
                principals=[iam.AccountRootPrincipal()],
                actions=["execute-api:Invoke"],
                resources=["execute-api:/*"],
            ),
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["execute-api:Invoke"],
                resources=list(DECISION_PATHS),
                conditions={"ArnNotEquals": {"aws:PrincipalArn": approver.role_arn}},
            ),
        ]
    )
