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
    REGISTRY_INDEX_PARTITION,
    audit_bucket_name,
    audit_event_prefix,
    registry_artifact_prefix,
    registry_partition_key,
)
from sluice.pipelines import batch, retraining
from sluice.pipelines.batch_request import BatchRequest
from sluice.pipelines.datasource import write_table
from sluice_demo import datasets
from tests.handlers.test_score import BUCKET, TABLE, Context, endpoint, event  # noqa: F401  (fixtures)

# The endpoint fixture takes the batch module's trained model: both are the credit demo's.
from tests.unit.test_batch import ARTIFACTS, SETTINGS, WORK, stage, trained  # noqa: F401  (fixtures)
from tests.unit.test_retraining import DATA, env  # noqa: F401  (the fixture)

#: Table reads that name their partition; a model's roles get no other table action.
TABLE_READS = {"GetItem", "Query", "BatchGetItem", "TransactGetItems"}
TABLE_WRITES = {"PutItem", "UpdateItem", "TransactWriteItems"}
_KEY_CONDITION = re.compile(r"\bpk\s*=\s*(:\w+)")


class Requests:
    """The DynamoDB and S3 requests made while recording: (service, operation, parameters)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.made.append((model.service_model.service_name, model.name, dict(params)))

    def out_of_scope(self, model: str, *, table: str, artifacts: str, writes: bool = False) -> list[str]:
        """Each request a role scoped to ``model`` would be refused (a reader's, or with ``writes``
        a registering role's: it also writes the model's partition and its models-index entry)."""
        allowed_operations = TABLE_READS | (TABLE_WRITES if writes else set())
        partitions = {registry_partition_key(model)} | ({REGISTRY_INDEX_PARTITION} if writes else set())
        wrong = []
        for service, operation, params in self.made:
            if service == "dynamodb":
                if operation not in allowed_operations or params.get("TableName", table) != table:
                    wrong.append(f"{operation} {params.get('TableName')}")
                elif not set(_partitions(operation, params)) <= partitions:
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
    if operation == "PutItem":
        return [params["Item"]["pk"]["S"]]
    if operation == "UpdateItem":
        return [params["Key"]["pk"]["S"]]
    return [  # TransactGetItems, TransactWriteItems
        (action.get("Key") or action["Item"])["pk"]["S"]
        for item in params["TransactItems"]
        for action in item.values()
    ]


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


def test_a_retraining_run_reads_and_registers_only_its_model(env):  # noqa: F811
    settings, registry = env
    with recording() as requests:
        # When a run retrains credit-risk with a registry of its own clients, as the steps do
        state = retraining.run_all(settings, retraining.RetrainRequest("credit-risk", DATA, "scope-1"))
    assert registry.get("credit-risk", version=state["version"]).status == "PendingManualApproval"
    # Then it read and wrote only credit-risk's partition (and its models-index entry)
    operations = {op for service, op, _ in requests.made if service == "dynamodb"}
    assert "TransactWriteItems" in operations
    scope = requests.out_of_scope(
        "credit-risk", table=settings.registry_table, artifacts=settings.registry_bucket, writes=True
    )
    assert scope == []
    # And in the work bucket, only its own runs (and the dataset it was given)
    work = [
        str(p.get("Key", p.get("Prefix", "")))
        for service, _, p in requests.made
        if service == "s3" and p.get("Bucket") == settings.work_bucket
    ]
    assert work and all(k.startswith(("retraining/credit-risk/", "datasets/")) for k in work), work


def test_a_request_for_another_model_is_reported(stage):  # noqa: F811
    # The recorder itself: another model's item, or a Scan, is out of scope
    requests = Requests()
    requests.made = [
        ("dynamodb", "GetItem", {"TableName": "t", "Key": {"pk": {"S": registry_partition_key("other")}}}),
        ("dynamodb", "Scan", {"TableName": "t"}),
        ("s3", "GetObject", {"Bucket": "b", "Key": f"{registry_artifact_prefix('other')}x/model.joblib"}),
    ]
    assert len(requests.out_of_scope("credit", table="t", artifacts="b")) == 3
