"""The moto patch that makes DynamoDB transactions isolated under moto's threaded server."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.server import ThreadedMotoServer

from localaws import dynamodb as moto_patches


def test_apply_wraps_every_item_operation_once():
    moto_patches.apply()
    targets = [(DynamoDBBackend, name) for name in moto_patches.DYNAMODB_METHODS]
    targets += [(DynamoHandler, name) for name in moto_patches.DYNAMODB_HANDLER_METHODS]
    wrapped = {(cls, name): getattr(cls, name) for cls, name in targets}
    moto_patches.apply()  # idempotent: no double wrapping
    assert moto_patches.is_applied()
    # PartiQL works on the tables directly and TransactGetItems reads several items: both wrapped
    assert {"execute_statement", "execute_transaction"} <= set(moto_patches.DYNAMODB_METHODS)
    assert (DynamoHandler, "transact_get_items") in wrapped
    for (cls, name), method in wrapped.items():
        assert getattr(cls, name) is method
        assert method.__name__ == name
        assert method.__wrapped__ is not None
        assert not getattr(method.__wrapped__, "__sluice_serialised__", False)


def test_serialised_methods_never_run_at_the_same_time():
    # Given a method that records how many callers are inside it at once
    inside = 0
    most = 0
    guard = threading.Lock()
    entered = threading.Barrier(4, timeout=60)

    def method() -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        threading.Event().wait(0.01)
        with guard:
            inside -= 1

    locked = moto_patches._serialised(method)

    def call(_: int) -> None:
        entered.wait()  # all threads start together
        for _ in range(5):
            locked()

    # When four threads call it together
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(call, range(4)))
    # Then at most one was ever inside
    assert most == 1


def test_serialised_lock_is_reentrant():
    # transact_write_items calls get_item internally: the lock must allow that
    inner = moto_patches._serialised(lambda: "inner")
    outer = moto_patches._serialised(lambda: inner())
    assert outer() == "inner"


def test_apply_fails_loudly_when_moto_drops_a_method(monkeypatch):
    monkeypatch.setattr(moto_patches, "DYNAMODB_METHODS", ("transact_write_items", "no_such_method"))
    with pytest.raises(RuntimeError, match=r"DynamoDBBackend\.no_such_method is gone"):
        moto_patches.apply()


def test_conditional_transactions_lose_nothing_on_the_threaded_server():
    # Given moto's threaded server with the patch, and a counter guarded by a condition
    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    try:
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1")
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="t", Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
        won: list[int] = []
        lock = threading.Lock()

        def claim(_: int) -> None:
            # Each claim reads n, then moves it to n+1 and creates item n+1 in one transaction
            for _attempt in range(500):
                n = int(ddb.get_item(TableName="t", Key={"pk": {"S": "counter"}})["Item"]["n"]["N"])
                try:
                    ddb.transact_write_items(
                        TransactItems=[
                            {
                                "Update": {
                                    "TableName": "t",
                                    "Key": {"pk": {"S": "counter"}},
                                    "UpdateExpression": "SET n = :next",
                                    "ConditionExpression": "n = :n",
                                    "ExpressionAttributeValues": {
                                        ":n": {"N": str(n)},
                                        ":next": {"N": str(n + 1)},
                                    },
                                }
                            },
                            {
                                "Put": {
                                    "TableName": "t",
                                    "Item": {"pk": {"S": f"item-{n + 1}"}},
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            },
                        ]
                    )
                except ClientError as err:
                    assert err.response["Error"]["Code"] == "TransactionCanceledException"
                    continue
                with lock:
                    won.append(n + 1)
                return
            raise AssertionError("no claim succeeded")

        # When 6 threads make 10 claims each
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(claim, range(60)))
        # Then every committed claim left its item, and the counter agrees
        items = ddb.scan(TableName="t")["Items"]
        claimed = sorted(int(i["pk"]["S"].removeprefix("item-")) for i in items if i["pk"]["S"] != "counter")
        assert sorted(won) == claimed == list(range(1, 61))
        counter = ddb.get_item(TableName="t", Key={"pk": {"S": "counter"}})["Item"]["n"]["N"]
        assert counter == "60"
    finally:
        server.stop()


def test_transact_get_items_sees_whole_transactions_on_the_threaded_server():
    # Given a writer that moves two items together in transactions
    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    try:
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1")
        ddb.create_table(
            TableName="pair",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

        def put_both(n: int) -> None:
            ddb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "pair", "Item": {"pk": {"S": side}, "n": {"N": str(n)}}}}
                    for side in ("a", "b")
                ]
            )

        put_both(0)
        done = threading.Event()

        def writer() -> None:
            for n in range(1, 80):
                put_both(n)
            done.set()

        # When a reader reads both items in TransactGetItems while the writer runs
        seen: list[tuple[str, str]] = []
        thread = threading.Thread(target=writer)
        thread.start()
        while not done.is_set():
            got = ddb.transact_get_items(
                TransactItems=[
                    {"Get": {"TableName": "pair", "Key": {"pk": {"S": side}}}} for side in ("a", "b")
                ]
            )["Responses"]
            seen.append((got[0]["Item"]["n"]["N"], got[1]["Item"]["n"]["N"]))
        thread.join()
        # Then it never sees one item of a transaction without the other
        assert seen
        assert all(a == b for a, b in seen)
    finally:
        server.stop()
