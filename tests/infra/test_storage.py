"""Buckets and the registry table: encrypted, TLS-only, private, versioned, recoverable."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from tests.infra.conftest import resources_of

STATEFUL = ["Dev-Stateful", "Prod-Stateful"]


@pytest.mark.parametrize("stack", STATEFUL)
def test_every_bucket_is_encrypted_private_and_versioned(templates, stack):
    # Given the stateful stack's buckets
    buckets = resources_of(templates[stack], "AWS::S3::Bucket")
    assert len(buckets) == 5  # access logs, registry artifacts, registry audit, capture, work
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        # Then each has default encryption, blocks public access and keeps versions
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules and rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("aws:kms", "AES256"), (
            logical_id
        )
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id


@pytest.mark.parametrize("stack", STATEFUL)
def test_every_bucket_denies_plain_http(templates, stack):
    # Given the buckets and their policies
    template = templates[stack]
    buckets = set(resources_of(template, "AWS::S3::Bucket"))
    tls_only = set()
    for policy in resources_of(template, "AWS::S3::BucketPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            ):
                tls_only.add(policy["Properties"]["Bucket"]["Ref"])
    # Then every bucket has a Deny on aws:SecureTransport=false
    assert tls_only == buckets


@pytest.mark.parametrize("stack", STATEFUL)
def test_registry_artifacts_use_a_rotating_kms_key(template, stack):
    t = template(stack)
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.string_like_regexp("^sluice-.*-artifacts-"),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {"ServerSideEncryptionByDefault": Match.object_like({"SSEAlgorithm": "aws:kms"})}
                    )
                ]
            },
        },
    )


@pytest.mark.parametrize("stack", STATEFUL)
def test_registry_table_has_point_in_time_recovery(template, stack):
    template(stack).has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


def test_prod_retains_data_and_is_termination_protected(template, stacks):
    # Given the prod stateful stack
    prod = template("Prod-Stateful")
    # Then buckets, key and table are retained, the table is deletion-protected
    for type_ in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::DynamoDB::Table"):
        prod.all_resources(type_, {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})
    prod.has_resource_properties("AWS::DynamoDB::Table", {"DeletionProtectionEnabled": True})
    # And termination protection is on for prod only
    manifest_flags = {name: _termination_protection(s) for name, s in stacks.items()}
    assert manifest_flags["Prod-Stateful"] is True
    assert manifest_flags["Dev-Stateful"] is False


def test_dev_data_is_disposable(template):
    dev = template("Dev-Stateful")
    dev.all_resources("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})
    dev.has_resource_properties("AWS::DynamoDB::Table", {"DeletionProtectionEnabled": False})


def _termination_protection(stack) -> bool:
    import json

    manifest = json.loads(stack.template_path.with_name("manifest.json").read_text())
    props = manifest["artifacts"][stack.artifact_id]["properties"]
    return bool(props.get("terminationProtection", False))


@pytest.mark.parametrize(
    ("stack", "lock", "noncurrent"), [("Dev-Stateful", 30, 365), ("Prod-Stateful", 365, 730)]
)
def test_artifacts_are_object_locked_in_governance_mode(template, stack, lock, noncurrent):
    template(stack).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.string_like_regexp("^sluice-.*-artifacts-"),
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": lock}},
            },
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent}})]
            },
        },
    )


@pytest.mark.parametrize(("stack", "days"), [("Dev-Stateful", 90), ("Prod-Stateful", 365)])
def test_capture_expires_and_is_encrypted_with_the_data_key(template, stack, days):
    t = template(stack)
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.string_like_regexp("^sluice-.*-capture-"),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": {
                                    "Fn::GetAtt": [Match.string_like_regexp("^DataKey"), "Arn"]
                                },
                            }
                        }
                    )
                ]
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"Id": "expire-data", "ExpirationInDays": days})]
                )
            },
        },
    )


@pytest.mark.parametrize("stack", ["Dev-Service", "Prod-Service"])
def test_firehose_and_every_log_group_use_the_data_key(templates, template, stack):
    template(stack).has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamEncryptionConfigurationInput": Match.object_like(
                {"KeyType": "CUSTOMER_MANAGED_CMK"}
            )
        },
    )
    groups = resources_of(templates[stack], "AWS::Logs::LogGroup")
    assert groups and [g for g, r in groups.items() if "KmsKeyId" not in r["Properties"]] == []
