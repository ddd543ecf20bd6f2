"""Data capture: a Firehose delivery stream that writes scored rows to the capture bucket as Parquet.

Dynamic partitioning (inline JQ parsing of each JSON line) lays the objects out as
``capture/model=<m>/version=<v>/dt=YYYY-MM-DD/hour=HH/``, the layout ``sluice.serving.capture_reader``
reads; record format conversion turns each line into a row of the stage's Glue table
(:class:`~infra.constructs.capture_table.CaptureTable`), which Athena queries.
"""

from __future__ import annotations

from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.capture_table import CaptureTable
from infra.constructs.nag import acknowledge_grant_wildcards
from infra.constructs.storage import bucket_in

# Kept in step with sluice.serving.capture.partition_prefix (tests/infra checks both).
DATA_PREFIX = (
    "capture/model=!{partitionKeyFromQuery:model}/version=!{partitionKeyFromQuery:version}/"
    "dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
)
ERROR_PREFIX = "capture-errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/"
PARTITION_QUERIES = {"model": ".model", "version": ".version|tostring"}


class CaptureStream(Construct):
    """Kinesis Data Firehose stream from the endpoints to the capture bucket.

    Records are encrypted at rest in the stream, in the delivered objects and in Firehose's
    error log with one customer-managed key (:class:`~infra.constructs.data_key.DataKey`).

    Parameters
    ----------
    bucket
        The capture bucket (may live in another stack; it is referenced by name).
    stream_name
        Physical name of the delivery stream (the endpoints get it as ``SLUICE_CAPTURE_STREAM``).
    buffering_interval_s
        Seconds Firehose buffers before writing: the capture's freshness for the drift job.
        Default 60 (AWS allows 0-900).
    buffering_size_mib
        Buffer size; dynamic partitioning and format conversion need at least 64 MiB. Default 64.
    database_name
        Glue database of the capture table. Default: ``stream_name`` with ``-`` as ``_``
        (``sluice_dev_capture``); the table is ``requests``.
    history_days
        Days of capture Athena's partition projection enumerates (the bucket's retention).
        Default 400.
    encryption_key
        Customer-managed key for the stream (``CUSTOMER_MANAGED_CMK``), the objects it writes
        and its log group; the delivery role gets encrypt/decrypt through ``grant_*``. Default
        ``None``: an AWS-owned key for the stream, the bucket's own default encryption for the
        objects and an unencrypted log group; a stage always passes its data key.
    retain_logs
        Keep Firehose's delivery-error log group when the stack is deleted. Default ``False``.

    Attributes
    ----------
    delivery_stream, bucket, stream_name, role, log_group, encryption_key, table
        The stream, the capture bucket as seen from this stack, its name, its delivery role,
        its delivery-error log group, the key that encrypts all of them and the Glue table
        the records are converted to.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket: s3.IBucket,
        stream_name: str,
        buffering_interval_s: int = 60,
        buffering_size_mib: int = 64,
        encryption_key: kms.IKey | None = None,
        retain_logs: bool = False,
        database_name: str = "",
        history_days: int = 400,
    ) -> None:
        super().__init__(scope, id)
        self.bucket = bucket_in(self, bucket)
        self.stream_name = stream_name
        self.encryption_key = encryption_key
        self.role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"),
            description="Firehose delivery of captured scoring data to the capture bucket",
        )
        self.log_group = logs.LogGroup(
            self,
            "DeliveryLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=encryption_key,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        self.table = CaptureTable(
            self,
            "Table",
            bucket=self.bucket,
            database_name=database_name or stream_name.replace("-", "_"),
            history_days=history_days,
        )
        destination = self._build_destination(
            buffering_interval_s=buffering_interval_s, buffering_size_mib=buffering_size_mib
        )
        self.delivery_stream = firehose.DeliveryStream(
            self,
            "Stream",
            delivery_stream_name=stream_name,
            destination=destination,
            role=self.role,
            encryption=(
                firehose.StreamEncryption.customer_managed_key(encryption_key)
                if encryption_key
                else firehose.StreamEncryption.aws_owned_key()
            ),
        )
        self._convert_to_parquet()
        acknowledge_grant_wildcards(self.role, buckets=[bucket])

    def _build_destination(self, *, buffering_interval_s: int, buffering_size_mib: int) -> firehose.S3Bucket:
        """The capture bucket as a dynamically partitioned destination of Parquet objects."""
        return firehose.S3Bucket(
            self.bucket,
            role=self.role,
            data_output_prefix=DATA_PREFIX,
            error_output_prefix=ERROR_PREFIX,
            dynamic_partitioning=firehose.DynamicPartitioningProps(enabled=True),
            processors=[firehose.MetadataExtractionProcessor.jq16(PARTITION_QUERIES)],
            # Parquet compresses its own pages (Snappy); the object itself stays uncompressed.
            compression=firehose.Compression.UNCOMPRESSED,
            file_extension=".parquet",
            buffering_interval=cdk.Duration.seconds(buffering_interval_s),
            buffering_size=cdk.Size.mebibytes(buffering_size_mib),
            encryption_key=self.encryption_key,
            logging_config=firehose.EnableLogging(self.log_group),
        )

    def _convert_to_parquet(self) -> None:
        """Record format conversion to the capture table: OpenX JSON in, Parquet (Snappy) out.

        Written on the L1 rather than through ``S3Bucket(data_format_conversion=...)``, whose
        schema binding also grants ``glue:GetSchemaVersion`` on ``*`` (for the Glue Schema
        Registry, unused here): the role reads this one table's schema and nothing else.
        """
        stack = cdk.Stack.of(self)
        grant = self.table.grant_read_schema(self.role)
        stream = cast(firehose.CfnDeliveryStream, self.delivery_stream.node.default_child)
        stream.add_property_override(
            "ExtendedS3DestinationConfiguration.DataFormatConversionConfiguration",
            {
                "Enabled": True,
                # (CaseInsensitive is OpenX's default, spelled out: CDK drops an empty {}.)
                "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {"CaseInsensitive": True}}},
                "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}},
                "SchemaConfiguration": {
                    "CatalogId": stack.account,
                    "Region": stack.region,
                    "DatabaseName": self.table.database_name,
                    "TableName": self.table.table_name,
                    "RoleARN": self.role.role_arn,
                    "VersionId": "LATEST",
                },
            },
        )
        # Firehose checks the schema when the stream is created: table and grant first.
        self.delivery_stream.node.add_dependency(self.table, grant)

    @property
    def environment(self) -> dict[str, str]:
        """Environment for writers: ``SLUICE_CAPTURE_STREAM`` and ``SLUICE_CAPTURE_BUCKET``."""
        return {"SLUICE_CAPTURE_STREAM": self.stream_name, "SLUICE_CAPTURE_BUCKET": self.bucket.bucket_name}

    def grant_put(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to put records (``firehose:PutRecord``/``PutRecordBatch``) on the stream."""
        return self.delivery_stream.grant_put_records(grantee)
