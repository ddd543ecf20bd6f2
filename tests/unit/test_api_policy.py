"""The local gateway's reading of a REST API's resource policy: explicit denies only, failing closed."""

from __future__ import annotations

import json

from localaws.api_policy import explicit_deny, principal_arn

ACCOUNT = "111111111111"
APPROVER = f"arn:aws:iam::{ACCOUNT}:role/sluice-dev-approver"
APPROVE = f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:abc123/dev/POST/models/credit-risk/versions/2/approve"
LIST = f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:abc123/dev/GET/models"
# The registry API's policy as infra/constructs/registry_api.py synthesizes it.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*",
        },
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "execute-api:Invoke",
            "Resource": [
                "execute-api:/*/POST/models/*/versions/*/approve",
                "execute-api:/*/POST/models/*/versions/*/reject",
            ],
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": APPROVER}},
        },
    ],
}


def deny(caller: str, method_arn: str, policy=POLICY):
    return explicit_deny(json.dumps(policy), caller_arn=caller, account=ACCOUNT, method_arn=method_arn)


def test_only_the_approver_roles_sessions_may_approve():
    developer = f"arn:aws:iam::{ACCOUNT}:user/sluice-local-developer"
    deployer = f"arn:aws:sts::{ACCOUNT}:assumed-role/sluice-dev-deployer/bob"
    approver = f"arn:aws:sts::{ACCOUNT}:assumed-role/sluice-dev-approver/alice"
    assert deny(developer, APPROVE) == "1"
    assert deny(deployer, APPROVE) == "1"
    assert deny(deployer, APPROVE.replace("/approve", "/reject")) == "1"
    assert deny(approver, APPROVE) is None
    # Reading is not denied to anyone of the account
    assert deny(developer, LIST) is None


def test_principal_arn_is_the_role_of_an_assumed_role_session():
    assert principal_arn(f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s") == f"arn:aws:iam::{ACCOUNT}:role/r"
    assert principal_arn(f"arn:aws:iam::{ACCOUNT}:user/u") == f"arn:aws:iam::{ACCOUNT}:user/u"


def test_full_arn_resources_wildcards_and_not_action():
    policy = {
        "Statement": [
            {
                "Sid": "NoWrites",
                "Effect": "Deny",
                "Principal": "*",
                "NotAction": "execute-api:ManageConnections",
                "Resource": f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:abc123/*/POST/*",
            }
        ]
    }
    assert deny("arn:aws:iam::1:user/x", APPROVE, policy) == "NoWrites"
    assert deny("arn:aws:iam::1:user/x", LIST, policy) is None


def test_a_condition_it_cannot_evaluate_refuses():
    policy = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "execute-api:Invoke",
                "Resource": "execute-api:/*",
                "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            }
        ]
    }
    assert deny("arn:aws:iam::1:user/x", LIST, policy) == "0"


def test_no_policy_denies_nothing():
    assert explicit_deny(None, caller_arn="arn:aws:iam::1:user/x", account=ACCOUNT, method_arn=LIST) is None
