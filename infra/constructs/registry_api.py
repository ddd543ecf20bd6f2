"""The registry's HTTP API: list, describe, history and approve/reject, behind IAM auth."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.api import SecureRestApi, body_models
from infra.constructs.nag import acknowledge_grant_wildcards
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

    The function can read the registry and change records (approval, audit events); it
    cannot write artifacts. ``api_stage`` names the API's stage, the URL path's first segment
    (default ``prod``; the Sluice stage passes its own name).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        retain_logs: bool = False,
        api_stage: str = "prod",
    ) -> None:
        super().__init__(scope, id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Sluice registry API",
        )
        registry.grant_record_events(self.role)
        acknowledge_grant_wildcards(self.role, buckets=[registry.bucket], xray=True)
        self.handler = SluiceFunction(
            self,
            "Handler",
            handler="registry_api",
            role=self.role,
            service="registry-api",
            environment={
                **registry.environment,
            },
            retain_logs=retain_logs,
        )
        self.rest = SecureRestApi(
            self, "Rest", description="Sluice model registry", stage_name=api_stage, retain_logs=retain_logs
        )
        integration = apigw.LambdaIntegration(self.handler.function)
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
