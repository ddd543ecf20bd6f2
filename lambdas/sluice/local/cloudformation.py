"""Deploy synthesized CDK templates onto moto's CloudFormation, and fill what it skips.

The stacks are created by moto's own ``CreateStack`` from the synthesized template bodies,
so references, ``Fn::ImportValue`` across stacks, parameters and outputs behave as they do
in AWS. Before the body is sent, ``{{resolve:ssm:...}}`` dynamic references are resolved
(moto does not), using the local SSM or, for AWS public parameters such as the Powertools
layer ARN, a fixed local value.

moto's CloudFormation skips resource types it has no model for (it warns and creates
nothing, so a ``Ref`` to them yields nothing). :func:`install` registers small *filler*
models for the types Sluice uses: each one creates the resource through moto's regular API
(``filled``) or records it (``emulated``) so a local component can act on it. Every type in
:data:`RESOURCE_SUPPORT` says which; :func:`support_of` raises for a type nobody decided on,
so a new construct cannot silently deploy half-way.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config

from sluice import aws
from sluice.assembly import StackArtifact
from sluice.errors import SluiceError

# A failed CreateStack must not be retried: it would create the stack's resources twice.
NO_RETRY = Config(retries={"max_attempts": 0}, read_timeout=300)

MOTO = "moto"
FILLED = "filled"
EMULATED = "emulated"
IGNORED = "ignored"

# One explicit table: how each CloudFormation resource type exists locally.
# "ignored (...)" entries carry the reason.
RESOURCE_SUPPORT: dict[str, str] = {
    # Created by moto's CloudFormation.
    "AWS::ApiGateway::Deployment": MOTO,
    "AWS::ApiGateway::Method": MOTO,  # + RequestModels/RequestValidatorId, which moto drops
    "AWS::ApiGateway::Resource": MOTO,
    "AWS::ApiGateway::RestApi": MOTO,
    "AWS::CloudWatch::Dashboard": MOTO,
    "AWS::DynamoDB::Table": MOTO,
    "AWS::ECR::Repository": MOTO,
    "AWS::Events::EventBus": MOTO,
    "AWS::Events::Rule": MOTO,
    "AWS::IAM::ManagedPolicy": MOTO,
    "AWS::IAM::Policy": MOTO,
    "AWS::IAM::Role": MOTO,
    "AWS::IAM::User": MOTO,
    "AWS::KMS::Alias": MOTO,
    "AWS::KMS::Key": MOTO,  # + Tags, which moto's model passes in the wrong shape
    "AWS::Kinesis::Stream": MOTO,
    "AWS::Lambda::EventSourceMapping": MOTO,
    "AWS::Lambda::Function": MOTO,
    "AWS::Lambda::LayerVersion": MOTO,
    "AWS::Lambda::Permission": MOTO,
    "AWS::Logs::LogGroup": MOTO,
    "AWS::Logs::ResourcePolicy": MOTO,
    "AWS::S3::Bucket": MOTO,
    "AWS::SNS::Topic": MOTO,
    "AWS::SQS::Queue": MOTO,
    "AWS::SSM::Parameter": MOTO,
    "AWS::StepFunctions::StateMachine": MOTO,
    # Skipped by moto's CloudFormation; created here through moto's regular APIs.
    "AWS::ApiGateway::GatewayResponse": FILLED,
    "AWS::ApiGateway::Model": FILLED,
    "AWS::ApiGateway::RequestValidator": FILLED,
    "AWS::ApiGateway::Stage": FILLED,
    "AWS::CloudWatch::Alarm": FILLED,
    "AWS::CloudWatch::CompositeAlarm": FILLED,
    "AWS::KinesisFirehose::DeliveryStream": FILLED,
    "AWS::Lambda::Alias": FILLED,
    "AWS::Logs::LogStream": FILLED,
    "AWS::Lambda::Version": FILLED,  # moto's model has neither a physical id nor GetAtt Version
    "AWS::Scheduler::Schedule": FILLED,
    "AWS::SNS::Subscription": FILLED,
    # No moto API worth driving; recorded for the local components that act on them.
    "AWS::CodeDeploy::Application": EMULATED,
    "AWS::CodeDeploy::DeploymentConfig": EMULATED,
    "AWS::CodeDeploy::DeploymentGroup": EMULATED,
    "AWS::Lambda::EventInvokeConfig": EMULATED,
    "AWS::Scheduler::ScheduleGroup": EMULATED,
    "AWS::Glue::Database": EMULATED,
    "AWS::Glue::Table": EMULATED,
    "AWS::Athena::WorkGroup": EMULATED,
    # Policies are not enforced locally (moto does not evaluate IAM or resource policies).
    "AWS::S3::BucketPolicy": "ignored (resource policies are not enforced locally)",
    "AWS::SNS::TopicPolicy": "ignored (resource policies are not enforced locally)",
    "AWS::SQS::QueuePolicy": "ignored (resource policies are not enforced locally)",
    "AWS::ApiGateway::Account": "ignored (account-wide CloudWatch role, no local effect)",
    "AWS::CDK::Metadata": "ignored (CDK usage analytics, no runtime effect)",
}


def support_of(resource_type: str) -> str:
    """``moto`` | ``filled`` | ``emulated`` | ``ignored (...)`` for one resource type.

    Raises
    ------
    SluiceError
        If nobody decided how the type exists locally (add it to ``RESOURCE_SUPPORT``).
    """
    try:
        return RESOURCE_SUPPORT[resource_type]
    except KeyError:
        raise SluiceError(
            f"resource type {resource_type} is not supported by the local AWS "
            "(add it to sluice.local.cloudformation.RESOURCE_SUPPORT)"
        ) from None


@dataclass
class EmulatedResource:
    """A resource recorded instead of created; local components read ``properties``."""

    stack_name: str
    logical_id: str
    resource_type: str
    physical_id: str
    properties: dict[str, Any] = field(default_factory=dict)


# stack name -> logical id -> resource; read by sluice.local components (e.g. CodeDeploy).
EMULATED_RESOURCES: dict[str, dict[str, EmulatedResource]] = {}
_EMULATED_LOCK = threading.Lock()


def emulated_resources(resource_type: str | None = None) -> list[EmulatedResource]:
    """Every emulated resource (optionally of one type), across stacks."""
    with _EMULATED_LOCK:
        found = [r for stack in EMULATED_RESOURCES.values() for r in stack.values()]
    return [r for r in found if resource_type is None or r.resource_type == resource_type]


# --------------------------------------------------------------------------- templates

_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:(ssm|ssm-secure|secretsmanager):([^}]+)\}\}")
_POWERTOOLS_PARAMETER = re.compile(
    r"^/aws/service/powertools/python/(?P<arch>[^/]+)/(?P<runtime>[^/]+)/(?P<version>[^/]+)$"
)


def resolve_dynamic_references(body: str, *, region: str) -> str:
    """Replace ``{{resolve:ssm:name}}`` (and secretsmanager) references in a template body.

    AWS public parameters under ``/aws/service/`` cannot be written to moto's SSM; the
    Powertools layer parameter resolves to the public layer's ARN shape. Locally, layers do
    not run: workers use the packages installed next to Sluice.
    """

    def resolve(match: re.Match) -> str:
        service, reference = match.group(1), match.group(2)
        if service == "secretsmanager":
            secret_id = reference.split(":SecretString:")[0]
            return aws.client("secretsmanager", region=region).get_secret_value(SecretId=secret_id)[
                "SecretString"
            ]
        name = reference.rsplit(":", 1)[0] if re.search(r":\d+$", reference) else reference
        public = _POWERTOOLS_PARAMETER.match(name)
        if public:
            runtime = public["runtime"].replace(".", "")
            return (
                f"arn:aws:lambda:{region}:017000801446:layer:"
                f"AWSLambdaPowertoolsPythonV3-{runtime}-{public['arch']}:1"
            )
        ssm = aws.client("ssm", region=region)
        try:
            return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            raise SluiceError(
                f"template references SSM parameter {name}, which does not exist locally"
            ) from None

    return _DYNAMIC_REFERENCE.sub(resolve, body)


@dataclass(frozen=True)
class DeployedResource:
    logical_id: str
    resource_type: str
    physical_id: str
    support: str


@dataclass(frozen=True)
class DeployedStack:
    stack_name: str
    stack_id: str
    outputs: dict[str, str]
    resources: tuple[DeployedResource, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack_name": self.stack_name,
            "stack_id": self.stack_id,
            "outputs": self.outputs,
            "resources": [r.__dict__ for r in self.resources],
        }


def deploy_stack(stack: StackArtifact) -> DeployedStack:
    """Create one synthesized stack with moto's CloudFormation and describe what exists.

    Raises
    ------
    SluiceError
        If a resource type has no local support, or CloudFormation rejects the template.
    """
    install()
    template = stack.template
    for _logical_id, resource in template.get("Resources", {}).items():
        support_of(resource["Type"])  # fail before creating anything
    body = resolve_dynamic_references(json.dumps(template), region=stack.region)
    cfn = aws.client("cloudformation", region=stack.region, config=NO_RETRY)
    try:
        created = cfn.create_stack(
            StackName=stack.stack_name,
            TemplateBody=body,
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            Tags=[{"Key": "sluice:local", "Value": "true"}],
        )
    except cfn.exceptions.ClientError as err:
        raise SluiceError(f"local CloudFormation rejected stack {stack.stack_name}: {err}") from err
    described = cfn.describe_stacks(StackName=stack.stack_name)["Stacks"][0]
    if described["StackStatus"] != "CREATE_COMPLETE":
        raise SluiceError(
            f"stack {stack.stack_name} ended in {described['StackStatus']}: {described.get('StackStatusReason')}"
        )
    summaries = cfn.list_stack_resources(StackName=stack.stack_name)["StackResourceSummaries"]
    physical = {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries}
    resources = tuple(
        DeployedResource(
            logical_id=logical_id,
            resource_type=resource["Type"],
            physical_id=str(physical.get(logical_id, "")),
            support=support_of(resource["Type"]),
        )
        for logical_id, resource in template.get("Resources", {}).items()
    )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
    return DeployedStack(stack.stack_name, created["StackId"], outputs, resources)


# --------------------------------------------------------------------------- fillers


@dataclass(frozen=True)
class FillContext:
    account: str
    region: str
    logical_id: str
    stack_name: str
    generated_name: str  # what moto would name the resource if the template does not


Filler = Callable[[dict[str, Any], FillContext], tuple[str, dict[str, Any]]]
_FILLERS: dict[str, Filler] = {}


def _filler(resource_type: str) -> Callable[[Filler], Filler]:
    def register(fn: Filler) -> Filler:
        _FILLERS[resource_type] = fn
        return fn

    return register


def _lambda_backend(ctx: FillContext) -> Any:
    from moto.awslambda.models import lambda_backends

    return lambda_backends[ctx.account][ctx.region]


@_filler("AWS::Lambda::Version")
def _fill_version(props: dict, ctx: FillContext) -> tuple[str, dict]:
    fn = _lambda_backend(ctx).publish_version(props["FunctionName"], props.get("Description", ""))
    if fn is None:
        raise SluiceError(f"{ctx.logical_id}: cannot publish a version of {props['FunctionName']}")
    version = str(fn.version)
    arn = fn.function_arn if fn.function_arn.endswith(f":{version}") else f"{fn.function_arn}:{version}"
    return arn, {"Version": version, "FunctionArn": arn}


@_filler("AWS::Lambda::Alias")
def _fill_alias(props: dict, ctx: FillContext) -> tuple[str, dict]:
    routing = None
    weights = (props.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    if weights:
        routing = {
            "AdditionalVersionWeights": {
                str(w["FunctionVersion"]): float(w["FunctionWeight"]) for w in weights
            }
        }
    name = props["FunctionName"].split(":function:")[-1].split(":")[0]
    alias = _lambda_backend(ctx).create_alias(
        name=props["Name"],
        function_name=name,
        function_version=str(props["FunctionVersion"]),
        description=props.get("Description", ""),
        routing_config=routing,
    )
    return alias.arn, {"AliasArn": alias.arn}


@_filler("AWS::ApiGateway::Stage")
def _fill_stage(props: dict, ctx: FillContext) -> tuple[str, dict]:
    api = aws.client("apigateway", region=ctx.region)
    name = props["StageName"]
    existing = {s["stageName"] for s in api.get_stages(restApiId=props["RestApiId"])["item"]}
    if name not in existing:
        api.create_stage(
            restApiId=props["RestApiId"],
            stageName=name,
            deploymentId=props["DeploymentId"],
            description=props.get("Description", ""),
            variables=props.get("Variables") or {},
            tracingEnabled=bool(props.get("TracingEnabled", False)),
        )
    return name, {}


@_filler("AWS::ApiGateway::GatewayResponse")
def _fill_gateway_response(props: dict, ctx: FillContext) -> tuple[str, dict]:
    aws.client("apigateway", region=ctx.region).put_gateway_response(
        restApiId=props["RestApiId"],
        responseType=props["ResponseType"],
        **({"statusCode": str(props["StatusCode"])} if props.get("StatusCode") else {}),
        responseParameters=props.get("ResponseParameters") or {},
        responseTemplates=props.get("ResponseTemplates") or {},
    )
    return f"{props['RestApiId']}-{props['ResponseType']}", {}


@_filler("AWS::ApiGateway::RequestValidator")
def _fill_validator(props: dict, ctx: FillContext) -> tuple[str, dict]:
    created = aws.client("apigateway", region=ctx.region).create_request_validator(
        restApiId=props["RestApiId"],
        name=props.get("Name") or ctx.logical_id,
        validateRequestBody=bool(props.get("ValidateRequestBody", False)),
        validateRequestParameters=bool(props.get("ValidateRequestParameters", False)),
    )
    return created["id"], {"RequestValidatorId": created["id"]}


@_filler("AWS::ApiGateway::Model")
def _fill_model(props: dict, ctx: FillContext) -> tuple[str, dict]:
    name = props.get("Name") or re.sub(r"[^A-Za-z0-9]", "", ctx.logical_id)
    schema = props.get("Schema", {})
    aws.client("apigateway", region=ctx.region).create_model(
        restApiId=props["RestApiId"],
        name=name,
        contentType=props.get("ContentType", "application/json"),
        schema=schema if isinstance(schema, str) else json.dumps(schema),
        description=props.get("Description", ""),
    )
    return name, {}


def _api_params(props: dict, drop: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in props.items() if k not in drop and v is not None}


@_filler("AWS::Logs::LogStream")
def _fill_log_stream(props: dict, ctx: FillContext) -> tuple[str, dict]:
    name = props.get("LogStreamName") or ctx.generated_name
    logs = aws.client("logs", region=ctx.region)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=props["LogGroupName"], logStreamName=name)
    return name, {}


@_filler("AWS::CloudWatch::Alarm")
def _fill_alarm(props: dict, ctx: FillContext) -> tuple[str, dict]:
    params = _api_params(props)
    params.setdefault("AlarmName", ctx.generated_name)
    for key in ("Threshold",):
        if key in params:
            params[key] = float(params[key])
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in params:
            params[key] = int(params[key])
    for metric in params.get("Metrics", []):
        stat = metric.get("MetricStat")
        if stat and "Period" in stat:
            stat["Period"] = int(stat["Period"])
    client = aws.client("cloudwatch", region=ctx.region)
    client.put_metric_alarm(**params)
    arn = f"arn:aws:cloudwatch:{ctx.region}:{ctx.account}:alarm:{params['AlarmName']}"
    return params["AlarmName"], {"Arn": arn}


@_filler("AWS::CloudWatch::CompositeAlarm")
def _fill_composite_alarm(props: dict, ctx: FillContext) -> tuple[str, dict]:
    params = _api_params(props)
    params.setdefault("AlarmName", ctx.generated_name)
    aws.client("cloudwatch", region=ctx.region).put_composite_alarm(**params)
    arn = f"arn:aws:cloudwatch:{ctx.region}:{ctx.account}:alarm:{params['AlarmName']}"
    return params["AlarmName"], {"Arn": arn}


@_filler("AWS::Scheduler::Schedule")
def _fill_schedule(props: dict, ctx: FillContext) -> tuple[str, dict]:
    params = _api_params(props)
    params.setdefault("Name", ctx.generated_name[:64])
    params.setdefault("FlexibleTimeWindow", {"Mode": "OFF"})
    created = aws.client("scheduler", region=ctx.region).create_schedule(**params)
    return params["Name"], {"Arn": created["ScheduleArn"]}


@_filler("AWS::SNS::Subscription")
def _fill_subscription(props: dict, ctx: FillContext) -> tuple[str, dict]:
    created = aws.client("sns", region=ctx.region).subscribe(
        TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props.get("Endpoint", "")
    )
    return created["SubscriptionArn"], {}


@_filler("AWS::KinesisFirehose::DeliveryStream")
def _fill_firehose(props: dict, ctx: FillContext) -> tuple[str, dict]:
    name = props.get("DeliveryStreamName") or ctx.generated_name[:64]
    params: dict[str, Any] = {
        "DeliveryStreamName": name,
        "DeliveryStreamType": props.get("DeliveryStreamType", "DirectPut"),
    }
    for key in ("ExtendedS3DestinationConfiguration", "S3DestinationConfiguration"):
        if key in props:
            config = json.loads(json.dumps(props[key]))
            buffering = config.get("BufferingHints", {})
            for k in list(buffering):
                buffering[k] = int(buffering[k])
            params[key] = config
    created = aws.client("firehose", region=ctx.region).create_delivery_stream(**params)
    return name, {"Arn": created["DeliveryStreamARN"]}


def _emulate(props: dict, ctx: FillContext, resource_type: str) -> tuple[str, dict]:
    physical = props.get("Name") or props.get("ApplicationName") or props.get("DeploymentGroupName")
    physical = str(physical or f"{ctx.generated_name}")
    resource = EmulatedResource(ctx.stack_name, ctx.logical_id, resource_type, physical, props)
    with _EMULATED_LOCK:
        EMULATED_RESOURCES.setdefault(ctx.stack_name, {})[ctx.logical_id] = resource
    arn = f"arn:aws:{resource_type.split('::')[1].lower()}:{ctx.region}:{ctx.account}:{physical}"
    return physical, {"Arn": arn, "Name": physical}


# --------------------------------------------------------------------------- moto wiring

_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def install() -> None:
    """Register the filler models with moto's CloudFormation and fix its model gaps (idempotent).

    Raises
    ------
    RuntimeError
        If the moto internals this relies on moved (moto upgraded), naming the symbol.
    """
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        parsing = _require("moto.cloudformation.parsing", "get_model_map")
        from moto.core.common_models import CloudFormationModel

        model_map = parsing.get_model_map()
        if not isinstance(model_map, dict):
            raise RuntimeError("moto.cloudformation.parsing.get_model_map() no longer returns a dict")
        for resource_type, support in RESOURCE_SUPPORT.items():
            if support == FILLED:
                model_map[resource_type] = _model_class(
                    resource_type, _FILLERS[resource_type], CloudFormationModel
                )
            elif support == EMULATED:
                model_map[resource_type] = _model_class(
                    resource_type, lambda p, c, t=resource_type: _emulate(p, c, t), CloudFormationModel
                )
        _patch_kms_key()
        # Skipped types are all in RESOURCE_SUPPORT; moto's per-resource warning is noise.
        warnings.filterwarnings(
            "ignore", message="Tried to parse .* not supported by moto", category=UserWarning
        )
        _patch_method_request_models()
        _patch_resource_errors(parsing)
        _INSTALLED = True


def _require(module_name: str, attribute: str) -> Any:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RuntimeError(f"{module_name} cannot be imported ({err}); sluice.local must be updated") from err
    if not hasattr(module, attribute):
        raise RuntimeError(
            f"{module_name}.{attribute} is gone (moto upgraded?); sluice.local must be updated"
        )
    return module


def _model_class(resource_type: str, create: Callable[..., tuple[str, dict]], base: type) -> type:
    class Filled(base):  # type: ignore[misc, valid-type]
        def __init__(self, physical_id: str, attributes: dict[str, Any]) -> None:
            self._physical_id = physical_id
            self.attributes = attributes

        @property
        def physical_resource_id(self) -> str:
            return self._physical_id

        @staticmethod
        def cloudformation_type() -> str:
            return resource_type

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return True

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

            if attribute_name in self.attributes:
                return self.attributes[attribute_name]
            raise UnformattedGetAttTemplateException()

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[override]
            cls,
            resource_name: str,
            cloudformation_json: dict,
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Filled:
            ctx = FillContext(
                account=account_id,
                region=region_name,
                logical_id=kwargs.get("LogicalId", resource_name),
                stack_name=_stack_name_from_id(kwargs.get("StackId", "")),
                generated_name=resource_name
                if resource_name != resource_type
                else f"{kwargs.get('LogicalId', 'r')}-{uuid.uuid4().hex[:8]}",
            )
            try:
                physical, attributes = create(_plain(cloudformation_json.get("Properties", {})), ctx)
            except Exception as err:  # reported by CreateStack, naming the resource
                from moto.cloudformation.exceptions import ValidationError

                raise ValidationError(
                    message=f"local AWS could not create {ctx.logical_id} ({resource_type}): {err}"
                ) from err
            return cls(physical, attributes)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource: Any, *args: Any, **kwargs: Any) -> Any:
            return original_resource

        @classmethod
        def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
            return None

        def is_created(self) -> bool:
            return True

    Filled.__name__ = Filled.__qualname__ = "Filled" + resource_type.replace("::", "")
    return Filled


def _plain(value: Any) -> Any:
    # moto's Ref yields the model object for a few types without a physical id
    # (e.g. AWS::ApiGateway::Deployment); CloudFormation yields the id.
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    for attribute in ("physical_resource_id", "id", "arn", "name"):
        found = getattr(value, attribute, None)
        if isinstance(found, str):
            return found
    return str(value)


def _stack_name_from_id(stack_id: str) -> str:
    # arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>
    parts = stack_id.split(":stack/")
    return parts[1].split("/")[0] if len(parts) == 2 else stack_id


def _patch_kms_key() -> None:
    # moto's AWS::KMS::Key model hands CloudFormation's {Key, Value} tags to a tagger that
    # expects {TagKey, TagValue}, so any tagged key (CDK tags every stage) fails to create;
    # and it stores the KeyPolicy object where KMS later expects a JSON string.
    from moto.kms.models import Key

    original = Key.__dict__.get("create_from_cloudformation_json")
    if original is None:
        raise RuntimeError(
            "moto.kms.models.Key.create_from_cloudformation_json is gone; sluice.local must be updated"
        )
    if getattr(original, "__sluice__", False):
        return
    func = original.__func__

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.get("Properties", {})
        if isinstance(props.get("KeyPolicy"), dict):  # stored as given; KMS calls json.loads it
            props["KeyPolicy"] = json.dumps(props["KeyPolicy"])
        props["Tags"] = [
            {"TagKey": t.get("Key", t.get("TagKey")), "TagValue": t.get("Value", t.get("TagValue"))}
            for t in props.get("Tags", [])
        ]
        return func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    create.__sluice__ = True  # type: ignore[attr-defined]
    Key.create_from_cloudformation_json = classmethod(create)  # type: ignore[method-assign]


def _patch_method_request_models() -> None:
    # moto's AWS::ApiGateway::Method drops RequestModels, RequestValidatorId and
    # RequestParameters; the local gateway validates bodies with them.
    from moto.apigateway.models import Method

    original = Method.__dict__.get("create_from_cloudformation_json")
    if original is None:
        raise RuntimeError(
            "moto.apigateway.models.Method.create_from_cloudformation_json is gone; sluice.local must be updated"
        )
    if getattr(original, "__sluice__", False):
        return
    func = original.__func__

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        method = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        props = cloudformation_json.get("Properties", {})
        method.request_models = props.get("RequestModels") or method.request_models
        method.request_validator_id = props.get("RequestValidatorId") or method.request_validator_id
        method.request_parameters = props.get("RequestParameters") or method.request_parameters
        return method

    create.__sluice__ = True  # type: ignore[attr-defined]
    Method.create_from_cloudformation_json = classmethod(create)  # type: ignore[method-assign]


def _patch_resource_errors(parsing: Any) -> None:
    # moto turns any exception inside a resource's creation into a KeyError swallowed by
    # Mapping.get, reported later as "Fn::GetAtt references undefined resource". Name the
    # resource and the real error instead.
    # moto also creates a resource early, when another one's Ref/GetAtt needs it, without
    # its DependsOn: an ApiGateway::Stage referencing the Deployment created the deployment
    # before its methods ("The REST API doesn't contain any methods"). Create DependsOn first,
    # as CloudFormation does.
    original = getattr(parsing, "parse_and_create_resource", None)
    if original is None:
        raise RuntimeError(
            "moto.cloudformation.parsing.parse_and_create_resource is gone; sluice.local must be updated"
        )
    if getattr(original, "__sluice__", False):
        return

    def create(logical_id, resource_json, resources_map, account_id, region_name):
        depends_on = resource_json.get("DependsOn") or []
        for dependency in [depends_on] if isinstance(depends_on, str) else depends_on:
            resources_map[dependency]  # creates it when not created yet
        try:
            return original(logical_id, resource_json, resources_map, account_id, region_name)
        except KeyError as err:
            raise RuntimeError(
                f"creating {logical_id} ({resource_json.get('Type')}) failed: KeyError {err}"
            ) from err

    create.__sluice__ = True  # type: ignore[attr-defined]
    parsing.parse_and_create_resource = create
