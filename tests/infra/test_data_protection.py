"""Issue 16 data hygiene at construct level: the data key, capture and log encryption, bucket
retention, and hashed, wheel-only container installs."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.constructs.capture import CaptureStream
from infra.constructs.data_key import DataKey, EncryptLogGroups
from infra.constructs.runtime import SluiceFunction
from infra.constructs.storage import secure_bucket
from tests.infra.conftest import resources_of

ROOT = Path(__file__).resolve().parents[2]
ENV = cdk.Environment(account="111111111111", region="eu-west-1")
CONTAINERS = ("scoring", "training")
# The app's feature flags (cdk.json), so the probe builds what the app would.
FLAGS = {
    k: v
    for k, v in json.loads((ROOT / "cdk.json").read_text())["context"].items()
    if k.startswith("@aws-cdk")
}


def _build(app: cdk.App) -> tuple[cdk.Stack, cdk.Stack]:
    """A data stack (key, buckets) and a service stack (Firehose, a function, a bare log group)."""
    data = cdk.Stack(app, "Data", env=ENV)
    service = cdk.Stack(app, "Service", env=ENV)
    key = DataKey(data, "DataKey", retain=False).key
    access_logs = secure_bucket(data, "AccessLogs", bucket_name="probe-logs", retain=False, access_logs=None)
    secure_bucket(
        data,
        "Artifacts",
        bucket_name="probe-artifacts",
        retain=False,
        access_logs=access_logs,
        object_lock_days=30,
        noncurrent_days=365,
    )
    capture_bucket = secure_bucket(
        data,
        "Capture",
        bucket_name="probe-capture",
        retain=False,
        access_logs=access_logs,
        encryption_key=key,
        expiration_days=180,
        noncurrent_days=1,
    )
    CaptureStream(service, "Capture", bucket=capture_bucket, stream_name="probe-capture", encryption_key=key)
    role = iam.Role(service, "FunctionRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    SluiceFunction(service, "Function", handler="score", role=role, service="probe", log_key=key)
    logs.LogGroup(service, "Bare", retention=logs.RetentionDays.ONE_WEEK)
    cdk.Aspects.of(service).add(EncryptLogGroups(key))
    return data, service


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Template]:
    app = cdk.App(context=FLAGS, outdir=str(tmp_path_factory.mktemp("data-protection")))
    data, service = _build(app)
    return {"data": Template.from_stack(data), "service": Template.from_stack(service)}


def test_data_key_rotates_and_lets_cloudwatch_logs_use_it_for_this_account_only(built):
    built["data"].has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "logs.eu-west-1.amazonaws.com"},
                                "Action": Match.array_with(["kms:Encrypt*", "kms:GenerateDataKey*"]),
                                "Condition": {
                                    "ArnLike": {
                                        "kms:EncryptionContext:aws:logs:arn": Match.string_like_regexp(
                                            "arn:.*:logs:eu-west-1:111111111111:log-group:\\*"
                                        )
                                    }
                                },
                            }
                        )
                    ]
                )
            },
        },
    )


def test_firehose_and_its_s3_destination_use_the_customer_managed_key(built):
    service = built["service"]
    service.has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamEncryptionConfigurationInput": {
                "KeyType": "CUSTOMER_MANAGED_CMK",
                "KeyARN": Match.any_value(),
            },
            "ExtendedS3DestinationConfiguration": Match.object_like(
                {
                    "EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": Match.any_value()}},
                    "CloudWatchLoggingOptions": Match.object_like({"Enabled": True}),
                }
            ),
        },
    )
    # And the delivery role may use the key (granted, not written by hand)
    statements = [
        s
        for policy in resources_of(service.to_json(), "AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    kms_actions = {a for s in statements for a in _list(s["Action"]) if a.startswith("kms:")}
    assert {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*"} <= kms_actions


def test_every_log_group_is_encrypted_with_the_key(built):
    # Given the function's, Firehose's and a bare log group (the latter reached by the aspect)
    groups = resources_of(built["service"].to_json(), "AWS::Logs::LogGroup")
    assert len(groups) == 3
    # Then each names the data key
    assert all("KmsKeyId" in g["Properties"] for g in groups.values()), groups


def test_artifact_bucket_has_governance_object_lock_and_long_noncurrent_retention(built):
    built["data"].has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "probe-artifacts",
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}},
            },
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 365}})]
            },
        },
    )


def test_captured_data_expires_and_is_encrypted_with_the_key(built):
    data = built["data"]
    data.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "probe-capture",
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {"ServerSideEncryptionByDefault": Match.object_like({"SSEAlgorithm": "aws:kms"})}
                    )
                ]
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 1}}),
                        Match.object_like(
                            {"Id": "expire-data", "ExpirationInDays": 180, "Status": "Enabled"}
                        ),
                    ]
                )
            },
        },
    )
    # And buckets without the options keep the defaults: no lock, 90 days, no expiry
    logs_bucket = next(
        b
        for b in resources_of(data.to_json(), "AWS::S3::Bucket").values()
        if b["Properties"]["BucketName"] == "probe-logs"
    )["Properties"]
    assert "ObjectLockEnabled" not in logs_bucket
    assert [r.get("ExpirationInDays") for r in logs_bucket["LifecycleConfiguration"]["Rules"]] == [None]
    assert logs_bucket["LifecycleConfiguration"]["Rules"][0]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 90
    }


def test_object_lock_needs_versioning():
    stack = cdk.Stack(cdk.App(), "Probe")
    with pytest.raises(ValueError, match="Object Lock needs versioning"):
        secure_bucket(
            stack, "B", bucket_name="b", retain=False, access_logs=None, versioned=False, object_lock_days=1
        )


def test_nag_raises_nothing_on_the_key_the_stream_or_the_buckets(tmp_path):
    # Given the same constructs synthesized with the AwsSolutions pack
    app = cdk.App(context=FLAGS, outdir=str(tmp_path))
    _build(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with contextlib.suppress(RuntimeError):  # findings on the probe's function role are not under test
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    paths = [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report.get("pluginReports", [])
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]
    # Then none concerns the data key, the stream, its role or log group, or the buckets
    mine = ("Data/DataKey", "Service/Capture", "Data/Artifacts", "Data/Capture")
    assert [p for p in paths if p[1].startswith(mine)] == []


# --- containers: hashed, wheel-only installs ---------------------------------------------------


def _requirement_entries(path: Path) -> list[str]:
    """Each requirement of a pip requirements file, its continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("container", CONTAINERS)
