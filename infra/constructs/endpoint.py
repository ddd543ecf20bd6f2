"""A model endpoint: a Lambda ``live`` alias over weighted versions, behind an IAM-authorized REST API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constructs.api import SecureRestApi, body_models
from infra.constructs.capture import CaptureStream
from infra.constructs.nag import acknowledge, acknowledge_grant_wildcards
from infra.constructs.registry import Registry
from infra.constructs.runtime import (
    ARCHITECTURE,
    REPO_ROOT,
    RUNTIME,
    ModelImage,
    SluiceFunction,
    image_libraries,
)
from sluice.names import ENDPOINT_NAMESPACE, JSON_SCHEMA_DRAFT4, MAX_INSTANCES

# numpy + ONNX Runtime for linux arm64, built by `make install` (containers/scoring/requirements-zip.txt).
SCORING_LAYER_DIR = REPO_ROOT / "build" / "layers" / "scoring"
Flavour = Literal["zip", "container"]
FLAVOURS: dict[str, str] = {"zip": "onnx", "container": "sklearn"}


class _AlarmSpec(NamedTuple):
    """One deployment alarm on an endpoint metric (one-minute period, missing data not breaching)."""

    id: str
    metric: str
    statistic: str
    threshold: float
    comparison: cloudwatch.ComparisonOperator
    description: str


def _check_flavour(flavour: str, image: ModelImage | None) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"Endpoint flavour must be 'zip' or 'container'; got {flavour!r}")
    if image is not None and flavour != "container":
        raise ValueError("Endpoint image needs the container flavour (the zip flavour serves ONNX)")


class Endpoint(Construct):
    """One model's endpoint: function, ``live`` alias, REST API, alarms and a CodeDeploy group.

    The alias starts on the version CDK builds, which carries no model version and so serves
    the registry's ``champion`` alias. ``sluice endpoint deploy`` publishes a Lambda version per
    model version (environment ``SLUICE_MODEL_VERSION``) and ``shift``/``promote``/``rollback``/
    ``canary`` move the alias weights at run time: two ``lambda.Version`` s built by CDK from the
    same code would resolve to the same version, so CDK keeps the alias on one.

    Routes: ``POST /predict`` with ``{"instances": [{feature: value, ...}, ...]}`` (IAM auth,
    optional API key), validated by API Gateway against ``request_schema`` before the function
    validates it again against the served version's feature schema.

    Parameters
    ----------
    registry
        The model registry: the function reads artifacts and records.
    capture
        Firehose stream for data capture; the function may put records on it. ``None``: no capture.
    model_name
        Registered model served (``SLUICE_MODEL_NAME``).
    flavour
        ``"zip"`` (default): zip function with the numpy + ONNX Runtime layer, serving
        ``model.onnx``; fits the 250 MB limit and starts fast. ``"container"``: image from
        ``containers/scoring/Dockerfile`` serving the scikit-learn estimator (any estimator,
        bigger cold start). Synthesis needs no Docker; ``cdk deploy`` builds the image.
    image
        The model's own image (:class:`~infra.constructs.runtime.ModelImage`, container flavour
        only) instead of ``containers/scoring``: a model project's package and pins on Sluice's
        base. Default ``None``.
    request_schema
        JSON Schema (draft-04) of a scoring request for validation at the gateway: the model's
        committed ``infra/schemas/<model>.request.json`` (:mod:`infra.model_schemas`). ``None``
        (default) checks only the envelope (a non-empty list of objects).
    function_name
        Physical function name, so ``sluice endpoint`` finds it; default generated.
    memory_mb, timeout_s
        Function memory (default 1024, which also buys CPU) and timeout (default 10 s).
    api_key
        Require an API key (and create a usage plan with ``rate_limit``/``burst_limit`` and
        ``quota_per_day``) in addition to IAM auth. Default ``False``.
    rate_limit, burst_limit
        Stage throttling in requests per second (default 50, burst 100).
    deployment_config
        CodeDeploy traffic shifting for deployments through CloudFormation or CodeDeploy
        (default canary 10 % for 5 minutes).
    error_threshold, latency_p99_ms, quality_bounds
        Alarms that stop and roll back a deployment: server errors per minute (default ≥ 1),
        p99 latency (default 1,000 ms), and the mean positive-class probability leaving
        ``quality_bounds`` (default 0.01-0.99) -- a prediction distribution no sane model
        version produces.
    retain_logs
        Keep the function's and the API's log groups when the stack is deleted.
    api_stage
        The REST API's stage, the URL path's first segment (default ``prod``; the Sluice stage
        passes its own name, so the dev endpoint is ``.../dev/predict``).

    Attributes
    ----------
    role, handler, function, layer, alias, rest, api, request_schema, request_model, predict,
    predict_method, usage_plan, api_key, errors_alarm, latency_alarm, quality_high_alarm,
    quality_low_alarm, alarms, deployment_group
        Everything created; ``layer`` (container flavour) and ``usage_plan``/``api_key``
        (without ``api_key``) are ``None`` when not created.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        capture: CaptureStream | None,
        model_name: str,
        flavour: Flavour = "zip",
        image: ModelImage | None = None,
        request_schema: Mapping[str, Any] | None = None,
        function_name: str | None = None,
        memory_mb: int = 1024,
        timeout_s: int = 10,
        api_key: bool = False,
        rate_limit: int = 50,
        burst_limit: int = 100,
        quota_per_day: int | None = None,
        deployment_config: codedeploy.ILambdaDeploymentConfig | None = None,
        error_threshold: int = 1,
        latency_p99_ms: int = 1000,
        quality_bounds: tuple[float, float] = (0.01, 0.99),
        retain_logs: bool = False,
        api_stage: str = "prod",
    ) -> None:
        super().__init__(scope, id)
        _check_flavour(flavour, image)
        self.image = image
        self.model_name = model_name
        self.flavour = flavour
        self.service = f"endpoint-{model_name}"
        self.role = self._build_role(registry, capture)
        self.handler = self._build_handler(
            self._environment(registry, capture),
            function_name=function_name,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            retain_logs=retain_logs,
        )
        self.function = self.handler.function
        self.layer = self._build_layer() if flavour == "zip" else None
        self.alias = lambda_.Alias(self, "Live", alias_name="live", version=self.function.current_version)
        self._build_api(
            request_schema,
            api_key=api_key,
            rate_limit=rate_limit,
            burst_limit=burst_limit,
            retain_logs=retain_logs,
            api_stage=api_stage,
        )
        self.usage_plan: apigw.UsagePlan | None = None
        self.api_key: apigw.IApiKey | None = None
        if api_key:
            self._build_usage_plan(rate_limit=rate_limit, burst_limit=burst_limit, quota_per_day=quota_per_day)
        self.alarms = [
            self._build_alarm(spec) for spec in _alarm_specs(error_threshold, latency_p99_ms, quality_bounds)
        ]
        self.errors_alarm, self.latency_alarm, self.quality_high_alarm, self.quality_low_alarm = self.alarms
        self.deployment_group = self._build_deployment_group(deployment_config)

    # --- function ------------------------------------------------------------------------------

    def _build_role(self, registry: Registry, capture: CaptureStream | None) -> iam.Role:
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Sluice endpoint of model {self.model_name}",
        )
        registry.grant_read(role, model=self.model_name)
        if capture is not None:
            capture.grant_put(role)
        acknowledge_grant_wildcards(role, buckets=[registry.bucket], xray=True)
        return role

    def _environment(self, registry: Registry, capture: CaptureStream | None) -> dict[str, str]:
        environment = {
            **registry.environment,
            "SLUICE_MODEL_NAME": self.model_name,
            "SLUICE_MODEL_FLAVOUR": FLAVOURS[self.flavour],
        }
        if capture is not None:
            environment["SLUICE_CAPTURE_STREAM"] = capture.stream_name
        if self.flavour == "container":
            # What `sluice endpoint deploy` compares a fitted model's recorded libraries with.
            libraries = self.image.serving_libraries if self.image else image_libraries()
            environment["SLUICE_SERVING_LIBRARIES"] = json.dumps(libraries, separators=(",", ":"))
        return environment

    def _build_handler(
        self,
        environment: dict[str, str],
        *,
        function_name: str | None,
        memory_mb: int,
        timeout_s: int,
        retain_logs: bool,
    ) -> SluiceFunction:
        handler = SluiceFunction(
            self,
            "Handler",
            handler="score",
            role=self.role,
            service=self.service,
            environment=environment,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            retain_logs=retain_logs,
            container="scoring" if self.flavour == "container" else None,
            image=self.image,
        )
        if function_name:
            cast(lambda_.CfnFunction, handler.function.node.default_child).function_name = function_name
        return handler

    def _build_layer(self) -> lambda_.LayerVersion:
        # Added before the alias is made: the layers are part of the version it points to.
        layer = lambda_.LayerVersion(
            self,
            "ScoringLayer",
            code=lambda_.Code.from_asset(str(_scoring_layer_dir())),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="numpy + ONNX Runtime for the zip scoring flavour",
        )
        self.function.add_layers(layer)
        return layer

    # --- API -----------------------------------------------------------------------------------

    def _build_api(
        self,
        request_schema: Mapping[str, Any] | None,
        *,
        api_key: bool,
        rate_limit: int,
        burst_limit: int,
        retain_logs: bool,
        api_stage: str,
    ) -> None:
        self.api_stage = api_stage
        self.rest = SecureRestApi(
            self,
            "Rest",
            description=f"Sluice endpoint of model {self.model_name}",
            stage_name=api_stage,
            rate_limit=rate_limit,
            burst_limit=burst_limit,
            retain_logs=retain_logs,
        )
        self.api = self.rest.api
        self.request_schema = request_json_schema(request_schema)
        self.request_model = self.api.add_model(
            "ScoringRequest",
            content_type="application/json",
            model_name="ScoringRequest",
            schema=to_apigw_schema(self.request_schema),
        )
        self.predict = self.api.root.add_resource("predict")
        self.predict_method = self.predict.add_method(
            "POST",
            apigw.LambdaIntegration(self.alias),
            request_validator=self.rest.validator,
            request_models=body_models(self.request_model),
            api_key_required=api_key,
        )

    def _build_usage_plan(self, *, rate_limit: int, burst_limit: int, quota_per_day: int | None) -> None:
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            throttle=apigw.ThrottleSettings(rate_limit=rate_limit, burst_limit=burst_limit),
            quota=apigw.QuotaSettings(limit=quota_per_day, period=apigw.Period.DAY)
            if quota_per_day
            else None,
        )
        self.usage_plan.add_api_stage(stage=self.api.deployment_stage)
        self.api_key = self.api.add_api_key("ApiKey")
        self.usage_plan.add_api_key(self.api_key)

    # --- alarms and CodeDeploy -------------------------------------------------------------------

    def _build_alarm(self, spec: _AlarmSpec) -> cloudwatch.Alarm:
        metric = cloudwatch.Metric(
            namespace=ENDPOINT_NAMESPACE,
            metric_name=spec.metric,
            dimensions_map={"Model": self.model_name, "service": self.service},
            statistic=spec.statistic,
            period=cdk.Duration.minutes(1),
        )
        return metric.create_alarm(
            self,
            spec.id,
            alarm_description=f"{self.model_name} endpoint: {spec.description}",
            threshold=spec.threshold,
            evaluation_periods=1,
            comparison_operator=spec.comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _build_deployment_group(
        self, deployment_config: codedeploy.ILambdaDeploymentConfig | None
    ) -> codedeploy.LambdaDeploymentGroup:
        group = codedeploy.LambdaDeploymentGroup(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=deployment_config
            or codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
            alarms=self.alarms,
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
        )
        acknowledge(
            group,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSCodeDeployRoleForLambdaLimited]": "AWS's own managed policy for CodeDeploy's Lambda "
                "traffic shifting: it may only read and update the aliases CodeDeploy deploys."
            },
        )
        return group

    @property
    def url(self) -> str:
        """``https://.../<api stage>/predict``."""
        return self.api.url_for_path("/predict")

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to call ``POST /predict`` (SigV4)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["execute-api:Invoke"],
            resource_arns=[self.api.arn_for_execute_api("POST", "/predict", self.api_stage)],
        )

    def grant_deploy(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to run ``sluice endpoint deploy|shift|promote|rollback|canary``.

        Bind a model version and publish it, move the ``live`` alias weights, read them back;
        nothing else on the function (the code comes from ``cdk deploy`` only: no layers).
        """
        function_arn = self.function.function_arn
        # Binding a version changes the environment only; a layer would be code running as the
        # endpoint's role, around the signature checks, so no deployer may add one.
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["lambda:UpdateFunctionConfiguration"],
                resources=[function_arn],
                conditions={"Null": {"lambda:Layer": "false"}},
            )
        )
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "lambda:GetFunctionConfiguration",
                "lambda:UpdateFunctionConfiguration",
                "lambda:PublishVersion",
                "lambda:ListVersionsByFunction",
                "lambda:GetAlias",
                "lambda:UpdateAlias",
            ],
            resource_arns=[function_arn, self.alias.function_arn],
        )


def _alarm_specs(
    error_threshold: int, latency_p99_ms: int, quality_bounds: tuple[float, float]
) -> list[_AlarmSpec]:
    """The deployment alarms: server errors, p99 latency, mean positive probability out of bounds."""
    low, high = quality_bounds
    op = cloudwatch.ComparisonOperator
    return [
        _AlarmSpec(
            "ErrorsAlarm",
            "Errors",
            "Sum",
            error_threshold,
            op.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            "server errors (model cannot load or predict)",
        ),
        _AlarmSpec(
            "LatencyAlarm",
            "Latency",
            "p99",
            latency_p99_ms,
            op.GREATER_THAN_THRESHOLD,
            f"p99 latency above {latency_p99_ms} ms",
        ),
        _AlarmSpec(
            "QualityHighAlarm",
            "PositiveProbability",
            "Average",
            high,
            op.GREATER_THAN_THRESHOLD,
            f"mean positive probability above {high}",
        ),
        _AlarmSpec(
            "QualityLowAlarm",
            "PositiveProbability",
            "Average",
            low,
            op.LESS_THAN_THRESHOLD,
            f"mean positive probability below {low}",
        ),
    ]


def _scoring_layer_dir() -> Path:
    if not (SCORING_LAYER_DIR / "python").is_dir():
        raise FileNotFoundError(
            f"{SCORING_LAYER_DIR}/python is missing: run `make install`, which builds the zip "
            "scoring flavour's numpy + ONNX Runtime layer"
        )
    return SCORING_LAYER_DIR


def request_json_schema(request_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON Schema (draft-04) of a scoring request: ``request_schema`` as given, or the bare envelope."""
    if request_schema is not None:
        return dict(request_schema)
    return {
        "$schema": JSON_SCHEMA_DRAFT4,
        "title": "ScoringRequest",
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_INSTANCES,
                "items": {"type": "object"},
            }
        },
    }


