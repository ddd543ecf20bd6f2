"""The registry's storage and API as synthesized: keys in sync with the runtime, recoverable,
encrypted, IAM-authorized routes, and writers that cannot erase the audit trail."""

from __future__ import annotations

import importlib

import pytest
from aws_cdk.assertions import Match

from tests.infra.conftest import resources_of
from tests.infra.test_iam import _role_policies

STAGES = ["Dev", "Prod"]
ROUTES = {
    ("GET", "/models"),
    ("GET", "/models/{name}"),
    ("GET", "/models/{name}/history"),
    ("GET", "/models/{name}/versions/{version}"),
    ("POST", "/models/{name}/versions/{version}/approve"),
    ("POST", "/models/{name}/versions/{version}/reject"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_table_keys_match_the_runtime_and_the_table_is_recoverable(template, stage):
    # The runtime (sluice.registry) and the tests' moto tables use pk/sk strings
    template(f"{stage}-Stateful").has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": f"sluice-{stage.lower()}-registry",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "DeletionProtectionEnabled": stage == "Prod",
        },
    )


def test_prod_keeps_registry_storage_on_stack_deletion(templates):
    resources = templates["Prod-Stateful"]["Resources"]
    kept = {
        logical_id: r.get("DeletionPolicy")
        for logical_id, r in resources.items()
        if logical_id.startswith("Registry")
        and r["Type"] in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::KMS::Key")
    }
    # artifacts key and bucket, manifest and approval keys, audit bucket, table
    assert len(kept) == 6
    assert set(kept.values()) == {"Retain"}


@pytest.mark.parametrize("stage", STAGES)
def test_artifacts_bucket_is_versioned_and_encrypted_with_the_registry_key(template, templates, stage):
    stateful = templates[f"{stage}-Stateful"]
    (key_id,) = [k for k in resources_of(stateful, "AWS::KMS::Key") if k.startswith("RegistryKey")]
    template(f"{stage}-Stateful").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.string_like_regexp(f"^sluice-{stage.lower()}-artifacts-"),
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                            }
                        }
                    )
                ]
            },
        },
    )
    template(f"{stage}-Stateful").has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def _api_routes(template: dict) -> dict[tuple[str, str], dict]:
    """(method, path) -> method properties of the registry REST API."""
    resources = template["Resources"]
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    routes = {}
    for method in resources_of(template, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        if not props["RestApiId"]["Ref"].startswith("RegistryApi"):
            continue
        resource = props["ResourceId"]
        path = "/" if "Fn::GetAtt" in resource else path_of(resource["Ref"])
        routes[(props["HttpMethod"], path)] = props
    return routes


@pytest.mark.parametrize("stage", STAGES)
def test_registry_api_routes_all_require_iam_auth(templates, stage):
    routes = _api_routes(templates[f"{stage}-Service"])
    # Other constructs may add routes to this API (monitoring adds POST /labels): all need IAM too
    assert set(routes) >= ROUTES
    for route, props in routes.items():
        assert props["AuthorizationType"] == "AWS_IAM", route
        assert props["Integration"]["Type"] == "AWS_PROXY", route


def test_decisions_are_validated_at_the_gateway(template, templates):
    routes = _api_routes(templates["Dev-Service"])
    for route in (r for r in ROUTES if r[0] == "POST"):
        assert "RequestValidatorId" in routes[route], route
        assert "application/json" in routes[route]["RequestModels"], route
    template("Dev-Service").has_resource_properties(
        "AWS::ApiGateway::Model",
        {
            "ContentType": "application/json",
            "Schema": Match.object_like(
                {
                    "additionalProperties": False,
                    "properties": {"comment": {"type": "string", "maxLength": 1000}},
                }
            ),
        },
    )


@pytest.mark.parametrize("stage", STAGES)
def test_every_api_says_why_a_body_failed_its_request_model(templates, stage):
    # Each REST API (registry, endpoint) answers BAD_REQUEST_BODY with the validator's reason
    from infra.constructs.api import BAD_REQUEST_BODY_TEMPLATE

    service = templates[f"{stage}-Service"]
    apis = set(resources_of(service, "AWS::ApiGateway::RestApi"))
    responses = resources_of(service, "AWS::ApiGateway::GatewayResponse").values()
    bad_body = [r["Properties"] for r in responses if r["Properties"]["ResponseType"] == "BAD_REQUEST_BODY"]
    assert {p["RestApiId"]["Ref"] for p in bad_body} == apis and len(apis) >= 2
    for props in bad_body:
        assert props["StatusCode"] == "400"
        assert props["ResponseTemplates"] == {"application/json": BAD_REQUEST_BODY_TEMPLATE}
        assert "$context.error.validationErrorString" in BAD_REQUEST_BODY_TEMPLATE


@pytest.mark.parametrize("stage", STAGES)
def test_registry_api_function_runs_the_handler_with_the_registry_names(template, stage):
    template(f"{stage}-Service").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "sluice.handlers.registry_api.lambda_handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "SLUICE_REGISTRY_TABLE": Match.any_value(),
                        "SLUICE_REGISTRY_BUCKET": Match.any_value(),
                    }
                )
            },
        },
    )
    module = importlib.import_module("sluice.handlers.registry_api")
    assert callable(module.lambda_handler)


@pytest.mark.parametrize("role", ["RegistryApiRole", "RetrainingStepsRole", "RolesDeployer"])
def test_registry_writers_cannot_delete_records(templates, role):
    # Given a role that writes registry records
    policies = _role_policies(templates["Dev-Service"], role)
    table_actions = {
        action
        for actions, resources in policies
        for action in actions
        if action.startswith("dynamodb:") and any("RegistryTable" in r or "Import" in r for r in resources)
    }
    # Then it can put, update and condition-check items (the runtime's transactions) ...
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"} <= table_actions, role
    # ... and cannot delete versions or audit events
    assert not table_actions & {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:*"}, role
