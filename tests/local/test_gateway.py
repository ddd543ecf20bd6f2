"""The local API Gateway serves REST APIs with Lambda proxy integrations over HTTP."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials

from localaws.auth import sign
from localaws.gateway import _match_path
from tests.local.conftest import create_two_versions

pytestmark = pytest.mark.local


def _api_for(aws, function_arn: str, *, stage: str = "test") -> str:
    """A REST API with GET /items/{id}, POST /items and ANY /proxy/{proxy+} -> function_arn."""
    api = aws.client("apigateway")
    api_id = api.create_rest_api(name="tiny-api")["id"]
    root = next(r["id"] for r in api.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
    uri = f"arn:aws:apigateway:{aws.region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"
    validator = api.create_request_validator(restApiId=api_id, name="body", validateRequestBody=True)["id"]
    api.create_model(
        restApiId=api_id,
        name="Item",
        contentType="application/json",
        schema=json.dumps(
            {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
        ),
    )
    items = api.create_resource(restApiId=api_id, parentId=root, pathPart="items")["id"]
    item = api.create_resource(restApiId=api_id, parentId=items, pathPart="{id}")["id"]
    proxy_parent = api.create_resource(restApiId=api_id, parentId=root, pathPart="proxy")["id"]
    proxy = api.create_resource(restApiId=api_id, parentId=proxy_parent, pathPart="{proxy+}")["id"]
    routes = [
        (item, "GET", {}),
        (items, "POST", {"requestValidatorId": validator, "requestModels": {"application/json": "Item"}}),
        (proxy, "ANY", {}),
    ]
    for resource, method, extra in routes:
        api.put_method(
            restApiId=api_id, resourceId=resource, httpMethod=method, authorizationType="AWS_IAM", **extra
        )
        api.put_integration(
            restApiId=api_id,
            resourceId=resource,
            httpMethod=method,
            type="AWS_PROXY",
            integrationHttpMethod="POST",
            uri=uri,
        )
    api.create_deployment(restApiId=api_id, stageName=stage)
    return aws.gateway_url(api_id)


def _request(
    conn: http.client.HTTPConnection, method: str, url: str, body: bytes | None = None, credentials=None
) -> tuple[int, dict]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = sign(
        method, url, body=body or b"", headers={"Content-Type": "application/json"}, credentials=credentials
    )
    conn.request(method, target, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def weighted(local_aws):
    """An alias ``live``: version 1 at 0.9, version 2 at 0.1, behind a REST API."""
    name = create_two_versions(local_aws)
    alias = local_aws.client("lambda").create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}},
    )
    return _api_for(local_aws, alias["AliasArn"])


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)


def test_alias_weights_through_the_gateway(weighted):
    # Given an alias weighted 0.9 / 0.1 behind the local gateway
    conn = _connect(weighted)
    # When it is hit 2,000 times over one keep-alive connection
    versions = [_request(conn, "GET", f"{weighted}/items/{i}")[1]["version"] for i in range(2000)]
    # Then 8-12% of requests ran version 2
    share = versions.count("2") / len(versions)
    assert set(versions) == {"1", "2"}
    assert 0.08 <= share <= 0.12, share


def test_proxy_event_carries_path_query_and_stage(weighted):
    conn = _connect(weighted)
    status, body = _request(conn, "GET", f"{weighted}/items/42?colour=red&colour=blue&size=2")
    assert status == 200
    event = body["event"]
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"colour": "blue", "size": "2"}
    assert body["stage"] == "test"


def test_greedy_proxy_and_any_method(weighted):
    conn = _connect(weighted)
    status, body = _request(conn, "DELETE", f"{weighted}/proxy/a/b/c")
    assert status == 200
    assert body["event"]["pathParameters"] == {"proxy": "a/b/c"}
    assert body["event"]["httpMethod"] == "DELETE"


def test_request_model_is_validated(weighted):
    conn = _connect(weighted)
    status, body = _request(conn, "POST", f"{weighted}/items", json.dumps({"size": 3}).encode())
    assert (status, body) == (400, {"message": "Invalid request body"})
    status, body = _request(conn, "POST", f"{weighted}/items", json.dumps({"name": "x"}).encode())
    assert status == 200 and json.loads(body["event"]["body"]) == {"name": "x"}


def test_bad_routes_are_json_errors(weighted):
    conn = _connect(weighted)
    assert _request(conn, "GET", f"{weighted}/nothing/here") == (
        403,
        {"message": "Missing Authentication Token"},
    )
    assert _request(conn, "PUT", f"{weighted}/items/1") == (403, {"message": "Missing Authentication Token"})
    root = weighted.rsplit("/", 1)[0]
    assert _request(conn, "GET", f"{root}/nostage/items/1")[0] == 404


def test_function_errors_and_missing_functions_are_502(local_aws, weighted):
    conn = _connect(weighted)
    assert _request(conn, "GET", f"{weighted}/items/1?fail=yes") == (
        502,
        {"message": "Internal server error"},
    )
    name = create_two_versions(local_aws)
    arn = local_aws.client("lambda").get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    url = _api_for(local_aws, arn.replace(name, "no-such-function"))
    assert _request(_connect(url), "GET", f"{url}/items/1") == (502, {"message": "Internal server error"})


def test_registry_api_from_the_template_is_served(local_aws):
    # Given the registry API created from the synthesized template
    url = local_aws.gateway_url("RegistryApi")
    conn = _connect(url)
    # Then its routes reach its function, and its request validator applies
    status, _ = _request(conn, "GET", f"{url}/models")
    assert status < 500
    role = local_aws.client("iam").get_role(RoleName="sluice-dev-approver")["Role"]["Arn"]
    issued = local_aws.client("sts").assume_role(RoleArn=role, RoleSessionName="carol")["Credentials"]
    approver = Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])
    body = json.dumps({"bogus": 1}).encode()
    status, body = _request(conn, "POST", f"{url}/models/m/versions/1/approve", body, credentials=approver)
    # and (for the approver role, the only one its resource policy lets approve) its
    # BAD_REQUEST_BODY gateway response says what failed
    assert status == 400 and body["message"].startswith("Invalid request body: ")
    assert "bogus" in body["message"]
    assert _request(conn, "GET", f"{url}/unknown")[0] == 403


def test_endpoint_gateway_names_the_feature_a_bad_body_gets_wrong(local_aws):
    # Given the dev stage's endpoint API, whose request model is the credit-risk feature schema
    url = local_aws.gateway_url("EndpointRest")
    conn = _connect(url)
    # When a row carries text where a number belongs, or misses the envelope
    row = {"income": 52000, "debt_ratio": 0.3, "age": "old", "credit_lines": 7, "utilisation": 0.4,
           "late_payments": 1, "tenure": 8, "loan_amount": 18000, "region": "north", "product": "card"}  # fmt: skip
    status, body = _request(conn, "POST", f"{url}/predict", json.dumps({"instances": [row]}).encode())
    # Then the gateway's 400 names the value's path, before any function runs
    assert status == 400 and "instances[0].age" in body["message"], body
    status, body = _request(conn, "POST", f"{url}/predict", b'{"rows": []}')
    assert status == 400 and "instances" in body["message"], body
    status, body = _request(conn, "POST", f"{url}/predict", b"{not json")
    assert status == 400 and body["message"].startswith("Invalid request body: body is not JSON"), body


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/", "", {}),
        ("/models", "models", {}),
        ("/models/{name}", "models/credit", {"name": "credit"}),
        ("/models/{name}", "models", None),
        ("/models/{name}", "models/a/b", None),
        ("/files/{key+}", "files/a/b.txt", {"key": "a/b.txt"}),
        ("/files/{key+}", "files", None),
    ],
)
def test_path_matching(template, path, expected):
    assert _match_path(template, [p for p in path.split("/") if p]) == expected
