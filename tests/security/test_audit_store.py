"""Threat: a writer of the registry table or of the audit bucket rewrites or erases the audit trail.

Five roles can ``PutItem`` on the registry table, so its ``EVENT#`` items are only an index: the
trail is the audit bucket (S3 Object Lock, compliance mode), where the first version of each
event object stays whatever anyone writes or deletes later (see :mod:`sluice.registry.audit`).
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sluice.errors import IntegrityError, SluiceError
from sluice.registry.audit import event_from_item, event_key, event_put, write_event
from sluice.registry.store import ModelRegistry
from sluice.registry.table import RegistryTable
from tests.unit.test_registry import BUCKET, REGION, TABLE, create_registry_resources, lineage, tiny_bundle


@pytest.fixture
def registry():
    with mock_aws():
        yield create_registry_resources()


def _event_items(name: str) -> list[dict]:
    ddb = boto3.client("dynamodb", region_name=REGION)
    return ddb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :e)",
        ExpressionAttributeValues={":pk": {"S": f"MODEL#{name}"}, ":e": {"S": "EVENT#"}},
        ConsistentRead=True,
    )["Items"]


def _approved(registry: ModelRegistry) -> dict:
    """Version 1 of ``m`` registered and approved by alice; the approval's event item."""
    registry.register("m", tiny_bundle(), lineage=lineage())
    registry.approve("m", 1, actor="alice", reason="looks good")
    return next(item for item in _event_items("m") if item["kind"]["S"] == "approved")


def test_a_raw_putitem_rewriting_an_event_actor_leaves_history_unchanged(registry):
    # Given an approval by alice
    item = _approved(registry)
    # When a role that can write the table rewrites the event item's actor, and forges another one
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.put_item(TableName=TABLE, Item={**item, "actor": {"S": "mallory"}})
    forged = event_put(TABLE, "m", "approved", actor="mallory", version=1, detail={"reason": "forged"})
    ddb.put_item(TableName=TABLE, Item=forged["Item"])
    assert {i["actor"]["S"] for i in _event_items("m") if i["kind"]["S"] == "approved"} == {"mallory"}
    # Then history still shows alice's approval, and only it
    events = registry.history("m")
    assert [(e["kind"], e["actor"]) for e in events][1:] == [("approved", "alice")]
    assert "rewrites" not in events[1]


def test_an_s3_put_over_an_audit_object_keeps_the_original_and_flags_it(registry):
    # Given an approval by alice, stored as one audit object
    item = _approved(registry)
    s3 = boto3.client("s3", region_name=REGION)
    object_key = event_key("m", item["sk"]["S"])
    original = json.loads(s3.get_object(Bucket=registry.audit_bucket, Key=object_key)["Body"].read())
    assert original["actor"] == "alice"
    # When someone writes over it: a create-only put is refused, a plain put adds a version
    forged = json.dumps({**original, "actor": "mallory"}).encode()
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=registry.audit_bucket, Key=object_key, Body=forged, IfNoneMatch="*")
    s3.put_object(Bucket=registry.audit_bucket, Key=object_key, Body=forged)
    s3.delete_object(Bucket=registry.audit_bucket, Key=object_key)  # hides it behind a delete marker
    # Then history keeps alice's original and flags the two later writes
    approved = registry.history("m")[1]
    assert (approved["kind"], approved["actor"], approved["rewrites"]) == ("approved", "alice", 2)
    assert approved["detail"]["reason"] == "looks good"


@pytest.mark.parametrize("bypass", [False, True])
def test_deleting_an_audit_object_version_is_refused(registry, bypass):
    # Given an approval stored as one audit object
    item = _approved(registry)
    s3 = boto3.client("s3", region_name=REGION)
    object_key = event_key("m", item["sk"]["S"])
    version_id = s3.head_object(Bucket=registry.audit_bucket, Key=object_key)["VersionId"]
    # When someone deletes that version (compliance mode ignores a governance bypass)
    extra = {"BypassGovernanceRetention": True} if bypass else {}
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=registry.audit_bucket, Key=object_key, VersionId=version_id, **extra)
    # Then the event is still in history
    assert [e["kind"] for e in registry.history("m")] == ["registered", "approved"]


def test_every_registry_write_that_records_an_event_lands_in_the_audit_bucket(registry):
    # Given every kind of registry write that records an event
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    registry.register("m", tiny_bundle("2"), lineage=lineage())
    registry.approve("m", 1, actor="alice")
    registry.set_alias("m", "champion", 1, actor="alice")
    registry.reject("m", 2, actor="bob", reason="bad f1")
    registry.record_event("m", "deployed", actor="deployer", version=1, detail={"lambda_version": "3"})
    # Then each event item of the table has its object, holding the same event, with a checksum
    s3 = boto3.client("s3", region_name=REGION)
    items = _event_items("m")
    for item in items:
        object_key = event_key("m", item["sk"]["S"])
        stored = s3.get_object(Bucket=registry.audit_bucket, Key=object_key, ChecksumMode="ENABLED")
        assert stored["ChecksumSHA256"]
        assert json.loads(stored["Body"].read()) == {"model": "m", **event_from_item(item)}
    listed = s3.list_object_versions(Bucket=registry.audit_bucket, Prefix="events/m/")["Versions"]
    assert len(listed) == len(items) == 6
    # And history, read from the bucket, lists them in order
    kinds = ["registered", "registered", "approved", "alias_moved", "rejected", "deployed"]
    assert [e["kind"] for e in registry.history("m")] == kinds


def test_an_object_planted_at_an_event_key_is_refused(registry):
    # Given an event item committed to the table and an object already written at its key
    registry.register("m", tiny_bundle(), lineage=lineage())
    table = RegistryTable(TABLE, audit_bucket=registry.audit_bucket)
    item = event_put(TABLE, "m", "deployed", actor="deployer", version=1, detail={})["Item"]
    write_event(table, item)
    # When it is written again (a retried put) nothing changes
    write_event(table, item)
    # But an object with other bytes at the key of a new event is refused
    planted = event_put(TABLE, "m", "deployed", actor="deployer", version=1, detail={})["Item"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=registry.audit_bucket, Key=event_key("m", planted["sk"]["S"]), Body=b"{}")
    with pytest.raises(IntegrityError, match="already holds another object"):
        write_event(table, planted)


def test_history_never_falls_back_to_the_table(registry):
    # Given a registry whose audit bucket does not exist
    lost = ModelRegistry(table_name=TABLE, bucket_name=BUCKET, audit_bucket="sluice-test-no-audit")
    # When it registers, the change is committed but the missing audit bucket is named
    with pytest.raises(SluiceError, match="audit bucket 'sluice-test-no-audit' does not exist"):
        lost.register("m", tiny_bundle(), lineage=lineage())
    assert len(_event_items("m")) == 1
    # Then history refuses to answer from the table, with either bucket
    with pytest.raises(SluiceError, match="audit bucket 'sluice-test-no-audit' does not exist"):
        lost.history("m")
    with pytest.raises(IntegrityError, match="model 'm' has no events in audit bucket"):
        registry.history("m")
