"""Capture as Parquet: Firehose converts to the stage's Glue table, which Athena queries by projection."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aws_cdk.assertions import Match

from infra.constructs.capture_table import COLUMNS, PARTITION_KEYS, projection
from sluice.serving import capture_parquet
from sluice.serving.capture import partition_prefix
from tests.infra.conftest import resources_of

STACKS = ["Dev-Service", "Prod-Service"]


def only(template: dict, type_: str) -> dict:
    (resource,) = resources_of(template, type_).values()
    return resource["Properties"]


@pytest.mark.parametrize("stack", STACKS)
def test_firehose_converts_capture_lines_to_parquet_with_the_stage_table(templates, template, stack):
    # Given the stage's one capture table
    table = only(templates[stack], "AWS::Glue::Table")
    # Then the capture stream converts OpenX JSON to Parquet against exactly that table
    template(stack).has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "ExtendedS3DestinationConfiguration": Match.object_like(
                {
                    "FileExtension": ".parquet",
                    "DataFormatConversionConfiguration": {
                        "Enabled": True,
                        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": Match.any_value()}},
                        "OutputFormatConfiguration": {
                            "Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}
                        },
                        "SchemaConfiguration": Match.object_like(
                            {
                                "DatabaseName": table["DatabaseName"],
                                "TableName": table["TableInput"]["Name"],
                                "VersionId": "LATEST",
                                "RoleARN": Match.any_value(),
                            }
                        ),
                    },
                }
            )
        },
    )
    database = only(templates[stack], "AWS::Glue::Database")
    assert database["DatabaseInput"]["Name"] == table["DatabaseName"]


@pytest.mark.parametrize("stack", STACKS)
def test_one_table_serves_every_model_with_the_runtime_columns(templates, stack):
    table = only(templates[stack], "AWS::Glue::Table")["TableInput"]
    descriptor = table["StorageDescriptor"]
    # The columns are the ones the writers and the readers use (features as JSON text)
    assert [(c["Name"], c["Type"]) for c in descriptor["Columns"]] == list(capture_parquet.COLUMNS)
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == list(capture_parquet.PARTITION_KEYS)
    assert [(n, t) for n, t, _ in COLUMNS] == list(capture_parquet.COLUMNS)
    assert [(n, t) for n, t, _ in PARTITION_KEYS] == list(capture_parquet.PARTITION_KEYS)
    assert descriptor["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert table["TableType"] == "EXTERNAL_TABLE"


@pytest.mark.parametrize("stack", STACKS)
def test_partition_projection_needs_no_crawler_and_follows_the_capture_layout(templates, stack):
    parameters = only(templates[stack], "AWS::Glue::Table")["TableInput"]["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.model.type"] == "injected"
    assert (parameters["projection.dt.type"], parameters["projection.dt.format"]) == ("date", "yyyy-MM-dd")
    assert (parameters["projection.hour.range"], parameters["projection.hour.digits"]) == ("0,23", "2")
    # The location template is the capture bucket's capture/ prefix, then the reader's layout
    location = parameters["storage.location.template"]
    assert location.startswith("s3://sluice-") and "-capture-" in location
    assert location.split("/", 3)[3] == "capture/model=${model}/version=${version}/dt=${dt}/hour=${hour}/"
    no_crawlers = {"AWS::Glue::Crawler"} & {r["Type"] for r in templates[stack]["Resources"].values()}
    assert not no_crawlers


def test_projected_location_evaluates_to_the_writers_prefix():
    template = projection("s3://b/capture/", max_versions=10, history_days=5)["storage.location.template"]
    moment = datetime(2026, 11, 25, 7, tzinfo=UTC)
    evaluated = (
        template.replace("${model}", "credit")
        .replace("${version}", "4")
        .replace("${dt}", "2026-11-25")
        .replace("${hour}", "07")
    )
    assert evaluated == "s3://b/" + partition_prefix("credit", 4, moment)


@pytest.mark.parametrize("stack", STACKS)
def test_the_delivery_role_reads_that_table_schema_and_nothing_else_in_glue(templates, stack):
    template = templates[stack]
    table = only(template, "AWS::Glue::Table")
    database, name = table["DatabaseName"], table["TableInput"]["Name"]
    glue = [
        s
        for policy in resources_of(template, "AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("glue:") for a in _list(s["Action"]))
    ]
    (statement,) = glue
    assert sorted(_list(statement["Action"])) == [
        "glue:GetTable",
        "glue:GetTableVersion",
        "glue:GetTableVersions",
    ]
    resources = [json.dumps(r) for r in _list(statement["Resource"])]
    assert len(resources) == 3 and not any(r == '"*"' for r in resources)
    assert any(f":table/{database}/{name}" in r for r in resources)
    assert any(r.rstrip('"]}').endswith(":catalog") for r in resources)


def _list(value):
    return value if isinstance(value, list) else [value]
