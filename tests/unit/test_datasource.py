import hashlib
import re

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from sluice.errors import NotFound, SluiceError
from sluice.pipelines.datasource import load_table, split_s3_uri, write_table


@pytest.fixture
def frame():
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip_on_disk_records_hash_and_rows(tmp_path, frame, suffix):
    path = str(tmp_path / f"data.{suffix}")
    written = write_table(frame, path)
    loaded, lineage = load_table(path)
    pd.testing.assert_frame_equal(loaded, frame)
    assert lineage.rows == 3
    assert (
        lineage.sha256
        == written.sha256
        == hashlib.sha256((tmp_path / f"data.{suffix}").read_bytes()).hexdigest()
    )


@mock_aws
def test_s3_lineage_carries_version_id(frame):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
    written = write_table(frame, "s3://data/train/part.parquet")
    _, lineage = load_table("s3://data/train/part.parquet")
    assert lineage.version_id and lineage.version_id == written.version_id
    assert lineage.etag and lineage.sha256 == written.sha256


@mock_aws
def test_missing_s3_object_is_not_found():
    boto3.client("s3").create_bucket(
        Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    with pytest.raises(NotFound, match=re.escape("s3://data/nope.csv")):
        load_table("s3://data/nope.csv")


@pytest.mark.parametrize("uri", ["data.txt", "s3://bucket-only", "s3://b/dir/"])
def test_bad_uris_name_the_problem(uri):
    with pytest.raises(SluiceError):
        split_s3_uri(uri) if uri.startswith("s3://") else load_table(uri)


def test_unreadable_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SluiceError, match="cannot be read as parquet"):
        load_table(str(bad))
