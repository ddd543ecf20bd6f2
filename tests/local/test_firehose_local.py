"""The local Firehose evaluates the capture stream's dynamic-partitioning prefix like AWS does,
and converts the records to Parquet with the Glue table's columns."""

from __future__ import annotations

import gzip
import inspect
import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from infra.constructs.capture import DATA_PREFIX, ERROR_PREFIX, PARTITION_QUERIES
from infra.constructs.capture_table import COLUMNS, PARTITION_KEYS
from localaws import firehose as local_firehose
from sluice.serving.capture import CaptureWriter, capture_records
from sluice.serving.capture_reader import iter_capture

BUCKET = "capture-bucket"
DATABASE, TABLE = "sluice_test_capture", "requests"


@pytest.fixture
def patched():
    local_firehose.install()
    yield
    local_firehose.uninstall()


def capture_table() -> None:
    """The capture table in moto's Glue, with the columns the CaptureTable construct declares."""
    glue = boto3.client("glue")
    glue.create_database(DatabaseInput={"Name": DATABASE})
    glue.create_table(
        DatabaseName=DATABASE,
        TableInput={
            "Name": TABLE,
            "StorageDescriptor": {"Columns": [{"Name": n, "Type": t} for n, t, _ in COLUMNS]},
            "PartitionKeys": [{"Name": n, "Type": t} for n, t, _ in PARTITION_KEYS],
        },
    )


PARQUET = {
    "FileExtension": ".parquet",
    "DataFormatConversionConfiguration": {
        "Enabled": True,
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {"CaseInsensitive": True}}},
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}},
        "SchemaConfiguration": {
            "DatabaseName": DATABASE,
            "TableName": TABLE,
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "VersionId": "LATEST",
        },
    },
}
# The destination before Parquet: GZIP JSON lines (its objects are still read).
JSON_LINES = {"CompressionFormat": "GZIP", "FileExtension": ".jsonl.gz"}


@pytest.fixture
def aws(patched):
    with mock_aws():
        yield stream(PARQUET)


def stream(output: dict) -> object:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    capture_table()
    query = "{" + ",".join(f'"{k}":{v}' for k, v in PARTITION_QUERIES.items()) + "}"
    # The same destination the CaptureStream construct synthesizes
    boto3.client("firehose").create_delivery_stream(
        DeliveryStreamName="capture",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "Prefix": DATA_PREFIX,
            "ErrorOutputPrefix": ERROR_PREFIX,
            **output,
            "DynamicPartitioningConfiguration": {"Enabled": True},
            "ProcessingConfiguration": {
                "Enabled": True,
                "Processors": [
                    {
                        "Type": "MetadataExtraction",
                        "Parameters": [
                            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
                            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                        ],
                    }
                ],
            },
        },
    )
    return s3


def keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_guard_moto_symbol_this_patch_replaces_is_still_there():
    # If this fails, moto changed and localaws.firehose must follow (do not skip it)
    from moto.firehose.models import FirehoseBackend

    parameters = list(inspect.signature(FirehoseBackend.put_s3_records).parameters)
    assert parameters == ["self", "delivery_stream_name", "version_id", "s3_destination", "records"]
    local_firehose.install()
    try:
        assert getattr(FirehoseBackend.put_s3_records, "__sluice_dynamic_partitioning__", False)
        local_firehose.install()  # idempotent
        assert FirehoseBackend.put_s3_records.__wrapped__.__name__ == "put_s3_records"
    finally:
        local_firehose.uninstall()
    assert not getattr(FirehoseBackend.put_s3_records, "__sluice_dynamic_partitioning__", False)


def test_install_fails_loudly_if_the_symbol_moved(monkeypatch):
    from moto.firehose.models import FirehoseBackend

    monkeypatch.delattr(FirehoseBackend, "put_s3_records")
    with pytest.raises(RuntimeError, match="put_s3_records is gone"):
        local_firehose.install()


def send_two_versions() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    writer = CaptureWriter(stream_name="capture")
    v1 = capture_records(
        request_id="a", model="credit", version=1, rows=[{"x": 1}] * 3, predictions=[0, 1, 0]
    )
    v2 = capture_records(request_id="b", model="credit", version=2, rows=[{"x": 2}] * 2, predictions=[1, 1])
    assert writer.put(v1 + v2) == 5
    return now, datetime.now(UTC)  # the hour of arrival may have turned since `now`


