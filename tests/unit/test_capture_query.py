"""The README's Athena query over captured requests, run by DuckDB on a copy of the capture bucket.

Only the table reference changes: ``sluice_dev_capture.requests`` becomes
``read_parquet('<copy>/capture/**/*.parquet', hive_partitioning = true)``, whose partitions come
from the same ``model=/version=/dt=/hour=`` keys partition projection reads in Athena.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import duckdb
import pandas as pd
import pytest
from moto import mock_aws

from sluice.serving.capture import CaptureWriter, capture_records

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "capture-bucket"
TABLE = "sluice_dev_capture.requests"
T10 = datetime(2026, 11, 25, 10, 5, tzinfo=UTC)


def readme_query() -> str:
    """The ```sql block of the README's "Querying capture" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Querying capture") :]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)


def request(writer: CaptureWriter, request_id: str, *, model: str, ts: datetime, region: str, income: float):
    row = {"income": income, "age": 40.0, "region": region, "product": "loan"}
    writer.put(
        capture_records(
            request_id=request_id,
            model=model,
            version=2,
            rows=[row, row],
            predictions=[0, 1],
            probabilities=[0.2, 0.7],
            ts=ts,
        )
    )


@pytest.fixture
def capture_copy(tmp_path) -> Path:
    """Requests of two models over two hours, captured to S3 and copied to ``tmp_path``."""
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        writer = CaptureWriter(bucket_name=BUCKET)
        request(writer, "hit-1", model="credit-risk", ts=T10, region="east", income=61_000.0)
        request(
            writer,
            "hit-2",
            model="credit-risk",
            ts=T10 + timedelta(minutes=40),
            region="east",
            income=90_000.0,
        )
        request(writer, "poor", model="credit-risk", ts=T10, region="east", income=20_000.0)
        request(writer, "west", model="credit-risk", ts=T10, region="west", income=80_000.0)
        request(
            writer, "later", model="credit-risk", ts=T10 + timedelta(hours=1), region="east", income=70_000.0
        )
        request(writer, "other-model", model="credit-decisions", ts=T10, region="east", income=70_000.0)
        # and a batch shard, written column by column
        shard = pd.DataFrame({"income": [55_000.0, 10.0], "region": ["east", "east"], "age": [30.0, 31.0]})
        writer.put_frame(
            request_id="run-1/shard-00000",
            model="credit-risk",
            version=3,
            features=shard,
            predictions=[1, 0],
            probabilities=[0.9, 0.1],
            ts=T10,
        )
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="capture/"):
            for item in page.get("Contents", []):
                target = tmp_path / item["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
    return tmp_path


def test_the_readme_athena_query_runs_on_the_local_capture_with_duckdb(capture_copy):
    # Given the README's query with only the table reference changed
    sql = readme_query()
    assert TABLE in sql
    local = sql.replace(
        TABLE, f"read_parquet('{capture_copy}/capture/**/*.parquet', hive_partitioning = true)"
    )
    connection = duckdb.connect()
    connection.execute("CREATE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)")
    # When it runs
    rows = connection.execute(local).fetchall()
    # Then it returns the captured rows of that model, hour and feature values, in order
    assert [(r[0], r[1]) for r in rows] == [
        ("hit-1", 0),
        ("hit-1", 1),
        ("hit-2", 0),
        ("hit-2", 1),
        ("run-1/shard-00000", 0),
    ]
    assert [r[2] for r in rows] == ["0", "1", "0", "1", "1"] and rows[1][3] == pytest.approx(0.7)


def test_partitions_are_typed_as_the_glue_table_declares_them(capture_copy):
    # model string, version int, dt a day, hour int: the README's literals compare as in Athena
    glob = f"{capture_copy}/capture/**/*.parquet"
    found = duckdb.sql(
        f"SELECT DISTINCT model, version, CAST(dt AS VARCHAR), hour FROM read_parquet('{glob}', "
        "hive_partitioning = true) ORDER BY ALL"
    ).fetchall()
    assert found == [
        ("credit-decisions", 2, "2026-11-25", 10),
        ("credit-risk", 2, "2026-11-25", 10),
        ("credit-risk", 2, "2026-11-25", 11),
        ("credit-risk", 3, "2026-11-25", 10),
    ]
