"""The local gateway authenticates and refuses bad input as API Gateway does.

SigV4 on ``AWS_IAM`` methods, verified against the keys moto's IAM and STS hold: unsigned,
unknown key, wrong secret, tampered body and stale signatures get 403; signed requests reach
the function, which sees the verified identity. Bodies nested too deeply get 400, over the
endpoint's limit its 413, over 10 MB the gateway's 413; every error body stays under 4 KB.
"""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.credentials import Credentials

from localaws import auth
from localaws.auth import sign
from localaws.credentials import DEVELOPER
from localaws.env import read_state
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice.serving.request import MAX_BODY_BYTES
from sluice.serving.traffic import EndpointTraffic
from sluice_demo import datasets

pytestmark = pytest.mark.local

MODEL = "credit-risk"
FUNCTION = f"sluice-dev-{MODEL}-endpoint"
JSON = {"Content-Type": "application/json"}


def send(
    url: str, method: str = "GET", body: bytes = b"", headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: status, headers (lower-case names) and raw body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request(method, parts.path, body=body or None, headers=headers or JSON)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def signed(url: str, method: str = "GET", body: bytes = b"", **kwargs) -> tuple[int, dict, bytes]:
    return send(url, method, body, sign(method, url, body=body, headers=dict(JSON), **kwargs))


def message(raw: bytes) -> str:
    return json.loads(raw)["message"]


@pytest.fixture(scope="module")
def served(local_aws):
    """Version 1 of the stage's model approved and serving 100 % on the endpoint; v2 pending."""
    env = local_aws.client("lambda").get_function_configuration(FunctionName=FUNCTION)["Environment"][
        "Variables"
    ]
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    spec = TrainingSpec(numeric=datasets.NUMERIC, categorical=datasets.CATEGORICAL, target=datasets.TARGET)
    for seed in (1, 2):
        registry.register(
            MODEL, bundle_from_training(train(datasets.credit(1500, seed=seed), spec)), lineage=Lineage()
        )
    registry.approve(MODEL, 1, actor="tests")
    traffic = EndpointTraffic(function_name=FUNCTION, model_name=MODEL, registry=registry, actor="tests")
    traffic.deploy(1)
    traffic.promote(1)
    row = datasets.credit(1, seed=3).drop(columns=[datasets.TARGET]).to_dict("records")[0]
    return {
        "registry": registry,
        "predict": local_aws.gateway_url("EndpointRestApi") + "/predict",
        "api": local_aws.gateway_url("RegistryApi"),
        "body": json.dumps({"instances": [row]}).encode(),
        "row": row,
    }


@pytest.fixture(scope="module")
def role_session(local_aws):
    """Credentials of a session of the stage's approver role, as STS issues them."""
    role = local_aws.client("iam").get_role(RoleName="sluice-dev-approver")["Role"]["Arn"]
    issued = local_aws.client("sts").assume_role(RoleArn=role, RoleSessionName="alice")["Credentials"]
    return Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])


def test_endpoint_answers_only_signed_requests(served, local_aws):
    url, body = served["predict"], served["body"]
    developer = local_aws.credentials
    # Unsigned: API Gateway's 403 for a missing token
    status, headers, raw = send(url, "POST", body)
    assert (status, message(raw)) == (403, "Missing Authentication Token")
    assert headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    # A key moto never issued
    status, _, raw = signed(url, "POST", body, credentials=Credentials("AKIAUNKNOWN000000000", "x" * 40))
    assert (status, message(raw)) == (403, "The security token included in the request is invalid.")
    # The developer's key with a wrong secret
    wrong = Credentials(developer["aws_access_key_id"], "not-the-secret")
    status, headers, raw = signed(url, "POST", body, credentials=wrong)
    assert status == 403 and message(raw).startswith(auth.BAD_SIGNATURE)
    assert headers["x-amzn-errortype"] == "InvalidSignatureException" and len(raw) < 4096
    # A body changed after signing
    headers = sign("POST", url, body=body, headers=dict(JSON))
    status, _, raw = send(url, "POST", body.replace(b"[", b"[ "), headers)
    assert status == 403 and message(raw).startswith(auth.BAD_SIGNATURE)
    # Signed with the key `local up` issued: a prediction
    status, _, raw = signed(url, "POST", body)
    assert status == 200 and json.loads(raw)["version"] == 1


def test_a_signature_older_than_5_minutes_is_expired(served, monkeypatch):
    stale = datetime.now(UTC) - timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale.replace(tzinfo=None))
    status, _, raw = signed(served["predict"], "POST", served["body"])
    assert status == 403 and message(raw).startswith("Signature expired: ")


def test_assumed_role_sessions_need_their_token(served, role_session):
    url, body = served["predict"], served["body"]
    assert signed(url, "POST", body, credentials=role_session)[0] == 200
    no_token = Credentials(role_session.access_key, role_session.secret_key)
    status, _, raw = signed(url, "POST", body, credentials=no_token)
    assert (status, message(raw)) == (403, "The security token included in the request is invalid.")


