"""The capture table: a Glue database and table over the capture bucket's Parquet objects.

Firehose reads the table's schema to convert each capture line to Parquet (record format
conversion); Athena queries the same table. Partition projection computes the partitions
from the key layout ``capture/model=<m>/version=<v>/dt=YYYY-MM-DD/hour=HH/``, so no crawler
and no ``MSCK REPAIR`` is ever needed.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

# Kept in step with sluice.serving.capture_parquet.COLUMNS / PARTITION_KEYS (tests/infra checks).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request_id", "string", "the scoring request (a batch run's shard: <run id>/<shard>)"),
    ("row", "int", "the row's position in its request"),
    ("ts", "string", "scoring time, ISO-8601 UTC with milliseconds"),
    ("source", "string", "endpoint or batch"),
    ("features", "string", "the model's input features as a JSON object"),
    ("prediction", "string", "the prediction as text (a label or a number)"),
    ("probability", "double", "probability of the positive class, if any"),
    ("dropped_fields", "int", "fields the caller sent outside the model's schema (not stored)"),
)
PARTITION_KEYS: tuple[tuple[str, str, str], ...] = (
    ("model", "string", "model name"),
    ("version", "int", "model version"),
    ("dt", "string", "arrival day, yyyy-MM-dd (UTC)"),
    ("hour", "int", "arrival hour, 0-23 (UTC)"),
)
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
SCHEMA_READ_ACTIONS = ("glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions")


def projection(location: str, *, max_versions: int, history_days: int) -> dict[str, str]:
    """Partition projection parameters for the capture layout under ``location`` (``s3://.../capture/``).

    ``model`` is injected (a query names its model), ``version`` an integer in
    ``1..max_versions``, ``dt`` a day in the last ``history_days`` (and tomorrow, for arrival
    just after midnight), ``hour`` two digits.
    """
    return {
        "projection.enabled": "true",
        "projection.model.type": "injected",
        "projection.version.type": "integer",
        "projection.version.range": f"1,{max_versions}",
        "projection.dt.type": "date",
        "projection.dt.format": "yyyy-MM-dd",
        "projection.dt.range": f"NOW-{history_days}DAYS,NOW+1DAYS",
        "projection.dt.interval": "1",
        "projection.dt.interval.unit": "DAYS",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "projection.hour.digits": "2",
        "storage.location.template": location + "model=${model}/version=${version}/dt=${dt}/hour=${hour}/",
    }


class CaptureTable(Construct):
    """A Glue database and one table for the captured rows of every model of a stage.

    Parameters
    ----------
    bucket
        The capture bucket.
    database_name
        Glue database name (lowercase, underscores: Athena needs no quoting).
    table_name
        Table name. Default ``"requests"``.
    max_versions
        Highest model version partition projection enumerates when a query does not name a
        version. Default 1000.
    history_days
        Days back from today partition projection enumerates; set it to the capture bucket's
        retention. Default 400.

    Attributes
    ----------
    database, table
        The ``CfnDatabase`` and ``CfnTable``.
    database_name, table_name, location
        Their names and the table's ``s3://<bucket>/capture/`` location.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket: s3.IBucket,
        database_name: str,
        table_name: str = "requests",
        max_versions: int = 1000,
        history_days: int = 400,
    ) -> None:
        super().__init__(scope, id)
        account = cdk.Stack.of(self).account
        self.database_name, self.table_name = database_name, table_name
        self.location = f"s3://{bucket.bucket_name}/capture/"
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=database_name, description="Sluice data capture, queryable with Athena"
            ),
        )
        self.table = glue.CfnTable(
            self,
            "Table",
            catalog_id=account,
            database_name=database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=table_name,
                description="Captured scoring rows of every model of the stage (Parquet)",
                table_type="EXTERNAL_TABLE",
                partition_keys=[_column(*c) for c in PARTITION_KEYS],
                parameters={
                    "classification": "parquet",
                    **projection(self.location, max_versions=max_versions, history_days=history_days),
                },
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[_column(*c) for c in COLUMNS],
                    location=self.location,
                    input_format=PARQUET_INPUT,
                    output_format=PARQUET_OUTPUT,
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=PARQUET_SERDE, parameters={"serialization.format": "1"}
                    ),
                ),
            ),
        )
        self.table.add_resource_dependency(self.database)

    @property
    def arns(self) -> list[str]:
        """The catalog, database and table ARNs (Glue checks all three on ``GetTable``)."""
        stack = cdk.Stack.of(self)
        base = f"arn:{stack.partition}:glue:{stack.region}:{stack.account}"
        return [
            f"{base}:catalog",
            f"{base}:database/{self.database_name}",
            f"{base}:table/{self.database_name}/{self.table_name}",
        ]

    def grant_read_schema(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` ``glue:GetTable*`` on this table only (what Firehose conversion needs)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=list(SCHEMA_READ_ACTIONS), resource_arns=self.arns
        )


def _column(name: str, type_: str, comment: str) -> glue.CfnTable.ColumnProperty:
    return glue.CfnTable.ColumnProperty(name=name, type=type_, comment=comment)
