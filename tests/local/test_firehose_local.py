"""The local Firehose evaluates the capture stream's dynamic-partitioning prefix like AWS does."""

from __future__ import annotations

import gzip
import inspect
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from infra.constructs.capture import DATA_PREFIX, ERROR_PREFIX, PARTITION_QUERIES
from localaws import firehose as local_firehose
from sluice.serving.capture import CaptureWriter, capture_records
from sluice.serving.capture_reader import iter_capture

BUCKET = "capture-bucket"


@pytest.fixture
def patched():
    local_firehose.install()
    yield
    local_firehose.uninstall()


@pytest.fixture
def aws(patched):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        query = "{" + ",".join(f'"{k}":{v}' for k, v in PARTITION_QUERIES.items()) + "}"
        # The same destination the CaptureStream construct synthesizes
        boto3.client("firehose").create_delivery_stream(
            DeliveryStreamName="capture",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{BUCKET}",
                "Prefix": DATA_PREFIX,
                "ErrorOutputPrefix": ERROR_PREFIX,
                "CompressionFormat": "GZIP",
                "FileExtension": ".jsonl.gz",
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
        yield s3


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


def test_captured_records_land_in_the_partitioned_layout_and_read_back(aws):
    # Given records of two model versions sent through the Firehose writer in one batch
    now = datetime.now(UTC)
    writer = CaptureWriter(stream_name="capture")
    v1 = capture_records(
        request_id="a", model="credit", version=1, rows=[{"x": 1}] * 3, predictions=[0, 1, 0]
    )
    v2 = capture_records(request_id="b", model="credit", version=2, rows=[{"x": 2}] * 2, predictions=[1, 1])
    assert writer.put(v1 + v2) == 5
    # Then each version has its own gzip object under model/version/dt/hour of arrival
    found = keys(aws)
    later = datetime.now(UTC)  # the hour of arrival may have turned since `now`
    hours = tuple({f"dt={t:%Y-%m-%d}/hour={t:%H}/" for t in (now, later)})
    assert len(found) == 2
    for key, version in zip(found, (1, 2), strict=True):
        assert any(key.startswith(f"capture/model=credit/version={version}/{h}capture-1-") for h in hours)
    assert all(k.endswith(".jsonl.gz") for k in found)
    body = gzip.decompress(aws.get_object(Bucket=BUCKET, Key=found[0])["Body"].read())
    assert [json.loads(line)["request_id"] for line in body.splitlines()] == ["a", "a", "a"]
    # And the drift job's reader finds them
    window = {"start": now - timedelta(minutes=5), "end": now + timedelta(minutes=5)}
    rows = [r for c in iter_capture(BUCKET, model="credit", version=2, **window) for r in c]
    assert [(r["request_id"], r["row"]) for r in rows] == [("b", 0), ("b", 1)]


def test_records_without_partition_keys_go_to_the_error_prefix(aws):
    boto3.client("firehose").put_record_batch(
        DeliveryStreamName="capture", Records=[{"Data": b"not json\n"}, {"Data": b'{"model": "m"}\n'}]
    )
    found = keys(aws)
    assert len(found) == 1 and found[0].startswith("capture-errors/processing-failed/dt=")


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