def test_registry_api_answers_only_signed_requests(served, local_aws):
    url = served["api"] + "/models"
    assert send(url)[0] == 403
    wrong = Credentials(local_aws.credentials["aws_access_key_id"], "wrong")
    assert signed(url, credentials=wrong)[0] == 403
    status, _, raw = signed(url)
    assert status == 200 and MODEL in raw.decode()


def test_an_approval_is_made_by_the_verified_identity(served, local_aws, role_session):
    approve = served["api"] + f"/models/{MODEL}/versions/2/approve"
    comment = json.dumps({"comment": "holdout ok"}).encode()
    # Given an unsigned approval, and one whose header names the developer's key but a forged signature
    assert send(approve, "POST", comment)[0] == 403
    forged = Credentials(local_aws.credentials["aws_access_key_id"], "guessed")
    assert signed(approve, "POST", comment, credentials=forged)[0] == 403
    # And a correctly signed approval by the developer, who is not the approver role
    status, headers, raw = signed(approve, "POST", comment)
    # Then the API's resource policy refuses it with an explicit deny
    assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException")
    assert "with an explicit deny" in json.loads(raw)["Message"]
    # Then version 2 is still pending
    assert served["registry"].get(MODEL, version=2).status == "PendingManualApproval"
    # When a session of the approver role approves it with a valid signature
    status, _, raw = signed(approve, "POST", comment, credentials=role_session)
    assert status == 200, raw
    # Then the decision's actor is that session, as STS names it
    record = served["registry"].get(MODEL, version=2)
    account = local_aws.account
    assert (record.status, record.decided_by) == (
        "Approved",
        f"arn:aws:sts::{account}:assumed-role/sluice-dev-approver/alice",
    )


def test_local_up_issues_the_developer_key_and_records_it(local_aws):
    state = read_state(local_aws.state_dir)
    recorded = state["credentials"]
    assert recorded == local_aws.credentials
    user = local_aws.client("iam").get_user(UserName=DEVELOPER)["User"]
    assert recorded["user_arn"] == user["Arn"]
    keys = local_aws.client("iam").list_access_keys(UserName=DEVELOPER)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [recorded["aws_access_key_id"]]
    assert (local_aws.state_dir / "state.json").stat().st_mode & 0o077 == 0
    # and the secret recorded is the one moto verifies against
    _, identity = auth.lookup(recorded["aws_access_key_id"], None)
    assert identity.arn == recorded["user_arn"]


def test_workers_sign_as_a_session_of_their_execution_role(local_aws):
    from localaws.credentials import function_environment

    role = local_aws.client("lambda").get_function_configuration(FunctionName=FUNCTION)["Role"]
    env = function_environment(local_aws, role, FUNCTION)
    _, identity = auth.lookup(env["AWS_ACCESS_KEY_ID"], env["AWS_SESSION_TOKEN"])
    assert (
        identity.arn == f"arn:aws:sts::{local_aws.account}:assumed-role/{role.rsplit('/', 1)[1]}/{FUNCTION}"
    )


# ---------------------------------------------------------------------------------- bad input


def test_deeply_nested_body_is_a_400(served):
    body = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, _, raw = signed(served["predict"], "POST", body)
    assert status == 400 and len(raw) < 4096
    assert "nested too deeply" in message(raw)


def test_a_body_over_the_endpoint_limit_gets_the_endpoint_413(served):
    # a 6 MB body that the gateway's model accepts (9,000 rows, each with an extra field), over 5 MB
    rows = [{**served["row"], "note": "n" * 450}] * 9000
    body = json.dumps({"instances": rows}).encode()
    assert MAX_BODY_BYTES < len(body) < 7 * 1024 * 1024
    status, _, raw = signed(served["predict"], "POST", body)
    assert status == 413 and len(raw) < 4096, raw[:300]


def test_a_body_over_10_mb_is_refused_unread(served):
    body = b'{"instances": [' + b"0," * (5 * 1024 * 1024) + b"0]}"
    status, _, raw = signed(served["predict"], "POST", body)
    assert (status, json.loads(raw)) == (413, {"message": "Request Too Long"})


def test_error_bodies_list_20_errors_and_a_count_never_the_input(served):
    # 500 rows, each with a 2 kB string where a number belongs
    bad = {**served["row"], "age": "x" * 2000}
    body = json.dumps({"instances": [bad] * 500}).encode()
    status, _, raw = signed(served["predict"], "POST", body)
    text = message(raw)
    assert status == 400 and len(raw) < 4096
    assert "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" not in text
    assert "instances[0].age" in text and "(500 errors, the first 20 shown)" in text
    assert text.count("instances[") == 20
