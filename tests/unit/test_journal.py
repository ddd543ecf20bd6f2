"""The local journal's file format and what it records (``localaws.journal``)."""

from __future__ import annotations

import threading

from localaws.journal.capture import classify
from localaws.journal.log import JournalFile, read_records
from localaws.journal.snapshot import kept_records

SIGNED = (
    "AWS4-HMAC-SHA256 Credential=AKIA1234/20261205/eu-west-1/{}/aws4_request, SignedHeaders=host, Signature=x"
)


def test_records_come_back_in_order_and_a_torn_tail_is_cut_off(tmp_path):
    # Given a journal with three records, the last one torn by a crash mid-write
    path = tmp_path / "journal.log"
    journal = JournalFile(path, next_seq=1)
    for i in range(3):
        journal.sync(journal.append({"kind": "http", "i": i}, b"body-%d" % i))
    journal.close()
    whole = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(whole - 3)
    # Then reading stops before it, and appending again continues from the last whole record
    assert [(h["seq"], h["i"], b) for h, b, _ in read_records(path)] == [(1, 0, b"body-0"), (2, 1, b"body-1")]
    journal = JournalFile(path, next_seq=3)
    journal.sync(journal.append({"kind": "http", "i": 9}, b"again"))
    journal.close()
    assert [(h["seq"], b) for h, b, _ in read_records(path)] == [
        (1, b"body-0"),
        (2, b"body-1"),
        (3, b"again"),
    ]


def test_a_corrupted_record_ends_the_journal(tmp_path):
    path = tmp_path / "journal.log"
    journal = JournalFile(path, next_seq=1)
    for i in range(2):
        journal.append({"i": i}, b"x" * 10)
    journal.sync(2)
    journal.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last body byte
    path.write_bytes(bytes(data))
    assert [h["i"] for h, _, _ in read_records(path)] == [0]


def test_concurrent_appends_get_distinct_consecutive_numbers(tmp_path):
    journal = JournalFile(tmp_path / "journal.log", next_seq=10, fsync=False)

    def write() -> None:
        for _ in range(50):
            journal.sync(journal.append({"kind": "x"}, b"y"))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert [h["seq"] for h, _, _ in read_records(tmp_path / "journal.log")] == list(range(10, 210))


def test_writes_are_journaled_and_reads_invocations_and_deliveries_are_not():
    def kind(method, path, *, service, target=None, query="", body=b""):
        headers = {"authorization": SIGNED.format(service)}
        if target:
            headers["x-amz-target"] = target
        return classify(method, path, query, headers, body)

    assert kind("POST", "/", service="dynamodb", target="DynamoDB_20120810.TransactWriteItems")["data"]
    assert kind("POST", "/", service="dynamodb", target="DynamoDB_20120810.GetItem") is None
    assert kind("PUT", "/bucket/a/b.json", service="s3") == {
        "service": "s3",
        "action": "PUT object",
        "data": True,
    }
    assert kind("PUT", "/bucket", service="s3", query="versioning")["data"] is False
    assert kind("PUT", "/bucket/k", service="s3", query="partNumber=1&uploadId=u") is None
    assert kind("GET", "/bucket/k", service="s3") is None
    assert kind("POST", "/2015-03-31/functions/f/invocations", service="lambda") is None
    assert kind("POST", "/2015-03-31/functions/f/versions", service="lambda")["data"] is False
    assert kind("POST", "/", service="firehose", target="Firehose_20150804.PutRecordBatch") is None
    assert kind("POST", "/", service="states", target="AWSStepFunctions.StartExecution") is None
    assert kind("POST", "/", service="sts", body=b"Action=AssumeRole&Version=2011-06-15") is None
    assert (
        kind("POST", "/", service="iam", body=b"Action=CreateRole&Version=2010-05-08")["action"]
        == "CreateRole"
    )
    cbor = "/service/GraniteServiceVersion20100801/operation/SetAlarmState"
    assert kind("POST", cbor, service="monitoring")["action"] == "SetAlarmState"
    assert kind("POST", "/moto-api/reset", service="") is None


def test_a_snapshot_keeps_control_records_and_one_record_per_execution():
    records = [
        ({"seq": 1, "kind": "http", "action": "PublishVersion", "data": False}, b""),
        ({"seq": 2, "kind": "s3.put", "data": True}, b"object"),
        ({"seq": 3, "kind": "sfn.execution", "arn": "e1", "status": "RUNNING"}, b""),
        ({"seq": 4, "kind": "sfn.execution", "arn": "e1", "status": "SUCCEEDED"}, b""),
    ]
    kept = kept_records(records)
    assert [h.get("action") or h["status"] for h, _ in kept] == ["PublishVersion", "SUCCEEDED"]
    assert all("seq" not in h for h, _ in kept)
