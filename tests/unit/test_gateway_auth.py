"""SigV4 verification of the local gateway (localaws.auth) against moto's IAM and STS, in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import Message

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

from localaws import auth

REGION = "eu-west-1"
URL = "http://127.0.0.1:4010/dev/models/credit?verbose=1"
PATH = "/dev/models/credit?verbose=1"


@pytest.fixture
def keys():
    """A user's access key and an assumed-role session, issued by moto."""
    with mock_aws():
        iam, sts = boto3.client("iam", region_name=REGION), boto3.client("sts", region_name=REGION)
        user_id = iam.create_user(UserName="dev")["User"]["UserId"]
        key = iam.create_access_key(UserName="dev")["AccessKey"]
        role = iam.create_role(RoleName="ops", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        session = sts.assume_role(RoleArn=role, RoleSessionName="bob")["Credentials"]
        yield {
            "user": Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
            "user_id": user_id,
            "session": Credentials(session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]),
        }


def _received(headers: dict[str, str]) -> Message:
    message = Message()
    message["Host"] = "127.0.0.1:4010"
    for name, value in headers.items():
        message[name] = value
    return message


def _verify(headers: dict[str, str], body: bytes = b"", *, path: str = PATH, **kwargs) -> auth.Identity:
    return auth.verify("POST", path, _received(headers), body, region=REGION, **kwargs)


def test_a_signed_request_yields_the_user(keys):
    headers = auth.sign("POST", URL, body=b"{}", credentials=keys["user"], region=REGION)
    identity = _verify(headers, b"{}")
    assert identity.arn.endswith(":user/dev") and identity.access_key == keys["user"].access_key
    assert identity.principal_id == keys["user_id"]  # what API Gateway reports as caller and user


def test_a_session_yields_the_assumed_role_and_needs_its_own_token(keys):
    headers = auth.sign("POST", URL, credentials=keys["session"], region=REGION)
    assert _verify(headers).arn.endswith(":assumed-role/ops/bob")
    other = Credentials(keys["session"].access_key, keys["session"].secret_key, "another-token")
    with pytest.raises(auth.AuthError, match="security token included in the request is invalid"):
        _verify(auth.sign("POST", URL, credentials=other, region=REGION))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: {**h, "Authorization": h["Authorization"][:-4] + "0000"}, auth.BAD_SIGNATURE),
        (lambda h: {k: v for k, v in h.items() if k != "Authorization"}, "Missing Authentication Token"),
        (lambda h: {**h, "Authorization": "Bearer abc"}, "requires 'Credential' parameter"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Amz-Date"}, "'X-Amz-Date' or a 'Date' header"),
    ],
)
def test_refusals_carry_api_gateways_messages(keys, change, message):
    headers = auth.sign("POST", URL, body=b"{}", credentials=keys["user"], region=REGION)
    with pytest.raises(auth.AuthError) as refused:
        _verify(change(headers), b"{}")
    assert refused.value.message.startswith(message) or message in refused.value.message


def test_the_body_and_the_query_are_signed(keys):
    headers = auth.sign("POST", URL, body=b'{"a": 1}', credentials=keys["user"], region=REGION)
    with pytest.raises(auth.AuthError, match="signature we calculated does not match"):
        _verify(headers, b'{"a": 2}')
    with pytest.raises(auth.AuthError, match="signature we calculated does not match"):
        _verify(headers, b'{"a": 1}', path="/dev/models/credit?verbose=2")


def test_unknown_keys_and_wrong_scopes_are_refused(keys):
    unknown = Credentials("AKIAIOSFODNN7EXAMPLE", "secret")
    with pytest.raises(auth.AuthError, match="security token included in the request is invalid") as refused:
        _verify(auth.sign("POST", URL, credentials=unknown, region=REGION))
    assert refused.value.kind == "UnrecognizedClientException"
    with pytest.raises(auth.AuthError, match="valid region"):
        _verify(auth.sign("POST", URL, credentials=keys["user"], region="us-east-1"))
    request = AWSRequest(method="POST", url=URL, data=b"")
    SigV4Auth(keys["user"], "lambda", REGION).add_auth(request)
    with pytest.raises(auth.AuthError, match="correct service: 'execute-api'"):
        _verify(dict(request.headers.items()))


@pytest.mark.parametrize(("minutes", "message"), [(6, "Signature expired"), (-6, "Signature not yet current")])
def test_signatures_more_than_5_minutes_off_are_refused(keys, minutes, message):
    headers = auth.sign("POST", URL, credentials=keys["user"], region=REGION)
    assert _verify(headers, now=datetime.now(UTC) + timedelta(minutes=4))
    with pytest.raises(auth.AuthError, match=message):
        _verify(headers, now=datetime.now(UTC) + timedelta(minutes=minutes))


def test_the_refusal_of_a_huge_signed_header_stays_under_4_kb(keys):
    headers = auth.sign(
        "POST", URL, credentials=keys["user"], region=REGION, headers={"X-Padding": "p" * 20_000}
    )
    headers["X-Padding"] = "q" * 20_000
    with pytest.raises(auth.AuthError) as refused:
        _verify(headers)
    assert len(json.dumps({"message": refused.value.message})) < 4096
