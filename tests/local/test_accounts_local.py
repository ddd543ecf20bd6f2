"""On the embedded local AWS, a role assumed in another account acts in that account."""

from __future__ import annotations

import boto3
import pytest

pytestmark = pytest.mark.local

OTHER = "222222222222"


def _assumed(local_aws, account: str):
    credentials = local_aws.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/sluice-prod-promotion", RoleSessionName="test"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=local_aws.region,
    )


def test_assumed_role_credentials_act_in_the_role_account(local_aws):
    session = _assumed(local_aws, OTHER)
    ddb = session.client("dynamodb", endpoint_url=local_aws.endpoint_url)
    # When a table is created with the other account's credentials
    assert (
        session.client("sts", endpoint_url=local_aws.endpoint_url).get_caller_identity()["Account"] == OTHER
    )
    ddb.create_table(
        TableName="only-in-the-other-account",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Then it is there for them, and not in the stage's account
    assert "only-in-the-other-account" in ddb.list_tables()["TableNames"]
    assert "only-in-the-other-account" not in local_aws.client("dynamodb").list_tables()["TableNames"]
    # And the plain local credentials still act in the stage's account
    assert local_aws.client("sts").get_caller_identity()["Account"] == local_aws.account != OTHER
