"""Serving and batch ask the registry only for their own model's entries.

A model's endpoint and batch roles may read only that model's partition of the registry table,
its artifacts and its audit events (``Registry.grant_read(model=...)``; the attacks are in
``tests/security/test_model_isolation.py``). moto evaluates no IAM, so this records every
DynamoDB and S3 request an endpoint and a batch run make (botocore's ``provide-client-params``
event) and checks each falls within that scope: the narrower grants would break neither in AWS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from sluice import aws
from sluice.handlers import score
from sluice.names import (
    audit_bucket_name,
    audit_event_prefix,
    registry_artifact_prefix,
    registry_partition_key,
)
from sluice.pipelines import batch
from sluice.pipelines.batch_request import BatchRequest
from sluice.pipelines.datasource import write_table
from sluice_demo import datasets
from tests.handlers.test_score import BUCKET, TABLE, Context, endpoint, event  # noqa: F401  (fixtures)

# The endpoint fixture takes the batch module's trained model: both are the credit demo's.
from tests.unit.test_batch import ARTIFACTS, SETTINGS, WORK, stage, trained  # noqa: F401  (fixtures)

#: Table reads that name their partition; a model's roles get no other table action.
TABLE_READS = {"GetItem", "Query", "BatchGetItem", "TransactGetItems"}
_KEY_CONDITION = re.compile(r"\bpk\s*=\s*(:\w+)")


class Requests:
    """The DynamoDB and S3 requests made while recording: (service, operation, parameters)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.made.append((model.service_model.service_name, model.name, dict(params)))

    def out_of_scope(self, model: str, *, table: str, artifacts: str) -> list[str]:
        """Each request a role scoped to ``model`` would be refused."""
        wrong = []
        for service, operation, params in self.made:
            if service == "dynamodb":
                if operation not in TABLE_READS or params.get("TableName", table) != table:
                    wrong.append(f"{operation} {params.get('TableName')}")
                elif set(_partitions(operation, params)) != {registry_partition_key(model)}:
                    wrong.append(f"{operation} {_partitions(operation, params)}")
            elif service == "s3" and params.get("Bucket") in (artifacts, audit_bucket_name(artifacts)):
                scope = (
                    registry_artifact_prefix(model)
                    if params["Bucket"] == artifacts
                    else audit_event_prefix(model)
                )
                where = str(params.get("Key", params.get("Prefix", "")))
                if not where.startswith(scope):
                    wrong.append(f"s3:{operation} {params['Bucket']}/{where}")
        return wrong


def _partitions(operation: str, params: dict[str, Any]) -> list[str]:
    if operation == "GetItem":
        return [params["Key"]["pk"]["S"]]
    if operation == "Query":
        found = _KEY_CONDITION.search(params.get("KeyConditionExpression", ""))
        return [params["ExpressionAttributeValues"][found.group(1)]["S"]] if found else ["<no pk>"]
    if operation == "BatchGetItem":
        return [k["pk"]["S"] for request in params["RequestItems"].values() for k in request["Keys"]]
    return [item["Get"]["Key"]["pk"]["S"] for item in params["TransactItems"]]


@contextmanager
def recording() -> Iterator[Requests]:
    """Record the requests of clients created from here on (the runtime's cache is emptied)."""
    requests = Requests()
    events = boto3._get_default_session().events
    for service in ("dynamodb", "s3"):
        events.register(f"provide-client-params.{service}", requests)
    aws.reset_clients()
    try:
        yield requests
    finally:
        for service in ("dynamodb", "s3"):
            events.unregister(f"provide-client-params.{service}", requests)
        aws.reset_clients()


def test_the_endpoint_reads_only_its_models_registry_entries(endpoint, monkeypatch):  # noqa: F811
    registry, bind = endpoint
    registry.set_alias("credit", "champion", 1, actor="tester")
    with recording() as requests:
        # When a bound version scores, and then the version cdk deploy creates (champion alias)
        bind()
        assert score.lambda_handler(event("single"), Context())["statusCode"] == 200
        monkeypatch.setenv("SLUICE_MODEL_VERSION", "")
        score._state.clear()
        assert score.lambda_handler(event("batch"), Context())["statusCode"] == 200
    # Then it read the table and the artifacts, and only the model's own
    assert {op for service, op, _ in requests.made if service == "dynamodb"} >= {"GetItem"}
    assert any(p.get("Bucket") == BUCKET for service, _, p in requests.made if service == "s3")
    assert requests.out_of_scope("credit", table=TABLE, artifacts=BUCKET) == []


def test_a_batch_run_reads_only_its_models_registry_entries(stage):  # noqa: F811
    write_table(datasets.credit(300, seed=2), f"s3://{WORK}/in/scope.parquet")
    request = BatchRequest(
        model="credit", input_uri=f"s3://{WORK}/in/scope.parquet", run_id="scope", shard_rows=100
    )
    with recording() as requests:
        summary = batch.run_local(SETTINGS, request)
    assert summary["manifest"]["rows_out"] == 300
    assert {op for service, op, _ in requests.made if service == "dynamodb"} >= {"GetItem"}
    assert requests.out_of_scope("credit", table=SETTINGS.registry_table, artifacts=ARTIFACTS) == []


def test_a_request_for_another_model_is_reported(stage):  # noqa: F811
    # The recorder itself: another model's item, or a Scan, is out of scope
    requests = Requests()
    requests.made = [
        ("dynamodb", "GetItem", {"TableName": "t", "Key": {"pk": {"S": registry_partition_key("other")}}}),
        ("dynamodb", "Scan", {"TableName": "t"}),
        ("s3", "GetObject", {"Bucket": "b", "Key": f"{registry_artifact_prefix('other')}x/model.joblib"}),
    ]
    assert len(requests.out_of_scope("credit", table="t", artifacts="b")) == 3
