"""The snapshot a clean ``down`` compacts the journal into: objects and items, plus every other record.

A snapshot is a journal-format file. Its first record (``kind: snapshot``) names the last
journal sequence number it holds; then come the records that are not object or item writes
(Lambda versions and aliases, alarm states, metrics, bucket and table settings, runtime-created
resources: replayed as they were, in order; an execution's records reduced to its last), then
one ``s3.put`` record per stored object version and one ``ddb.put`` per item, read from moto's
backends. It is written to a temporary file, fsynced and moved into place with ``os.replace``,
so a crash leaves either the old snapshot or the new one.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from localaws.journal.log import encode, fsync_directory, read_records
from localaws.patches import moto_symbol

#: How long records of ``PutMetricData`` are carried over (CloudWatch keeps 1-minute data 15 days).
METRIC_RETENTION_S = 15 * 24 * 3600


def covered(path: Path) -> int:
    """The last journal sequence number the snapshot at ``path`` holds (0 without one)."""
    for header, _, _ in read_records(path):
        return int(header.get("covered", 0)) if header.get("kind") == "snapshot" else 0
    return 0


def records(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The snapshot's records to replay, without its own header."""
    for header, body, _ in read_records(path):
        if header.get("kind") != "snapshot":
            yield header, body


def kept_records(sources: Iterable[tuple[dict[str, Any], bytes]]) -> list[tuple[dict[str, Any], bytes]]:
    """The records a new snapshot carries over: all but object and item writes, one per execution."""
    kept: list[tuple[dict[str, Any], bytes]] = []
    executions: dict[str, int] = {}
    oldest = time.time() - METRIC_RETENTION_S
    for header, body in sources:
        if header.get("data"):
            continue
        if header.get("action") == "PutMetricData" and header.get("at", oldest) < oldest:
            continue  # CloudWatch would have dropped these datapoints by now
        header = {k: v for k, v in header.items() if k != "seq"}
        if header.get("kind") == "sfn.execution":
            if header["arn"] in executions:
                if header.get("status") not in (None, "RUNNING"):  # an end record wins over a late start
                    kept[executions[header["arn"]]] = (header, body)
                continue
            executions[header["arn"]] = len(kept)
        kept.append((header, body))
    return kept


def _skipped(bucket: str) -> bool:
    return bucket.startswith("cdk-") and "-assets-" in bucket  # re-published by every `up`


def object_records() -> Iterator[tuple[dict[str, Any], bytes]]:
    """One ``s3.put`` record per stored object version of every bucket moto holds (bar CDK assets)."""
    backends = moto_symbol("moto.s3.models.s3_backends", owner=__name__)
    for account, partitions in list(backends.items()):
        backend = partitions.get("aws") if hasattr(partitions, "get") else None
        for bucket in list(getattr(backend, "buckets", {}).values()):
            if _skipped(bucket.name):
                continue
            for name, versions in list(bucket.keys.iterlists()):
                for key in versions:
                    value = getattr(key, "value", None)
                    if value is None:  # a delete marker
                        continue
                    header = {
                        "kind": "s3.put",
                        "account": account,
                        "bucket": bucket.name,
                        "key": name,
                        "metadata": dict(key.metadata),
                        "version_id": key.version_id,
                        "data": True,
                    }
                    yield header, bytes(value)


def item_records() -> Iterator[tuple[dict[str, Any], bytes]]:
    """One ``ddb.put`` record per item of every table moto holds."""
    backends = moto_symbol("moto.dynamodb.models.dynamodb_backends", owner=__name__)
    for account, regions in list(backends.items()):
        for region, backend in list(regions.items()):
            for table in list(backend.tables.values()):
                for item in table.all_items():
                    header = {
                        "kind": "ddb.put",
                        "account": account,
                        "region": region,
                        "table": table.name,
                        "data": True,
                    }
                    yield header, json.dumps(item.to_json()["Attributes"]).encode()


def write(path: Path, *, covered_seq: int, kept: list[tuple[dict[str, Any], bytes]]) -> int:
    """Write the snapshot atomically; returns the number of records in it."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as out:
        out.write(encode({"kind": "snapshot", "covered": covered_seq}))
        for header, body in itertools.chain(kept, object_records(), item_records()):
            out.write(encode(header, body))
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)
    return count
