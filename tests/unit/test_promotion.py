"""Promotion as a prod-side pull between two moto accounts: verified, pending, prod's trail only."""

from __future__ import annotations

import hashlib

import pytest
from moto import mock_aws

from localaws import accounts as local_accounts
from sluice import aws
from sluice.errors import Conflict, IntegrityError
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.promotion import StageRegistry, pull
from sluice.registry.records import PENDING
from sluice.registry.store import ModelRegistry, create_storage
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit

# moto's default account plays dev (MOTO_ACCOUNT_ID would pin every request, assumed roles too).
DEV = StageRegistry("dev", "123456789012", "eu-west-1")
PROD = StageRegistry("prod", "222222222222", "eu-west-1")
PULLER = f"arn:aws:iam::{PROD.account}:role/sluice-prod-promotion"


@pytest.fixture
def accounts():
    # Reading dev's table and verifying with dev's key by ARN from prod needs the emulator's
    # cross-account lookups (AWS does this; moto does not).
    local_accounts.install()
    try:
        with mock_aws():
            create_storage(DEV.table_name, DEV.bucket_name, region=DEV.region)
            with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/bootstrap"):
                create_storage(PROD.table_name, PROD.bucket_name, region=PROD.region)
            dev = DEV.registry()
            spec = TrainingSpec(target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL)
            bundle = bundle_from_training(train(credit(400), spec), onnx=False)
            dev.register(
                "credit-risk", bundle, lineage=Lineage(data_uri="s3://data/train.csv", data_rows=400)
            )
            yield dev
    finally:
        local_accounts.uninstall()


def _pull_as_prod(version: int = 1) -> tuple[object, ModelRegistry]:
    with aws.assumed_role(PULLER, session_name="sluice-promotion") as account:
        assert account == PROD.account
        prod = PROD.registry()
        return pull("credit-risk", version, source=DEV, target=prod, actor=prod.caller()), prod


def test_prod_pulls_a_verified_copy_that_waits_for_its_own_approval(accounts):
    dev = accounts
    dev.approve("credit-risk", 1, actor="arn:aws:iam::123456789012:user/alice")
    result, _ = _pull_as_prod()
    source = dev.get("credit-risk", version=1)
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        prod = PROD.registry()
        record = prod.get("credit-risk", version=result.target_version)
        assert record.status == PENDING  # prod decides for prod
        assert record.notes["promoted_from"] == {
            **record.notes["promoted_from"],
            "version": 1,
            "account": DEV.account,
        }
        assert record.lineage["data_uri"] == "s3://data/train.csv"
        for name, meta in source.artifacts.items():
            assert (
                hashlib.sha256(prod.fetch("credit-risk", record.version, name)).hexdigest() == meta["sha256"]
            )
        assert [e["kind"] for e in prod.history("credit-risk")][-1] == "promoted"
        # A prod approver (another principal than the pull that registered it) approves the copy.
        approved = prod.approve("credit-risk", record.version, actor="arn:aws:iam::222222222222:user/carol")
        assert approved.status == "Approved"
    # The pull wrote nothing in dev: its trail ends with dev's own approval.
    assert [e["kind"] for e in dev.history("credit-risk")][-1] == "approved"


def test_only_approved_versions_are_pulled(accounts):
    with pytest.raises(Conflict, match="only Approved"):
        _pull_as_prod()
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert PROD.registry().list_models() == []


def test_a_raw_table_approval_in_dev_is_not_pulled(accounts):
    # A compromised dev table writer flips the status without the approval key: no signature.
    aws.client("dynamodb").update_item(
        TableName=DEV.table_name,
        Key={"pk": {"S": "MODEL#credit-risk"}, "sk": {"S": "V#0000000001"}},
        UpdateExpression="SET #s = :a",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":a": {"S": "Approved"}},
    )
    with pytest.raises(IntegrityError):
        _pull_as_prod()
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert PROD.registry().list_models() == []


def test_pulling_twice_returns_the_first_prod_version(accounts):
    accounts.approve("credit-risk", 1, actor="arn:aws:iam::123456789012:user/alice")
    first, _ = _pull_as_prod()
    second, _ = _pull_as_prod()
    assert first.target_version == second.target_version == 1
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert [r.version for r in PROD.registry().list_versions("credit-risk")] == [1]


def test_a_tampered_dev_artifact_is_refused_and_prod_stays_empty(accounts):
    accounts.approve("credit-risk", 1, actor="arn:aws:iam::123456789012:user/alice")
    record = accounts.get("credit-risk", version=1)
    key = record.artifacts["model.joblib"]["key"]
    aws.client("s3").put_object(Bucket=DEV.bucket_name, Key=key, Body=b"not the model that was approved")
    with pytest.raises(IntegrityError, match=r"model.joblib"):
        _pull_as_prod()
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert PROD.registry().list_models() == []


def test_cli_promote_needs_the_pulling_stage_and_a_version(capsys):
    from sluice.cli import main

    assert main(["promote", "credit-risk:1"]) == 2
    assert "--stage prod" in capsys.readouterr().err
