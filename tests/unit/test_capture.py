"""Capture records, the Firehose and direct-S3 writers, and the chunked window reader."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from sluice.errors import SluiceError
from sluice.serving.capture import (
    MAX_BATCH_RECORDS,
    CaptureWriter,
    capture_records,
    encode_line,
    format_ts,
    partition_prefix,
)
from sluice.serving.capture_reader import iter_capture
from sluice.settings import Settings

BUCKET = "capture-bucket"
T0 = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)


def rows(n: int, offset: int = 0) -> list[dict]:
    return [{"age": offset + i, "city": "Paris" if i % 2 else "Oslo"} for i in range(n)]


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def all_keys(client) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_capture_records_follow_the_contract():
    # Given a scored request of two rows with numpy predictions and probabilities
    records = capture_records(
        request_id="req-1",
        model="credit",
        version=np.int64(3),
        rows=rows(2),
        predictions=np.array([0, 1]),
        probabilities=np.array([0.2, float("nan")]),
        ts=T0,
    )
    # Then each row is one record with the agreed fields and plain JSON types
    assert records[1] == {
        "request_id": "req-1",
        "row": 1,
        "ts": "2026-11-25T10:00:00.123Z",
        "model": "credit",
        "version": 3,
        "source": "endpoint",
        "features": {"age": 1, "city": "Paris"},
        "prediction": 1,
        "probability": None,
    }
    assert type(records[0]["prediction"]) is int and records[0]["probability"] == 0.2
    json.loads(encode_line(records[1]))  # valid strict JSON


def test_capture_records_reject_mismatched_lengths_and_sources():
    with pytest.raises(SluiceError, match="2 rows but 1 predictions"):
        capture_records(request_id="r", model="m", version=1, rows=rows(2), predictions=[1])
    with pytest.raises(SluiceError, match="source"):
        capture_records(request_id="r", model="m", version=1, rows=rows(1), predictions=[1], source="x")


def test_encode_line_sends_the_table_row_with_nan_features_as_null():
    # Given a record with a NaN feature, a numpy float and a numpy prediction
    line = encode_line(
        {
            "model": "m",
            "version": 2,
            "features": {"x": float("nan"), "y": np.float32(1.5)},
            "prediction": np.int64(1),
        }
    )
    wire = json.loads(line)
    # Then the line holds the table's column types: features as JSON text, prediction as text
    assert json.loads(wire["features"]) == {"x": None, "y": 1.5}
    assert wire["prediction"] == "1" and (wire["model"], wire["version"]) == ("m", 2)
    assert line.endswith(b"\n")


def test_disabled_writer_does_nothing():
    writer = CaptureWriter.from_settings(Settings())
    assert writer.mode == "disabled"
    assert (
        writer.put(capture_records(request_id="r", model="m", version=1, rows=rows(1), predictions=[0])) == 0
    )


def test_direct_writer_puts_one_object_per_request_in_the_partitioned_layout(s3):
    # Given a writer on the capture bucket
    writer = CaptureWriter.from_settings(Settings(capture_bucket=BUCKET))
    # When two requests are captured
    for i in range(2):
        records = capture_records(
            request_id=f"req-{i}", model="credit", version=2, rows=rows(3), predictions=[0, 1, 0], ts=T0
        )
        assert writer.put(records) == 3
    # Then each request is one Parquet object under model/version/dt/hour
    keys = all_keys(s3)
    assert len(keys) == 2
    assert all(k.startswith("capture/model=credit/version=2/dt=2026-11-25/hour=10/") for k in keys)
    assert all(k.endswith(".parquet") for k in keys)
    assert read_parquet_rows(s3, keys[0])["row"] == [0, 1, 2]


def read_parquet_rows(s3, key: str) -> dict[str, list]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body)).to_pydict()


def test_writer_never_raises_into_the_request_path(s3, capsys):
    # Given a writer pointing at a bucket that does not exist
    writer = CaptureWriter(bucket_name="no-such-bucket")
    records = capture_records(request_id="r", model="credit", version=1, rows=rows(2), predictions=[0, 1])
    # When it puts records, it returns 0 instead of raising and counts the failure as a metric
    assert writer.put(records) == 0
    assert writer.failed == 2
    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["CaptureFailures"] == 2 and emf["Model"] == "credit"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice/Capture"


def firehose_to(bucket: str, name: str = "capture") -> None:
    boto3.client("firehose").create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "raw/",
        },
    )


def test_firehose_writer_splits_batches_at_500_records(s3, monkeypatch):
    # Given a Firehose stream and a request of 1,201 rows
    firehose_to(BUCKET)
    calls = []
    client = boto3.client("firehose")
    original = client.put_record_batch

    def counting(**kwargs):
        calls.append(len(kwargs["Records"]))
        return original(**kwargs)

    monkeypatch.setattr(client, "put_record_batch", counting)
    monkeypatch.setattr("sluice.aws.client", lambda service, **_: client)
    writer = CaptureWriter.from_settings(Settings(capture_stream="capture", capture_bucket=BUCKET))
    assert writer.mode == "firehose"
    records = capture_records(request_id="big", model="m", version=1, rows=rows(1201), predictions=[0] * 1201)
    # When captured, all rows are accepted in ceil(1201 / 500) calls
    assert writer.put(records) == 1201
    assert calls == [MAX_BATCH_RECORDS, MAX_BATCH_RECORDS, 201]
    # And the delivered bytes are the JSON lines, in order
    lines = b"".join(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in sorted(all_keys(s3)))
    assert sorted(json.loads(x)["row"] for x in lines.splitlines()) == list(range(1201))


def test_firehose_writer_splits_batches_at_4_mib(s3, monkeypatch):
    firehose_to(BUCKET)
    client = boto3.client("firehose")
    sizes = []
    original = client.put_record_batch

    def counting(**kwargs):
        sizes.append(sum(len(r["Data"]) for r in kwargs["Records"]))
        return original(**kwargs)

    monkeypatch.setattr(client, "put_record_batch", counting)
    monkeypatch.setattr("sluice.aws.client", lambda service, **_: client)
    # Given 60 rows of about 100 KB each (6 MB in all)
    wide = [{"text": "x" * 100_000, "i": i} for i in range(60)]
    records = capture_records(request_id="wide", model="m", version=1, rows=wide, predictions=[0] * 60)
    assert CaptureWriter(stream_name="capture").put(records) == 60
    # Then no call carries more than 4 MiB
    assert len(sizes) == 2 and max(sizes) <= 4 * 1024 * 1024


def put_window(s3, *, start: datetime, minutes: int, per_minute: int, version: int = 1) -> int:
    writer = CaptureWriter(bucket_name=BUCKET)
    total = 0
    for m in range(minutes):
        records = capture_records(
            request_id=f"v{version}-{m}",
            model="credit",
            version=version,
            rows=rows(per_minute, offset=m * per_minute),
            predictions=[0] * per_minute,
            ts=start + timedelta(minutes=m),
        )
        total += writer.put(records)
    return total


def test_iter_capture_reads_the_window_in_bounded_chunks(s3):
    # Given 3 hours of capture for versions 1 and 2 (180 requests x 5 rows each)
    start = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    put_window(s3, start=start, minutes=180, per_minute=5, version=1)
    put_window(s3, start=start, minutes=10, per_minute=5, version=2)
    # When the hour [10:00, 11:00) of version 1 is read in chunks of 7 rows
    chunks = list(
        iter_capture(
            BUCKET,
            model="credit",
            version=1,
            start=datetime(2026, 11, 25, 10, tzinfo=UTC),
            end=datetime(2026, 11, 25, 11, tzinfo=UTC),
            chunk_rows=7,
        )
    )
    # Then exactly the 60 minutes x 5 rows of that version come back, no chunk above 7 rows
    flat = [r for c in chunks for r in c]
    assert len(flat) == 300 and max(len(c) for c in chunks) == 7
    assert {r["version"] for r in flat} == {1}
    assert all("2026-11-25T10:00:00.000Z" <= r["ts"] < "2026-11-25T11:00:00.000Z" for r in flat)
    assert len({(r["request_id"], r["row"]) for r in flat}) == 300


def test_iter_capture_reads_gzip_objects_and_skips_bad_lines(s3):
    lines = [
        encode_line(r)
        for r in capture_records(
            request_id="g", model="m", version=1, rows=rows(3), predictions=[1, 1, 1], ts=T0
        )
    ]
    key = partition_prefix("m", 1, T0) + "stream-1.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"".join(lines) + b"not json\n"))
    got = list(
        iter_capture(
            BUCKET, model="m", version=1, start=T0 - timedelta(minutes=1), end=T0 + timedelta(minutes=1)
        )
    )
    assert [r["row"] for r in got[0]] == [0, 1, 2]


def test_iter_capture_of_an_empty_window_yields_nothing_and_rejects_reversed_windows(s3):
    assert list(iter_capture(BUCKET, model="m", version=1, start=T0, end=T0 + timedelta(hours=2))) == []
    with pytest.raises(SluiceError, match="not after its start"):
        list(iter_capture(BUCKET, model="m", version=1, start=T0, end=T0))


def test_format_ts_is_utc_with_milliseconds():
    assert format_ts(datetime(2026, 1, 2, 3, 4, 5, 678999)) == "2026-01-02T03:04:05.678Z"


@pytest.mark.parametrize("stream_above", [0, 10**9])
def test_streamed_and_prefetched_objects_read_the_same_rows_in_order(s3, monkeypatch, stream_above):
    # Large objects are streamed line by line, small ones prefetched in threads: same result
    monkeypatch.setattr("sluice.serving.capture_reader.STREAM_ABOVE", stream_above)
    start = datetime(2026, 11, 25, 10, tzinfo=UTC)
    put_window(s3, start=start, minutes=30, per_minute=4)
    s3.put_object(
        Bucket=BUCKET,
        Key=partition_prefix("credit", 1, start) + "zz-stream.jsonl.gz",
        Body=gzip.compress(
            b"".join(
                encode_line(r)
                for r in capture_records(
                    request_id="gz", model="credit", version=1, rows=rows(2), predictions=[1, 1], ts=start
                )
            )
        ),
    )
    got = [
        r
        for c in iter_capture(
            BUCKET, model="credit", version=1, start=start, end=start + timedelta(hours=1), chunk_rows=5
        )
        for r in c
    ]
    keys = sorted(all_keys(s3))
    expected = []
    for key in keys:
        if key.endswith(".parquet"):
            table = read_parquet_rows(s3, key)
            expected += list(zip(table["request_id"], table["row"], strict=True))
            continue
        body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        expected += [(json.loads(x)["request_id"], json.loads(x)["row"]) for x in body.splitlines()]
    assert [(r["request_id"], r["row"]) for r in got] == expected and len(got) == 122


class FlakyFirehose:
    """Rejects the first record of the first call (as Firehose does under throttling)."""

    def __init__(self, *, fail_always: bool = False):
        self.calls: list[list[bytes]] = []
        self.fail_always = fail_always

    def put_record_batch(self, *, DeliveryStreamName, Records):
        self.calls.append([r["Data"] for r in Records])
        fail_first = self.fail_always or len(self.calls) == 1
        results = [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
            if i == 0 and fail_first
            else {"RecordId": str(i)}
            for i in range(len(Records))
        ]
        return {"FailedPutCount": int(fail_first), "RequestResponses": results}


def test_firehose_rejections_are_retried_once(monkeypatch):
    flaky = FlakyFirehose()
    monkeypatch.setattr("sluice.aws.client", lambda service, **_: flaky)
    records = capture_records(request_id="r", model="m", version=1, rows=rows(3), predictions=[0, 1, 0])
    writer = CaptureWriter(stream_name="capture")
    assert writer.put(records) == 3 and writer.failed == 0
    assert [len(c) for c in flaky.calls] == [3, 1]
    assert json.loads(flaky.calls[1][0])["row"] == 0


def test_records_rejected_twice_are_counted_as_failures(monkeypatch, capsys):
    flaky = FlakyFirehose(fail_always=True)
    monkeypatch.setattr("sluice.aws.client", lambda service, **_: flaky)
    records = capture_records(request_id="r", model="m", version=1, rows=rows(3), predictions=[0, 1, 0])
    writer = CaptureWriter(stream_name="capture")
    assert writer.put(records) == 2 and writer.failed == 1 and len(flaky.calls) == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["CaptureFailures"] == 1


def test_capture_records_keep_only_the_schema_fields():
    # Given a row carrying the model's two features and two fields the caller added
    sent = [
        {"city": "Oslo", "ssn": "123-45-6789", "age": 41, "note": "call back"},
        {"age": 7, "city": "Rome"},
    ]
    # When it is captured with the schema's fields
    records = capture_records(
        request_id="r", model="m", version=1, rows=sent, predictions=[0, 1], fields=("age", "city")
    )
    # Then only the schema features are stored, in schema order, and the drop is counted
    assert list(records[0]["features"].items()) == [("age", 41), ("city", "Oslo")]
    assert records[0]["dropped_fields"] == 2
    assert "123-45-6789" not in encode_line(records[0]).decode()
    # And a row without extra fields has no count
    assert records[1]["features"] == {"age": 7, "city": "Rome"} and "dropped_fields" not in records[1]


def test_schema_fields_apply_to_plain_rows_and_absent_optional_features():
    # Given a plain (JSON-typed) row without the optional feature "income"
    records = capture_records(
        request_id="r",
        model="m",
        version=1,
        rows=[{"age": 3, "token": "secret"}],
        predictions=[1],
        plain_rows=True,
        fields=("age", "income"),
    )
    # Then the absent feature stays absent and the extra field is gone
    assert records[0]["features"] == {"age": 3} and records[0]["dropped_fields"] == 1


def test_schema_filtered_capture_reads_back_for_drift(s3):
    # Given schema-filtered records of a request with an extra field, written straight to S3
    sent = [{"age": i, "city": "Oslo", "ssn": f"000-00-{i:04d}"} for i in range(3)]
    records = capture_records(
        request_id="r",
        model="credit",
        version=2,
        rows=sent,
        predictions=[0, 1, 0],
        ts=T0,
        fields=("age", "city"),
    )
    assert CaptureWriter(bucket_name=BUCKET).put(records) == 3
    # When the window is read back as the drift job and the labels join read it
    window = {"start": T0 - timedelta(hours=1), "end": T0 + timedelta(hours=1)}
    read = [r for chunk in iter_capture(BUCKET, model="credit", version=2, **window) for r in chunk]
    # Then every row is there with the schema features only, and the join fields intact
    assert [r["features"] for r in read] == [{"age": i, "city": "Oslo"} for i in range(3)]
    assert [(r["request_id"], r["row"], r["prediction"]) for r in read] == [
        ("r", 0, 0),
        ("r", 1, 1),
        ("r", 2, 0),
    ]
    assert {r["dropped_fields"] for r in read} == {1}