def assert_partitioned(found: list[str], now: datetime, later: datetime, extension: str) -> None:
    hours = tuple({f"dt={t:%Y-%m-%d}/hour={t:%H}/" for t in (now, later)})
    assert len(found) == 2
    for key, version in zip(found, (1, 2), strict=True):
        assert any(key.startswith(f"capture/model=credit/version={version}/{h}capture-1-") for h in hours)
    assert all(k.endswith(extension) for k in found)


def test_captured_records_land_as_parquet_in_the_partitioned_layout_and_read_back(aws):
    # Given records of two model versions sent through the Firehose writer in one batch
    now, later = send_two_versions()
    # Then each version has its own Parquet object under model/version/dt/hour of arrival
    found = keys(aws)
    assert_partitioned(found, now, later, ".parquet")
    # with the Glue table's columns, in its order (model and version live in the key)
    table = pq.read_table(io.BytesIO(aws.get_object(Bucket=BUCKET, Key=found[0])["Body"].read()))
    assert table.column_names == [name for name, _, _ in COLUMNS]
    assert table.column("request_id").to_pylist() == ["a", "a", "a"]
    assert table.column("features").to_pylist() == ['{"x":1}'] * 3
    assert table.schema.field("row").type == "int32"
    # And the drift job's reader finds them, in the record shape
    window = {"start": now - timedelta(minutes=5), "end": later + timedelta(minutes=5)}
    rows = [r for c in iter_capture(BUCKET, model="credit", version=2, **window) for r in c]
    assert [(r["request_id"], r["row"], r["features"], r["prediction"]) for r in rows] == [
        ("b", 0, {"x": 2}, 1),
        ("b", 1, {"x": 2}, 1),
    ]


def test_without_format_conversion_records_land_as_gzip_json_lines(patched):
    with mock_aws():
        s3 = stream(JSON_LINES)
        now, later = send_two_versions()
        found = keys(s3)
        assert_partitioned(found, now, later, ".jsonl.gz")
        body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=found[0])["Body"].read())
        assert [json.loads(line)["request_id"] for line in body.splitlines()] == ["a", "a", "a"]
        window = {"start": now - timedelta(minutes=5), "end": later + timedelta(minutes=5)}
        rows = [r for c in iter_capture(BUCKET, model="credit", version=1, **window) for r in c]
        assert [(r["request_id"], r["features"]) for r in rows] == [("a", {"x": 1})] * 3


def test_records_without_partition_keys_go_to_the_error_prefix(aws):
    boto3.client("firehose").put_record_batch(
        DeliveryStreamName="capture", Records=[{"Data": b"not json\n"}, {"Data": b'{"model": "m"}\n'}]
    )
    found = keys(aws)
    assert len(found) == 1 and found[0].startswith("capture-errors/processing-failed/dt=")


def test_records_that_do_not_fit_the_table_go_to_the_conversion_error_prefix(aws):
    # Given one record whose "row" is not an integer, beside one that fits
    good = {"model": "m", "version": 1, "request_id": "ok", "row": 0, "ts": "t", "features": "{}"}
    bad = {**good, "request_id": "bad", "row": "first"}
    boto3.client("firehose").put_record_batch(
        DeliveryStreamName="capture",
        Records=[{"Data": json.dumps(r).encode() + b"\n"} for r in (good, bad)],
    )
    # Then the good one is a Parquet row and the bad one is kept, as sent, under the error prefix
    found = keys(aws)
    errors = [k for k in found if k.startswith("capture-errors/format-conversion-failed/")]
    assert len(found) == 2 and len(errors) == 1
    assert json.loads(aws.get_object(Bucket=BUCKET, Key=errors[0])["Body"].read())["request_id"] == "bad"


def test_java_timestamp_patterns():
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert local_firehose.java_time("yyyy-MM-dd/HH:mm:ss", moment) == "2026-03-04/05:06:07"


def test_plain_prefixes_keep_moto_behaviour(patched):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        boto3.client("firehose").create_delivery_stream(
            DeliveryStreamName="plain",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{BUCKET}",
                "Prefix": "raw/",
            },
        )
        boto3.client("firehose").put_record(DeliveryStreamName="plain", Record={"Data": b"x"})
        (key,) = keys(s3)
        assert key.startswith("raw/") and key.count("/") == 5  # raw/YYYY/MM/DD/HH/name