def test_dockerfile_installs_hashed_wheels_only(container):
    dockerfile = (ROOT / "containers" / container / "Dockerfile").read_text()
    install = re.search(r"RUN pip install ([^\n]*)", dockerfile)
    assert install is not None
    flags = install.group(1)
    assert "--require-hashes" in flags and "--only-binary=:all:" in flags
    assert f"COPY containers/{container}/requirements-hashed.txt " in dockerfile
    # And the base image is an ARG, so a release build pins it by digest
    assert re.search(r"^ARG BASE_IMAGE=public\.ecr\.aws/lambda/python:3\.14-arm64", dockerfile, re.M)
    assert "FROM ${BASE_IMAGE}" in dockerfile


#: Each lock and the requirements it was compiled from: the images', and the zip scoring layer's.
LOCKS = [(f"{c}/requirements-hashed.txt", f"{c}/requirements.txt") for c in CONTAINERS] + [
    ("scoring/requirements-zip-hashed.txt", "scoring/requirements-zip.txt")
]


@pytest.mark.parametrize(("lock", "source"), LOCKS)
def test_every_locked_requirement_is_pinned_with_hashes(lock, source):
    entries = _requirement_entries(ROOT / "containers" / lock)
    assert entries
    for entry in entries:
        name, _, rest = entry.partition("==")
        assert rest, f"{entry!r} is not pinned with =="
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", rest), f"{name} has no sha256 hash"
    # And the lock holds exactly the versions requirements.txt pins
    locked = {_norm(e.partition("==")[0]): e.partition("==")[2].split()[0] for e in entries}
    pinned = {
        _norm(e.partition("==")[0]): e.partition("==")[2].split()[0]
        for e in _requirement_entries(ROOT / "containers" / source)
    }
    assert {name: locked.get(name) for name in pinned} == pinned


def test_the_zip_scoring_layer_is_installed_from_its_lock_with_hashes_required():
    makefile = re.sub(r"\\\n\s*", " ", (ROOT / "Makefile").read_text())
    (install,) = [line for line in makefile.splitlines() if "$(SCORING_LAYER)/python" in line]
    assert "--require-hashes -r containers/scoring/requirements-zip-hashed.txt" in install
    assert "--only-binary=:all:" in install


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value
