"""Capture stream and monitoring resources in the synthesized service stack."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_cdk.assertions import Match

from infra.constructs.capture import DATA_PREFIX
from sluice.capture import partition_prefix


def test_capture_stream_partitions_by_model_version_day_and_hour(template):
    # Given the dev service stack
    service = template("Dev-Service")
    # Then one encrypted Firehose stream writes GZIP JSON lines to the capture bucket, partitioned
    # by the model and version parsed from each record and by arrival day and hour
    service.has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamEncryptionConfigurationInput": {"KeyType": Match.any_value()},
            "ExtendedS3DestinationConfiguration": Match.object_like(
                {
                    "BucketARN": Match.string_like_regexp("sluice-dev-capture-"),
                    "Prefix": DATA_PREFIX,
                    "ErrorOutputPrefix": Match.string_like_regexp("^capture-errors/"),
                    "DynamicPartitioningConfiguration": {"Enabled": True},
                    "CompressionFormat": "GZIP",
                    "ProcessingConfiguration": {
                        "Enabled": True,
                        "Processors": [
                            Match.object_like(
                                {
                                    "Type": "MetadataExtraction",
                                    "Parameters": Match.array_with(
                                        [
                                            {
                                                "ParameterName": "MetadataExtractionQuery",
                                                "ParameterValue": Match.string_like_regexp(
                                                    r'"model":\.model,"version":\.version'
                                                ),
                                            }
                                        ]
                                    ),
                                }
                            )
                        ],
                    },
                }
            ),
        },
    )


def test_capture_stream_prefix_matches_the_reader_layout():
    # The prefix Firehose evaluates must produce what sluice.capture lists
    moment = datetime(2026, 11, 25, 7, tzinfo=UTC)
    evaluated = (
        DATA_PREFIX.replace("!{partitionKeyFromQuery:model}", "credit")
        .replace("!{partitionKeyFromQuery:version}", "4")
        .replace("!{timestamp:yyyy-MM-dd}", "2026-11-25")
        .replace("!{timestamp:HH}", "07")
    )
    assert evaluated == partition_prefix("credit", 4, moment)
