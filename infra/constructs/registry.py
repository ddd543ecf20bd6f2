"""The artifact registry's storage: artifacts, records, the audit store and the signing keys.

Trust in a version does not rest on the table, which several roles write: its manifest
(artifact names and sha256 digests) is signed at registration with the ``manifest`` key, and
its approval with the ``approval`` key, which only the approval path may use. Audit events go
to an S3 bucket with Object Lock in compliance mode, which no role (nor the account root) can
rewrite or delete before the retention ends.
"""

from __future__ import annotations

from typing import cast

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.nag import acknowledge_grant_wildcards
from infra.constructs.storage import bucket_in, secure_bucket
from sluice.names import (
    APPROVAL_ATTRIBUTES,
    REGISTRY_INDEX_PARTITION,
    approval_key_alias,
    audit_bucket_name,
    audit_event_prefix,
    manifest_key_alias,
    registry_artifact_prefix,
    registry_partition_key,
)

#: DynamoDB actions a registry writer needs (``sluice.registry`` uses TransactWriteItems, which
#: IAM authorises per item action).
RECORD_WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem")
#: Reads of one model's partition of the registry table: every one names its leading key.
MODEL_READ_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
)


class Registry(Construct):
    """Model registry storage.

    Artifacts are stored content-addressed (``artifacts/<model>/<sha256>/<name>``) in a
    KMS-encrypted, versioned bucket; versions, aliases, idempotency keys, the audit index and
    the model index are items of one DynamoDB table keyed by ``pk`` (model) and ``sk``
    (record); the layout is documented in :mod:`sluice.registry`.

    Parameters
    ----------
    retain
        Keep bucket, keys and table on stack deletion and turn on deletion protection (prod).
    bucket_name
        Physical name of the artifact bucket; the audit bucket's name derives from it
        (:func:`sluice.names.audit_bucket_name`).
    table_name
        Physical name of the table, fixed per stage (``sluice.names.registry_table_name``); the
        signing keys' aliases derive from it.
    access_logs
        Bucket receiving the artifact and audit buckets' server access logs.
    audit_retention_days
        Object Lock retention (compliance mode) of every audit event; default 3650 days.
    readers
        Role ARNs in other accounts that may read approved versions: the prod stage's promotion
        role reads the dev registry. Each gets object reads, item reads, decryption through S3
        and approval verification, by resource policy.
    approval_signers
        ARNs of the only roles the approval key lets sign (its key policy denies everyone else,
        account administrators included): the registry API function's role. Empty: no deny.

    The ``grant_*`` methods take a role: the stack it lives in decides whether the bucket is
    granted directly or through an import by name (:func:`~infra.constructs.storage.bucket_in`).

    Attributes
    ----------
    key, bucket, table, audit_bucket, manifest_key, approval_key
        The artifacts' KMS key, the artifact bucket, the records table, the audit store and the
        two SIGN_VERIFY keys.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket_name: str,
        table_name: str,
        retain: bool,
        access_logs: s3.IBucket,
        audit_retention_days: int = 3650,
        readers: tuple[str, ...] = (),
        approval_signers: tuple[str, ...] = (),
        artifact_lock_days: int | None = None,
        artifact_noncurrent_days: int = 90,
    ) -> None:
        super().__init__(scope, id)
        self._removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description="Sluice model registry artifacts",
            enable_key_rotation=True,
            removal_policy=self._removal,
        )
        self.bucket = secure_bucket(
            self,
            "Artifacts",
            bucket_name=bucket_name,
            retain=retain,
            access_logs=access_logs,
            encryption_key=self.key,
            object_lock_days=artifact_lock_days,
            noncurrent_days=artifact_noncurrent_days,
        )
        self.manifest_key = self._signing_key("ManifestKey", manifest_key_alias(table_name), "manifests")
        self.approval_key = self._signing_key("ApprovalKey", approval_key_alias(table_name), "approvals")
        self.audit_bucket = self._build_audit_bucket(
            audit_bucket_name(bucket_name), retain=retain, access_logs=access_logs, days=audit_retention_days
        )
        self.table = self._build_table(table_name, retain=retain, readers=readers)
        for reader in readers:
            self._let_read_across_accounts(reader)
        if approval_signers:
            self._only_these_sign_approvals(approval_signers)

    def _build_table(self, name: str, *, retain: bool, readers: tuple[str, ...]) -> dynamodb.Table:
        # A plain single-region table (AWS::DynamoDB::Table): each account has its own registry,
        # and promotion copies records between accounts instead of replicating tables.
        return dynamodb.Table(
            self,
            "Table",
            table_name=name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=retain,
            removal_policy=self._removal,
            resource_policy=self._table_reader_policy(readers) if readers else None,
        )

    def _only_these_sign_approvals(self, signers: tuple[str, ...]) -> None:
        """The approval key's policy denies ``kms:Sign`` to all but ``signers`` (admins included)."""
        self.approval_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyTheApprovalPathSigns",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["kms:Sign"],
                resources=["*"],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": list(signers)}},
            )
        )

    def _signing_key(self, id: str, alias: str, what: str) -> kms.Key:
        return kms.Key(
            self,
            id,
            description=f"Sluice model registry: signs {what}",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            alias=alias,
            removal_policy=self._removal,
        )

    def _build_audit_bucket(
        self, name: str, *, retain: bool, access_logs: s3.IBucket, days: int
    ) -> s3.Bucket:
        """Append-only audit events: Object Lock in compliance mode, nobody may shorten or delete."""
        bucket = secure_bucket(self, "Audit", bucket_name=name, retain=retain, access_logs=access_logs)
        cfn = cast(s3.CfnBucket, bucket.node.default_child)
        cfn.object_lock_enabled = True
        cfn.object_lock_configuration = s3.CfnBucket.ObjectLockConfigurationProperty(
            object_lock_enabled="Enabled",
            rule=s3.CfnBucket.ObjectLockRuleProperty(
                default_retention=s3.CfnBucket.DefaultRetentionProperty(mode="COMPLIANCE", days=days)
            ),
        )
        return bucket

    @staticmethod
    def _table_reader_policy(readers: tuple[str, ...]) -> iam.PolicyDocument:
        return iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="PromotionReadsVersions",
                    principals=[_role_principal(arn) for arn in readers],
                    actions=["dynamodb:GetItem", "dynamodb:Query"],
                    resources=["*"],  # in a table's resource policy, "*" is this table
                )
            ]
        )

    def _let_read_across_accounts(self, reader: str) -> None:
        """Resource-policy side of a cross-account read (the reader's own policy is the other side)."""
        principal = _role_principal(reader)
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                principals=[principal],
                resources=[self.bucket.arn_for_objects("artifacts/*")],
            )
        )
        via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{cdk.Stack.of(self).region}.amazonaws.com"}}
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"], principals=[principal], resources=["*"], conditions=via_s3
            )
        )
        self.approval_key.add_to_resource_policy(
            iam.PolicyStatement(actions=["kms:Verify"], principals=[principal], resources=["*"])
        )

    @property
    def environment(self) -> dict[str, str]:
        """The variables a function needs to open the registry (``sluice.settings.Settings``)."""
        return {
            "SLUICE_REGISTRY_TABLE": self.table.table_name,
            "SLUICE_REGISTRY_BUCKET": self.bucket.bucket_name,
            "SLUICE_AUDIT_BUCKET": self.audit_bucket.bucket_name,
            "SLUICE_MANIFEST_KEY": self.manifest_key.key_arn,
            "SLUICE_APPROVAL_KEY": self.approval_key.key_arn,
        }

    def grant_read(self, grantee: iam.IRole, *, model: str | None = None) -> None:
        """Read artifacts, records and the audit store; verify signatures (serving, monitoring, batch).

        With ``model``, only that model's: its partition of the table (``dynamodb:LeadingKeys``;
        no ``Scan``, which has no leading key), its artifacts and its audit events. A model's
        endpoint and batch steps get this, so a compromised one reads no other model.
        """
        audit = bucket_in(grantee, self.audit_bucket)
        if model is None:
            artifacts, events = "artifacts/", "events/"
            bucket_in(grantee, self.bucket).grant_read(grantee)
            self.table.grant_read_data(grantee)
            listing: dict[str, dict[str, list[str]]] | None = None
        else:
            artifacts, events = registry_artifact_prefix(model), audit_event_prefix(model)
            bucket_in(grantee, self.bucket).grant_read(grantee, f"{artifacts}*")
            grantee.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=list(MODEL_READ_ACTIONS),
                    resources=[self.table.table_arn],
                    conditions={
                        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [registry_partition_key(model)]}
                    },
                )
            )
            listing = {"StringLike": {"s3:prefix": [f"{events}*"]}}
        grantee.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
                resources=[audit.bucket_arn],
                conditions=listing,
            )
        )
        grantee.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[audit.arn_for_objects(f"{events}*")],
            )
        )
        for key in (self.manifest_key, self.approval_key):
            key.grant(grantee, "kms:Verify")
        acknowledge_grant_wildcards(
            grantee, buckets=[self.bucket, self.audit_bucket], object_prefixes=(artifacts, events)
        )

    def grant_write(self, grantee: iam.IRole, *, model: str | None = None) -> None:
        """Register versions: write and sign artifacts, write records except approvals (training, promotion).

        With ``model``, only that model's records (its partition and its entry in the models
        index), artifacts and audit events (a model's retraining).
        """
        self.grant_record_events(grantee, model=model)
        artifacts = "artifacts/" if model is None else registry_artifact_prefix(model)
        bucket_in(grantee, self.bucket).grant_put(grantee, f"{artifacts}*")
        self.manifest_key.grant(grantee, "kms:Sign")

    def grant_record_events(self, grantee: iam.IRole, *, model: str | None = None) -> None:
        """Move aliases and append audit events; never approve (deployments, traffic)."""
        self._grant_record_writes(grantee, model=model)
        # Only the approval path writes a version's status and approval: every other writer is
        # denied a PutItem or UpdateItem naming one of those attributes.
        grantee.add_to_principal_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[self.table.table_arn],
                conditions={"ForAnyValue:StringEquals": {"dynamodb:Attributes": list(APPROVAL_ATTRIBUTES)}},
            )
        )

    def grant_approve(self, grantee: iam.IRole) -> None:
        """Approve and reject: sign approvals with the approval key (the registry API only)."""
        self._grant_record_writes(grantee)
        self.approval_key.grant(grantee, "kms:Sign")

    def _grant_record_writes(self, grantee: iam.IRole, *, model: str | None = None) -> None:
        # The runtime only puts, updates and condition-checks items (in transactions). No role
        # gets DeleteItem or BatchWriteItem, so nobody can erase versions or audit index items.
        # Audit events are put once each (If-None-Match); the bucket's compliance-mode lock
        # keeps every version, and no role gets a delete, retention or bypass action on it.
        self.grant_read(grantee, model=model)
        audit = bucket_in(grantee, self.audit_bucket)
        if model is None:
            self.table.grant(grantee, *RECORD_WRITE_ACTIONS)
            events = "events/"
        else:  # its partition, and the models index (a first registration adds the model there)
            partitions = [registry_partition_key(model), REGISTRY_INDEX_PARTITION]
            grantee.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=list(RECORD_WRITE_ACTIONS),
                    resources=[self.table.table_arn],
                    conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": partitions}},
                )
            )
            events = audit_event_prefix(model)
        grantee.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[audit.arn_for_objects(f"{events}*")])
        )


def _role_principal(role_arn: str) -> iam.IPrincipal:
    """``role_arn``'s account, narrowed to that role: the policy stays valid before the role exists."""
    account = role_arn.split(":")[4]
    return iam.AccountPrincipal(account).with_conditions({"ArnEquals": {"aws:PrincipalArn": role_arn}})
