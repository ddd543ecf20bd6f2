"""A REST API with the settings every Sluice API shares: IAM auth, validation, throttling, access logs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.nag import acknowledge

# API Gateway answers a body that fails the request model with a bare {"message": "Invalid
# request body"}; this says what failed, as the functions' own 400s do.
BAD_REQUEST_BODY_TEMPLATE = '{"message": "Invalid request body: $context.error.validationErrorString"}'
#: The content types every request model is attached under. API Gateway validates a body only
#: against the model of its own content type, else ``$default``; without ``$default`` the same body
#: sent as ``text/plain`` (or any other type) would reach the function unvalidated.
BODY_CONTENT_TYPES = ("application/json", "$default")


def body_models(model: apigw.IModel) -> dict[str, apigw.IModel]:
    """``request_models`` that validate a method's body against ``model`` whatever its content type."""
    return {content_type: model for content_type in BODY_CONTENT_TYPES}


class SecureRestApi(Construct):
    """An API Gateway REST API behind IAM (SigV4) auth.

    Every method requires IAM auth by default; its one stage (``stage_name``, the Sluice stage's
    name, so URLs read ``/dev/...`` on the dev stage) throttles, traces with
    X-Ray and writes JSON access logs to its own log group. A body that fails its request
    model gets a 400 whose message carries the validator's reason (``bad_request_body``).

    Parameters
    ----------
    description
        Shown in the console.
    stage_name
        The API's stage, the path's first segment; default ``prod``.
    rate_limit, burst_limit
        Stage-wide throttling (requests per second, burst); default 100 and 200.
    retain_logs
        Keep the access-log group when the stack is deleted.
    policy
        The API's resource policy; default none (IAM identity policies alone decide).

    Attributes
    ----------
    access_logs, api, validator, bad_request_body
        The access-log group, the API, its body validator and its 400 gateway response.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        description: str,
        stage_name: str = "prod",
        rate_limit: int = 100,
        burst_limit: int = 200,
        retain_logs: bool = False,
        policy: iam.PolicyDocument | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description=description,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            policy=policy,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=self._stage_options(stage_name, rate_limit=rate_limit, burst_limit=burst_limit),
        )
        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        self.bad_request_body = self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={"application/json": BAD_REQUEST_BODY_TEMPLATE},
        )
        acknowledge(
            self.api,
            {
                "AwsSolutions-APIG3": "Callers are IAM principals signing with SigV4 and the stage is throttled; "
                "attach a WAF web ACL at the account level where public exposure requires it.",
                "AwsSolutions-APIG6": "Execution logging needs the account-wide API Gateway CloudWatch role, "
                "which Sluice does not own; JSON access logs record every request instead.",
                "AwsSolutions-COG4": "Methods use IAM authorization (SigV4) for non-personal roles, not Cognito.",
            },
        )

    def _stage_options(self, stage_name: str, *, rate_limit: int, burst_limit: int) -> apigw.StageOptions:
        """The API's stage: throttled, traced, JSON access logs with the standard fields."""
        return apigw.StageOptions(
            stage_name=stage_name,
            throttling_rate_limit=rate_limit,
            throttling_burst_limit=burst_limit,
            tracing_enabled=True,
            access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
            access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                caller=True,
                http_method=True,
                ip=True,
                protocol=True,
                request_time=True,
                resource_path=True,
                response_length=True,
                status=True,
                user=True,
            ),
        )
