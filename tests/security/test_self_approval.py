"""Threat: whoever registers a version approves it too, so one principal alone ships a model.

An approval is refused when the approver is the principal that registered the version: the same
ARN, or an assumed role with the same account and session name (a person's session name follows
them from the trainer role to the approver role). The CLI acts as the caller STS verifies, so
there is no ``--actor`` to claim another name.
"""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from sluice.cli import main
from sluice.errors import Conflict
from sluice.registry.approval import same_principal
from sluice.registry.store import ModelRegistry
from tests.unit.test_registry import BUCKET, TABLE, acting_as, create_registry_resources, lineage, tiny_bundle

MOTO_USER = "arn:aws:sts::123456789012:user/moto"


def _session(role: str, session: str, account: str = "123456789012") -> str:
    return f"arn:aws:sts::{account}:assumed-role/{role}/{session}"


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    with mock_aws():
        yield create_registry_resources()


def test_the_registrant_cannot_approve_its_own_version(registry):
    # Given a version registered by the caller
    registry.register("m", tiny_bundle(), lineage=lineage())
    assert registry.get("m", version=1).created_by == registry.caller() == MOTO_USER
    # When the same principal approves it, then it is refused, naming the registrant
    message = f"model 'm' version 1 was registered by {MOTO_USER}; a different principal must approve it"
    with pytest.raises(Conflict) as refused:
        registry.approve("m", 1, actor=registry.caller())
    assert str(refused.value) == message
    # And nothing changed: still pending, no approval event
    assert registry.get("m", version=1).status == "PendingManualApproval"
    assert [e["kind"] for e in registry.history("m")] == ["registered"]


def test_the_same_session_in_another_role_is_the_same_principal(registry):
    # Given alice registers from the trainer role
    with acting_as("sluice-test-trainer", "alice") as trainer:
        ModelRegistry(table_name=TABLE, bucket_name=BUCKET).register("m", tiny_bundle(), lineage=lineage())
    assert registry.get("m", version=1).created_by == trainer
    # Then alice cannot approve it from the approver role, but bob can
    with pytest.raises(Conflict, match=f"registered by {trainer}; a different principal"):
        registry.approve("m", 1, actor=_session("sluice-test-approver", "alice"))
    record = registry.approve("m", 1, actor=_session("sluice-test-approver", "bob"))
    assert record.status == "Approved" and record.approval_signature
    assert registry.require_deployable("m", 1).decided_by == _session("sluice-test-approver", "bob")


def test_renaming_the_registrant_in_the_table_does_not_let_it_approve(registry):
    # Given alice registered a version, and rewrites its created_by with a raw table write
    with acting_as("sluice-test-trainer", "alice"):
        ModelRegistry(table_name=TABLE, bucket_name=BUCKET).register("m", tiny_bundle(), lineage=lineage())
    ddb = registry._table.ddb
    key = {"pk": {"S": "MODEL#m"}, "sk": {"S": "V#0000000001"}}
    body = json.loads(ddb.get_item(TableName=TABLE, Key=key)["Item"]["body"]["S"])
    body["created_by"] = _session("sluice-test-trainer", "mallory")
    ddb.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="SET body = :body",
        ExpressionAttributeValues={":body": {"S": json.dumps(body)}},
    )
    # When alice approves it, then the signed manifest (which names her) refuses the approval
    from sluice.errors import IntegrityError

    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        registry.approve("m", 1, actor=_session("sluice-test-approver", "alice"))
    assert registry.get("m", version=1).status == "PendingManualApproval"


def test_the_registrant_may_still_reject_its_own_version(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    record = registry.reject("m", 1, actor=registry.caller(), reason="withdrawn")
    assert record.status == "Rejected" and not record.approval_signature


def test_the_cli_approves_as_the_verified_caller(registry, capsys):
    # Given a version registered by the moto user
    registry.register("m", tiny_bundle(), lineage=lineage())
    # When the same caller approves it through the CLI, it exits 2 with one line
    assert main(["models", "approve", "m:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a different principal must approve it" in err
    # And --actor is no longer accepted
    with pytest.raises(SystemExit):
        main(["models", "approve", "m:1", "--actor", "bob"])
    capsys.readouterr()
    # When another principal approves it, the record names that principal
    with acting_as("sluice-test-approver", "bob") as bob:
        assert main(["models", "approve", "m:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decided_by"] == bob


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (MOTO_USER, MOTO_USER, True),
        (_session("trainer", "alice"), _session("approver", "alice"), True),
        (_session("trainer", "alice"), _session("approver", "bob"), False),
        (_session("trainer", "alice"), _session("approver", "alice", account="210987654321"), False),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/bob", False),
        ("arn:aws:iam::123456789012:user/alice", _session("approver", "alice"), False),
        ("alice", "bob", False),
        (
            "arn:aws:sts::123456789012:assumed-role/approver",
            "arn:aws:sts::123456789012:assumed-role/x",
            False,
        ),
    ],
)
def test_same_principal(a, b, same):
    assert same_principal(a, b) is same
    assert same_principal(b, a) is same
