"""Buckets with the settings every Sluice bucket shares."""

from __future__ import annotations

from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from sluice.names import stage_bucket_name

__all__ = ["bucket_in", "physical_bucket_name", "secure_bucket", "stage_bucket_name"]


def secure_bucket(
    scope: Construct,
    id: str,
    *,
    bucket_name: str,
    retain: bool,
    access_logs: s3.IBucket | None,
    encryption_key: kms.IKey | None = None,
    versioned: bool = True,
    access_logs_prefix: str | None = None,
    object_lock_days: int | None = None,
    noncurrent_days: int = 90,
    expiration_days: int | None = None,
) -> s3.Bucket:
    """A versioned, encrypted, TLS-only bucket with public access blocked.

    Parameters
    ----------
    bucket_name
        Physical name. Names are fixed per stage (see :func:`stage_bucket_name`) so that IAM
        policies in other stacks name the bucket literally instead of through exports.
    retain
        Keep the bucket when the stack is deleted (prod). Otherwise it is emptied and destroyed.
    access_logs
        Bucket receiving S3 server access logs; ``None`` only for the access-log bucket itself.
    encryption_key
        Customer-managed KMS key. Defaults to S3-managed keys (SSE-S3).
    object_lock_days
        S3 Object Lock, governance mode, with this default retention: no version can be deleted
        or overwritten sooner without ``s3:BypassGovernanceRetention``. Default ``None``: no lock.
    noncurrent_days
        Days a replaced or deleted object version is kept before it expires. Default 90.
    expiration_days
        Days after which current objects expire (a delete marker; the version then expires
        ``noncurrent_days`` later). Default ``None``: objects never expire.
    """
    return s3.Bucket(
        scope,
        id,
        bucket_name=bucket_name,
        versioned=versioned,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        encryption=s3.BucketEncryption.KMS if encryption_key else s3.BucketEncryption.S3_MANAGED,
        encryption_key=encryption_key,
        bucket_key_enabled=bool(encryption_key),
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=access_logs_prefix or (f"{id.lower()}/" if access_logs else None),
        removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
        auto_delete_objects=False,
        object_lock_enabled=object_lock_days is not None or None,
        object_lock_default_retention=_object_lock(id, object_lock_days, versioned=versioned),
        lifecycle_rules=_lifecycle_rules(noncurrent_days=noncurrent_days, expiration_days=expiration_days),
    )


def _object_lock(id: str, days: int | None, *, versioned: bool) -> s3.ObjectLockRetention | None:
    """Governance-mode default retention of ``days``, or ``None`` without Object Lock."""
    if days is None:
        return None
    if not versioned:
        raise ValueError(f"bucket {id}: Object Lock needs versioning")
    return s3.ObjectLockRetention.governance(cdk.Duration.days(days))


def _lifecycle_rules(*, noncurrent_days: int, expiration_days: int | None) -> list[s3.LifecycleRule]:
    """Old versions expire after ``noncurrent_days``; current objects after ``expiration_days``."""
    rules = [
        s3.LifecycleRule(
            id="expire-old-versions",
            noncurrent_version_expiration=cdk.Duration.days(noncurrent_days),
            abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
        )
    ]
    if expiration_days is not None:
        rules.append(s3.LifecycleRule(id="expire-data", expiration=cdk.Duration.days(expiration_days)))
    return rules


def bucket_in(scope: IConstruct, bucket: s3.IBucket) -> s3.IBucket:
    """``bucket`` as seen from ``scope``'s stack.

    In another stack this is an import by literal name, so the grants made on it name the
    bucket ARN literally (stable, reviewable policies) rather than through a CloudFormation
    export; the KMS key, if any, is carried along so grants still include decrypt rights.
    """
    here = cdk.Stack.of(scope)
    if cdk.Stack.of(bucket) is here:
        return bucket
    view_id = f"Ref{cdk.Names.unique_id(bucket)}"
    existing = here.node.try_find_child(view_id)
    if existing is not None:
        return cast(s3.IBucket, existing)
    return s3.Bucket.from_bucket_attributes(
        here, view_id, bucket_name=physical_bucket_name(bucket), encryption_key=bucket.encryption_key
    )


def physical_bucket_name(bucket: s3.IBucket) -> str:
    """The ``BucketName`` a bucket of this app was created with (all of them are named)."""
    name = cast(s3.CfnBucket, bucket.node.default_child).bucket_name
    if name is None:
        raise ValueError(f"bucket {bucket.node.path} has no physical name")
    return name
