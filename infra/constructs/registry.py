"""The artifact registry's storage: an S3 bucket for artifacts and a DynamoDB table for records."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.storage import bucket_in, secure_bucket


class Registry(Construct):
    """Model registry storage.

    Artifacts are stored content-addressed (``artifacts/<model>/<sha256>/<name>``) in a
    KMS-encrypted, versioned bucket; versions, aliases, idempotency keys and the audit
    trail are items of one DynamoDB table keyed by ``pk`` (model) and ``sk`` (record).

    Parameters
    ----------
    retain
        Keep bucket, key and table on stack deletion and turn on deletion protection (prod).
    bucket_name
        Physical name of the artifact bucket.
    access_logs
        Bucket receiving the artifact bucket's server access logs.
    """

    def __init__(
        self, scope: Construct, id: str, *, bucket_name: str, retain: bool, access_logs: s3.IBucket
    ) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description="Sluice model registry artifacts",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self.bucket = secure_bucket(
            self,
            "Artifacts",
            bucket_name=bucket_name,
            retain=retain,
            access_logs=access_logs,
            encryption_key=self.key,
        )
        # A plain single-region table (AWS::DynamoDB::Table): each account has its own registry,
        # and promotion copies records between accounts instead of replicating tables.
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=retain,
            removal_policy=removal,
        )

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Read artifacts and records (serving, monitoring, batch scoring)."""
        bucket_in(grantee, self.bucket).grant_read(grantee)
        self.table.grant_read_data(grantee)

    def grant_write(self, grantee: iam.IGrantable) -> None:
        """Register versions: write artifacts and records (training, pipelines, promotion)."""
        self.grant_read(grantee)
        bucket_in(grantee, self.bucket).grant_put(grantee, "artifacts/*")
        self.table.grant_read_write_data(grantee)

    def grant_record_events(self, grantee: iam.IGrantable) -> None:
        """Change records and append audit events without touching artifacts (approval, traffic)."""
        self.grant_read(grantee)
        self.table.grant_read_write_data(grantee)
