"""Fillers: resource types moto's CloudFormation skips, created through moto's regular APIs.

One small function per resource type, registered in :data:`FILLERS` by type. Each takes the
resource's properties and a :class:`FillContext` and returns the physical id and the
``Fn::GetAtt`` attributes. Types that are only recorded go through :func:`emulate`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localaws.cloudformation.support import record_emulated
from localaws.patches import moto_symbol
from sluice import aws
from sluice.errors import SluiceError


@dataclass(frozen=True)
class FillContext:
    account: str
    region: str
    logical_id: str
    stack_name: str
    generated_name: str  # what moto would name the resource if the template does not


Filler = Callable[[dict[str, Any], FillContext], tuple[str, dict[str, Any]]]
FILLERS: dict[str, Filler] = {}


def _filler(resource_type: str) -> Callable[[Filler], Filler]:
    def register(fn: Filler) -> Filler:
        FILLERS[resource_type] = fn
        return fn

    return register


def _lambda_backend(ctx: FillContext) -> Any:
    return moto_symbol("moto.awslambda.models.lambda_backends", owner=__name__)[ctx.account][ctx.region]


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


def emulate(props: dict, ctx: FillContext, resource_type: str) -> tuple[str, dict]:
    """Record a resource that has no moto API worth driving (see ``support.EMULATED``)."""
    physical = props.get("Name") or props.get("ApplicationName") or props.get("DeploymentGroupName")
    physical = str(physical or f"{ctx.generated_name}")
    record_emulated(ctx.stack_name, ctx.logical_id, resource_type, physical, props)
    arn = f"arn:aws:{resource_type.split('::')[1].lower()}:{ctx.region}:{ctx.account}:{physical}"
    return physical, {"Arn": arn, "Name": physical}
