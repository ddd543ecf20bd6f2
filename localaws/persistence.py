"""Keep a local stage's data across ``sluice local down`` / ``up``: bucket objects and table items.

Saved under ``<state_dir>/data`` by stack and logical id, so a later run restores them whatever
the physical names. Lambda versions and aliases created at run time are not kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localaws.env import LocalAws

DATA_DIR = "data"


def _data_resources(local: LocalAws) -> list[tuple[str, Any]]:
    return [
        (stack.stack_name, r)
        for stack in local.deployed
        for r in stack.resources
        if r.resource_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table") and r.physical_id
    ]


def save_data(local: LocalAws) -> Path:
    """Save the objects of the stage's buckets and the items of its tables under ``state_dir/data``.

    Keyed by stack and logical id, so a later run restores them whatever the physical names.
    """
    root = local.state_dir / DATA_DIR
    staging = local.state_dir / f"{DATA_DIR}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    s3, ddb = local.client("s3"), local.client("dynamodb")
    for stack_name, resource in _data_resources(local):
        target = staging / stack_name / resource.logical_id
        if resource.resource_type == "AWS::S3::Bucket":
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=resource.physical_id):
                for obj in page.get("Contents", []):
                    path = target / "objects" / obj["Key"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(
                        s3.get_object(Bucket=resource.physical_id, Key=obj["Key"])["Body"].read()
                    )
        else:
            target.mkdir(parents=True, exist_ok=True)
            with open(target / "items.jsonl", "w") as out:
                for page in ddb.get_paginator("scan").paginate(TableName=resource.physical_id):
                    for item in page.get("Items", []):
                        out.write(json.dumps(item) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    staging.rename(root)
    return root


def restore_data(local: LocalAws) -> int:
    """Put back what :func:`save_data` saved; returns the number of objects and items restored."""
    root = local.state_dir / DATA_DIR
    if not root.is_dir():
        return 0
    s3, ddb = local.client("s3"), local.client("dynamodb")
    restored = 0
    for stack_name, resource in _data_resources(local):
        source = root / stack_name / resource.logical_id
        if resource.resource_type == "AWS::S3::Bucket":
            objects = source / "objects"
            for path in sorted(objects.rglob("*")) if objects.is_dir() else []:
                if path.is_file():
                    key = path.relative_to(objects).as_posix()
                    s3.put_object(Bucket=resource.physical_id, Key=key, Body=path.read_bytes())
                    restored += 1
        elif (source / "items.jsonl").is_file():
            for line in (source / "items.jsonl").read_text().splitlines():
                ddb.put_item(TableName=resource.physical_id, Item=json.loads(line))
                restored += 1
    return restored
