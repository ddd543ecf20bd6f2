"""S3 "Object Created" events to EventBridge for the buckets whose template asks for it."""

from __future__ import annotations

import os
from typing import Any

import boto3


def enable_bucket_event_bridge(local_aws: Any) -> list[str]:
    """Send S3 events to EventBridge for the stage's buckets whose template asks for it.

    moto's CloudFormation ignores a bucket's ``NotificationConfiguration``, so a bucket with
    ``EventBridgeConfiguration.EventBridgeEnabled`` would never emit "Object Created" events
    locally. Returns the bucket names switched on; other notification settings are kept.
    """
    stacks = getattr(local_aws, "stacks", None) or []
    deployed = getattr(local_aws, "deployed", None) or []
    s3 = boto3.client(
        "s3",
        endpoint_url=local_aws.endpoint_url,
        region_name=local_aws.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    enabled = []
    for stack, done in zip(stacks, deployed, strict=False):
        physical = {r.logical_id: r.physical_id for r in done.resources}
        for logical, resource in stack.template.get("Resources", {}).items():
            config = (resource.get("Properties") or {}).get("NotificationConfiguration") or {}
            wanted = (config.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled")
            if (
                resource.get("Type") != "AWS::S3::Bucket"
                or wanted not in (True, "true")
                or logical not in physical
            ):
                continue
            bucket = physical[logical]
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)
            current["EventBridgeConfiguration"] = {}
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
            enabled.append(bucket)
    return enabled