_JSON_TYPES = {
    "object": apigw.JsonSchemaType.OBJECT,
    "array": apigw.JsonSchemaType.ARRAY,
    "string": apigw.JsonSchemaType.STRING,
    "number": apigw.JsonSchemaType.NUMBER,
    "integer": apigw.JsonSchemaType.INTEGER,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "null": apigw.JsonSchemaType.NULL,
}


def to_apigw_schema(schema: Mapping[str, Any]) -> apigw.JsonSchema:
    """An ``apigw.JsonSchema`` from a plain draft-04 JSON Schema dict (the subset the feature schema uses)."""
    kwargs: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema":
            kwargs["schema"] = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            kwargs["type"] = (
                [_JSON_TYPES[t] for t in value] if isinstance(value, list) else _JSON_TYPES[value]
            )
        elif key == "properties":
            kwargs["properties"] = {name: to_apigw_schema(prop) for name, prop in value.items()}
        elif key == "items":
            kwargs["items"] = to_apigw_schema(value)
        elif key == "additionalProperties":
            kwargs["additional_properties"] = value
        elif key in ("title", "required", "enum", "description"):
            kwargs[key] = value
        elif key in ("minItems", "maxItems", "minimum", "maximum"):
            kwargs[{"minItems": "min_items", "maxItems": "max_items"}.get(key, key)] = value
        else:
            raise ValueError(f"JSON Schema keyword {key!r} is not translated for API Gateway")
    return apigw.JsonSchema(**kwargs)
