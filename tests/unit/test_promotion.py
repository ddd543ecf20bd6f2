"""Promotion between two moto accounts: only Approved, verified copy, lineage, both audit trails."""

from __future__ import annotations

import hashlib

import pytest
from moto import mock_aws

from sluice import aws
from sluice.errors import Conflict
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.promotion import StageRegistry, promote
from sluice.registry.store import create_storage
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit

# moto's default account plays dev (MOTO_ACCOUNT_ID would pin every request, assumed roles too).
DEV = StageRegistry("dev", "123456789012", "eu-west-1")
PROD = StageRegistry("prod", "222222222222", "eu-west-1")


def _create_registry(stage: StageRegistry) -> None:
    create_storage(stage.table_name, stage.bucket_name, region=stage.region)


@pytest.fixture
def accounts():
    with mock_aws():
        _create_registry(DEV)
        with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/bootstrap"):
            _create_registry(PROD)
        dev = DEV.registry()
        spec = TrainingSpec(target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL)
        bundle = bundle_from_training(train(credit(400), spec), onnx=False)
        dev.register("credit-risk", bundle, lineage=Lineage(data_uri="s3://data/train.csv", data_rows=400))
        yield dev


def test_promotion_copies_verified_artifacts_into_the_prod_account(accounts):
    dev = accounts
    dev.approve("credit-risk", 1, actor="alice")
    copied: list[str] = []
    result = promote("credit-risk", 1, source=DEV, target=PROD, actor="alice", progress=copied.append)
    source = dev.get("credit-risk", version=1)
    assert sorted(copied) == sorted(source.artifacts)
    # The prod account holds the record; the dev account does not hold the prod table.
    assert PROD.table_name not in aws.client("dynamodb").list_tables()["TableNames"]
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor") as account:
        assert account == PROD.account
        prod = PROD.registry()
        record = prod.get("credit-risk", version=result.target_version)
        assert record.status == "Approved"
        assert record.notes["promoted_from"]["version"] == 1
        assert record.notes["promoted_from"]["account"] == DEV.account
        assert record.lineage["data_uri"] == "s3://data/train.csv"
        for name, meta in source.artifacts.items():
            assert (
                hashlib.sha256(prod.fetch("credit-risk", record.version, name)).hexdigest() == meta["sha256"]
            )
        prod_kinds = [e["kind"] for e in prod.history("credit-risk")]
    assert prod_kinds[-1] == "promoted" and "registered" in prod_kinds
    dev_events = dev.history("credit-risk")
    assert dev_events[-1]["kind"] == "promoted"


def test_only_approved_versions_are_promoted(accounts):
    with pytest.raises(Conflict, match="only Approved"):
        promote("credit-risk", 1, source=DEV, target=PROD, actor="alice")
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert PROD.registry().list_models() == []


def test_promoting_twice_returns_the_first_prod_version(accounts):
    accounts.approve("credit-risk", 1, actor="alice")
    first = promote("credit-risk", 1, source=DEV, target=PROD, actor="alice")
    second = promote("credit-risk", 1, source=DEV, target=PROD, actor="alice")
    assert first.target_version == second.target_version == 1
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert [r.version for r in PROD.registry().list_versions("credit-risk")] == [1]


def test_cli_promote_uses_cdk_json_accounts(accounts, tmp_path, capsys):
    from sluice.cli import main

    accounts.approve("credit-risk", 1, actor="alice")
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(
        '{"context": {"dev:account": "123456789012", "dev:region": "eu-west-1",'
        ' "prod:account": "222222222222", "prod:region": "eu-west-1"}}'
    )
    argv = ["promote", "--model", "credit-risk", "--version", "1", "--cdk-json", str(cdk_json), "--json"]
    assert main(argv) == 0
    assert '"version": 1' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--version", "1", "--from", "dev", "--to", "dev"], "different stages"),
        (["--version", "1", "--cdk-json", "/nonexistent/cdk.json"], "not found"),
        (["--version", "7"], "version 7"),
    ],
)
def test_cli_promote_user_errors_exit_2(accounts, argv, message, capsys):
    from pathlib import Path

    from sluice.cli import main

    root = Path(__file__).resolve().parents[2]
    extra = [] if "--cdk-json" in argv else ["--cdk-json", str(root / "cdk.json")]
    assert main(["promote", "--model", "credit-risk", *argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_tampered_dev_artifact_is_refused_and_prod_stays_empty(accounts):
    from sluice.errors import IntegrityError

    accounts.approve("credit-risk", 1, actor="alice")
    record = accounts.get("credit-risk", version=1)
    key = record.artifacts["model.joblib"]["key"]
    aws.client("s3").put_object(Bucket=DEV.bucket_name, Key=key, Body=b"not the model that was approved")
    with pytest.raises(IntegrityError, match=r"model.joblib"):
        promote("credit-risk", 1, source=DEV, target=PROD, actor="alice")
    with aws.assumed_role(f"arn:aws:iam::{PROD.account}:role/auditor"):
        assert PROD.registry().list_models() == []


def test_a_caller_the_promotion_role_does_not_trust_is_refused(accounts, capsys, tmp_path):
    # The prod promotion role trusts only the dev deployer (tests/infra/test_iam.py); STS says
    # AccessDenied to anyone else, and that must reach the user as a clear refusal, not a trace.
    from botocore.stub import Stubber

    from sluice.cli import main
    from sluice.errors import SluiceError

    accounts.approve("credit-risk", 1, actor="alice")
    with Stubber(aws.client("sts")) as sts:
        sts.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message="User is not authorized to perform: sts:AssumeRole",
            http_status_code=403,
        )
        with pytest.raises(SluiceError, match=r"cannot assume .*sluice-prod-promotion") as refused:
            promote("credit-risk", 1, source=DEV, target=PROD, actor="mallory")
    assert refused.value.status == 403
    # Nothing was written in either account but the audit trail is intact.
    assert [e["kind"] for e in accounts.history("credit-risk")][-1] == "approved"
    with Stubber(aws.client("sts")) as sts:
        sts.add_response("get_caller_identity", {"Arn": "arn:aws:iam::123456789012:user/mallory"})
        sts.add_client_error("assume_role", service_error_code="AccessDenied", http_status_code=403)
        cdk_json = tmp_path / "cdk.json"
        cdk_json.write_text(
            '{"context": {"dev:account": "123456789012", "dev:region": "eu-west-1",'
            ' "prod:account": "222222222222", "prod:region": "eu-west-1"}}'
        )
        argv = ["promote", "--model", "credit-risk", "--version", "1", "--cdk-json", str(cdk_json)]
        assert main(argv) == 2
    assert "cannot assume" in capsys.readouterr().err
