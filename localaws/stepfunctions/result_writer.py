"""Distributed Map ``ResultWriter``: the result files moto leaves as a TODO.

moto 5.2.5 writes only ``manifest.json``, with empty ``ResultFiles``. :func:`put_object`
replaces its handler and writes ``SUCCEEDED_0.json`` (or ``.jsonl``) too, honouring the
``WriterConfig`` taken out of the definition (:mod:`localaws.stepfunctions.definitions`).
"""

from __future__ import annotations

import json
from typing import Any

from localaws.patches import moto_symbol
from localaws.stepfunctions.definitions import extras_for


def put_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    """moto's handler, plus the result file it leaves as a TODO (SUCCEEDED_0.json or .jsonl).

    Honours the WriterConfig taken out of the definition: ``Transformation`` NONE (execution
    records with ``Output`` text), COMPACT (the outputs) or FLATTEN (array outputs flattened),
    and ``OutputType`` JSON or JSONL.
    """
    boto_client_for = moto_symbol(
        "moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for", owner=__name__
    )
    parameters = env.stack.pop()
    results = env.stack.pop()
    s3 = boto_client_for(
        service="s3", region=resource_runtime_part.region, state_credentials=state_credentials
    )
    map_run_record = env.map_run_record_pool_manager.get_all().pop()
    map_run_uuid = map_run_record.map_run_arn.split(":")[-1]
    prefix = parameters.get("Prefix", "") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    bucket = parameters["Bucket"]
    items = results if isinstance(results, list) else [results]
    state = env.states.context_object.context_object_data.get("State", {}).get("Name", "")
    config = extras_for(env, state).get("WriterConfig") or {}
    records = result_records(items, config.get("Transformation", "NONE"), map_run_record.map_run_arn)
    if config.get("OutputType") == "JSONL":
        succeeded_key = f"{prefix}{map_run_uuid}/SUCCEEDED_0.jsonl"
        body = "".join(json.dumps(record) + "\n" for record in records).encode("utf8")
    else:
        succeeded_key = f"{prefix}{map_run_uuid}/SUCCEEDED_0.json"
        body = json.dumps(records).encode("utf8")
    s3.put_object(Bucket=bucket, Key=succeeded_key, Body=body)
    manifest = {
        "DestinationBucket": bucket,
        "MapRunArn": map_run_record.map_run_arn,
        "ResultFiles": {
            "FAILED": [],
            "PENDING": [],
            "SUCCEEDED": [{"Key": succeeded_key, "Size": len(body)}],
        },
    }
    key = f"{prefix}{map_run_uuid}/manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=2).encode("utf8"))
    env.stack.append(
        {"MapRunArn": map_run_record.map_run_arn, "ResultWriterDetails": {"Bucket": bucket, "Key": key}}
    )


def result_records(items: list[Any], transformation: str, map_run_arn: str) -> list[Any]:
    """The records of the result file under a ``WriterConfig`` ``Transformation``."""
    if transformation == "COMPACT":
        return list(items)
    if transformation == "FLATTEN":
        return [x for item in items for x in (item if isinstance(item, list) else [item])]
    return [
        {"ExecutionArn": f"{map_run_arn}:{index}", "Status": "SUCCEEDED", "Output": json.dumps(item)}
        for index, item in enumerate(items)
    ]
