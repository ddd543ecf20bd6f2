"""Threat: a writer of the registry table makes a version servable, or swaps its artifacts.

Several roles can write the registry table, but only the registration path may use the manifest
key and only the approval path the approval key (``kms:Sign``). A version is loaded only if the
manifest signature covers its artifacts' digests, and deployed or served only if the approval
signature covers its model, version, digests and approver, so a raw ``UpdateItem`` (status set
to Approved, a digest changed) is refused before anything is unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os

import boto3
import joblib
import numpy as np
import pytest
from moto import mock_aws

from sluice.errors import Conflict, IntegrityError, SluiceError
from sluice.names import APPROVAL_ATTRIBUTES
from sluice.registry.bundle import MODEL_ARTIFACT, ModelBundle
from sluice.registry.manifest import approval_binding, version_manifest
from sluice.registry.records import artifact_key
from sluice.registry.signing import (
    KEY_SPEC,
    approval_statement,
    digests,
    manifest_statement,
    sign,
    verify_approval,
)
from sluice.registry.store import ModelRegistry
from sluice.serving import scoring
from tests.unit.test_registry import (
    BUCKET,
    REGION,
    TABLE,
    create_registry_resources,
    lineage,
    tiny_bundle,
    train_credit,
)

ALICE = "arn:aws:sts::123456789012:assumed-role/sluice-test-approver/alice"


class _Payload:
    """Unpickling it creates a directory: stands for any code an attacker's pickle would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _pickle(marker) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(_Payload(str(marker)), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained():
    return train_credit()


@pytest.fixture
def registry():
    with mock_aws():
        yield create_registry_resources()


def _ddb():
    return boto3.client("dynamodb", region_name=REGION)


def _version_key(name: str, version: int) -> dict:
    return {"pk": {"S": f"MODEL#{name}"}, "sk": {"S": f"V#{version:010d}"}}


def _raw_approve(name: str, version: int, **extra: str) -> None:
    """What a table writer without kms:Sign can do: set the approval attributes by hand."""
    values = {"status": "Approved", "decided_by": ALICE, "decided_at": "2026-01-01T00:00:00Z", **extra}
    _ddb().update_item(
        TableName=TABLE,
        Key=_version_key(name, version),
        UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
        ExpressionAttributeNames={f"#a{i}": k for i, k in enumerate(values)},
        ExpressionAttributeValues={f":v{i}": {"S": v} for i, v in enumerate(values.values())},
    )


def _swap_artifact(name: str, version: int, artifact: str, body: bytes) -> None:
    """Upload ``body`` content-addressed and point the record's digest at it (a raw body rewrite)."""
    digest = hashlib.sha256(body).hexdigest()
    key = artifact_key(name, digest, artifact)
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=body)
    item = _ddb().get_item(TableName=TABLE, Key=_version_key(name, version))["Item"]
    stored = json.loads(item["body"]["S"])
    stored["artifacts"][artifact].update(sha256=digest, key=key, size=len(body))
    _ddb().update_item(
        TableName=TABLE,
        Key=_version_key(name, version),
        UpdateExpression="SET body = :b",
        ExpressionAttributeValues={":b": {"S": json.dumps(stored, sort_keys=True)}},
    )


def test_registration_signs_the_manifest_and_writes_no_approval_attribute(registry):
    # When a version is registered
    record = registry.register("m", tiny_bundle(), lineage=lineage())
    # Then its item holds no status (nor any approval attribute) and reads as pending
    item = _ddb().get_item(TableName=TABLE, Key=_version_key("m", 1))["Item"]
    assert not set(APPROVAL_ATTRIBUTES) & set(item)
    assert record.status == "PendingManualApproval"
    # And its manifest signature was made by the registry's manifest key
    assert record.manifest_key.startswith("arn:aws:kms:") and record.manifest_signature
    statement = manifest_statement("m", digests(record.artifacts), registered_by=record.created_by)
    assert statement == {
        "kind": "sluice/manifest/v1",
        "model": "m",
        "artifacts": digests(record.artifacts),
        "registered_by": registry.caller(),
    }


def test_a_raw_status_write_does_not_make_a_version_servable(registry, tmp_path):
    # Given a pending version whose model file is a malicious pickle
    marker = tmp_path / "unpickled"
    bundle = tiny_bundle()
    bundle.artifacts[MODEL_ARTIFACT] = _pickle(marker)
    registry.register("m", bundle, lineage=lineage())
    # When a table writer sets status=Approved with a raw UpdateItem
    _raw_approve("m", 1)
    assert registry.get("m", version=1).status == "Approved"
    # Then neither deploy nor load accepts it, and nothing was unpickled
    with pytest.raises(IntegrityError, match=r"model 'm' version 1: approval signature is missing"):
        registry.require_deployable("m", 1)
    with pytest.raises(IntegrityError, match="approval signature is missing"):
        registry.load("m", version=1)
    with pytest.raises(IntegrityError, match="approval signature is missing"):
        registry.set_alias("m", "champion", 1, actor=ALICE)
    assert not marker.exists()


def test_an_approval_signature_copied_from_another_version_is_refused(registry):
    # Given version 1 properly approved, and version 2 pending
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    approved = registry.approve("m", 1, actor=ALICE)
    registry.register("m", tiny_bundle("2"), lineage=lineage())
    # When a table writer copies version 1's approval onto version 2
    _raw_approve("m", 2, approval_signature=approved.approval_signature, approval_key=approved.approval_key)
    # Then version 2 is refused: the signature covers version 1 and its digests only
    with pytest.raises(IntegrityError, match="version 2: approval signature does not verify"):
        registry.require_deployable("m", 2)
    registry.require_deployable("m", 1)


def test_a_changed_digest_is_caught_by_the_manifest_signature(registry, trained, tmp_path):
    from sluice.models.packaging import bundle_from_training

    # Given an approved version and a pending one
    registry.register("credit", bundle_from_training(trained), lineage=lineage())
    registry.approve("credit", 1, actor=ALICE)
    registry.register("credit", bundle_from_training(trained), lineage=lineage())
    # When a table writer uploads a malicious pickle and points each version's digest at it
    marker = tmp_path / "unpickled"
    for version in (1, 2):
        _swap_artifact("credit", version, MODEL_ARTIFACT, _pickle(marker))
    # Then the artifacts' own sha256 check would pass, but the manifest signature does not
    for version in (1, 2):
        with pytest.raises(IntegrityError, match=f"version {version}: manifest signature does not verify"):
            registry.load("credit", version=version)
        # nor are its bytes handed out (`sluice models download`, reports, specs)
        with pytest.raises(IntegrityError, match="manifest signature does not verify"):
            registry.fetch("credit", version, MODEL_ARTIFACT)
    # And approving the tampered version signs nothing
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        registry.approve("credit", 2, actor=ALICE)
    assert registry.get("credit", version=2).status == "PendingManualApproval"
    # And the approved one can no longer be deployed: its approval covers the old digest
    with pytest.raises(IntegrityError, match="approval signature does not verify"):
        registry.require_deployable("credit", 1)
    assert not marker.exists()


def test_an_approved_version_loads_and_serves_from_its_deploy_time_manifest(registry, trained):
    from sluice.models.packaging import bundle_from_training

    # Given a version approved by another principal
    registry.register("credit", bundle_from_training(trained), lineage=lineage())
    record = registry.approve("credit", 1, actor=ALICE)
    holdout = trained.holdout.drop(columns=[trained.spec.target])
    # Then it loads from the table
    loaded = registry.load("credit", version=1)
    np.testing.assert_array_equal(
        loaded.estimator.predict(loaded.preprocessor.transform(holdout)), trained.predict(holdout)
    )
    # And an endpoint serves it from what deploy binds, without the table
    manifest, approval = version_manifest(record), approval_binding(record)
    _ddb().delete_table(TableName=TABLE)
    scoring.clear_cache()
    try:
        scorer = scoring.get_scorer(
            "credit", "1", "sklearn", registry=registry, manifest=manifest, approval=approval
        )
        rows = holdout.head(5).to_dict(orient="records")
        np.testing.assert_array_equal(scorer.predict(rows)[0], trained.predict(holdout.head(5)))
    finally:
        scoring.clear_cache()


def _forgeries(record) -> dict[str, tuple[str, str]]:
    """(manifest, approval) pairs an attacker could bind, each wrong in one way."""
    manifest, approval = version_manifest(record), json.loads(approval_binding(record))
    other = json.loads(manifest)
    other[MODEL_ARTIFACT] = "0" * 64
    return {
        "missing": (manifest, ""),
        "garbage": (manifest, json.dumps({**approval, "signature": base64.b64encode(b"x" * 70).decode()})),
        "not base64": (manifest, json.dumps({**approval, "signature": "%%%"})),
        "other approver": (manifest, json.dumps({**approval, "approved_by": "mallory"})),
        "other digest": (json.dumps(other), json.dumps(approval)),
    }


def test_load_manifest_refuses_a_forged_or_missing_approval(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    record = registry.approve("m", 1, actor=ALICE)
    for manifest, approval in _forgeries(record).values():
        with pytest.raises(IntegrityError, match="model 'm' version 1: approval signature"):
            registry.load_manifest("m", 1, manifest, approval=approval)
    # The same binding for another version number is refused too
    with pytest.raises(IntegrityError, match="version 2: approval signature does not verify"):
        registry.load_manifest("m", 2, version_manifest(record), approval=approval_binding(record))


def test_a_signature_made_with_another_kms_key_is_refused(registry):
    # Given a SIGN_VERIFY key that is not the registry's
    kms = boto3.client("kms", region_name=REGION)
    other = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=KEY_SPEC)["KeyMetadata"]["Arn"]
    record = registry.register("m", tiny_bundle(), lineage=lineage())
    # When a table writer with kms:Sign on that key signs a correct approval statement with it
    statement = approval_statement("m", 1, digests(record.artifacts), approved_by=ALICE)
    forged = sign(statement, key_id=other)
    _raw_approve("m", 1, approval_signature=forged.signature, approval_key=forged.key_arn)
    # Then the registry, which verifies with its own approval key, refuses it
    with pytest.raises(IntegrityError, match="approval signature does not verify"):
        registry.require_deployable("m", 1)
    forged_record = registry.get("m", version=1)
    with pytest.raises(IntegrityError, match="approval signature does not verify"):
        registry.load_manifest(
            "m", 1, version_manifest(forged_record), approval=approval_binding(forged_record)
        )
    # While it verifies with the key named explicitly (what promotion does with a known key ARN)
    verify_approval(forged_record, key_id=other)
    with pytest.raises(IntegrityError):
        verify_approval(forged_record, key_id=registry.approval_key)
    # And a version registered with another manifest key does not load
    rogue = ModelRegistry(table_name=TABLE, bucket_name=BUCKET, manifest_key=other)
    rogue.register("m", tiny_bundle("rogue"), lineage=lineage())
    with pytest.raises(IntegrityError, match="version 2: manifest signature does not verify"):
        registry.load("m", version=2)


def test_an_approval_without_the_registry_keys_is_refused(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    keyless = ModelRegistry(table_name=TABLE, bucket_name=BUCKET, approval_key="alias/no-such-key")
    with pytest.raises(SluiceError, match="KMS key alias/no-such-key not found"):
        keyless.approve("m", 1, actor=ALICE)
    with pytest.raises(Conflict, match="PendingManualApproval"):
        registry.require_deployable("m", 1)


def test_the_deploy_time_binding_fits_lambdas_environment_limit(trained):
    from sluice.models.packaging import bundle_from_training

    # Given the demo's artifacts plus a few more (about 12), approved by a long role session ARN
    with mock_aws():
        registry = create_registry_resources()
        bundle = bundle_from_training(trained)
        extra = {f"reports/evaluation-{i}.json": b"{}" for i in range(12 - len(bundle.artifacts))}
        registry.register(
            "credit-risk", ModelBundle(artifacts={**bundle.artifacts, **extra}), lineage=lineage()
        )
        approver = "arn:aws:sts::123456789012:assumed-role/sluice-prod-approver/" + "a" * 64
        record = registry.approve("credit-risk", 1, actor=approver)
    # And the endpoint's own variables, as the stage sets them
    stage = {
        "SLUICE_REGISTRY_TABLE": "sluice-prod-registry",
        "SLUICE_REGISTRY_BUCKET": "sluice-prod-artifacts-123456789012-eu-west-1",
        "SLUICE_AUDIT_BUCKET": "sluice-prod-audit-123456789012-eu-west-1",
        "SLUICE_APPROVAL_KEY": "arn:aws:kms:eu-west-1:123456789012:key/" + "0" * 36,
        "SLUICE_MANIFEST_KEY": "arn:aws:kms:eu-west-1:123456789012:key/" + "0" * 36,
        "SLUICE_CAPTURE_STREAM": "sluice-prod-credit-risk-capture",
        "SLUICE_MODEL_NAME": "credit-risk",
        "SLUICE_MODEL_VERSION": "1",
        "SLUICE_MODEL_FLAVOUR": "onnx",
        "POWERTOOLS_SERVICE_NAME": "endpoint-credit-risk",
        "POWERTOOLS_METRICS_NAMESPACE": "Sluice",
    }
    bound = {
        "SLUICE_MODEL_ARTIFACTS": version_manifest(record),
        "SLUICE_MODEL_APPROVAL": approval_binding(record),
    }
    # Then the whole environment stays well within Lambda's 4 KB
    size = sum(len(k) + len(v) for k, v in {**stage, **bound}.items())
    assert len(record.artifacts) == 12 and size < 3000, size


def test_the_endpoint_refuses_a_version_bound_with_a_forged_approval(registry, trained, monkeypatch):
    from sluice.handlers import score
    from sluice.models.packaging import bundle_from_training
    from tests.handlers.test_score import Context, event

    # Given an approved version bound to the endpoint as deploy binds it, with the table gone
    registry.register("credit", bundle_from_training(trained), lineage=lineage())
    record = registry.approve("credit", 1, actor=ALICE)
    forged = json.dumps({"approved_by": ALICE, "signature": base64.b64encode(b"x" * 70).decode()})
    environment = {
        "SLUICE_REGISTRY_TABLE": TABLE,
        "SLUICE_REGISTRY_BUCKET": BUCKET,
        "SLUICE_MODEL_NAME": "credit",
        "SLUICE_MODEL_VERSION": "1",
        "SLUICE_MODEL_FLAVOUR": "sklearn",
        "SLUICE_MODEL_ARTIFACTS": version_manifest(record),
    }
    _ddb().delete_table(TableName=TABLE)
    statuses = {}
    for case, approval in {"forged": forged, "signed": approval_binding(record)}.items():
        for key, value in {**environment, "SLUICE_MODEL_APPROVAL": approval}.items():
            monkeypatch.setenv(key, value)
        score._state.clear()
        scoring.clear_cache()
        response = score.lambda_handler(event("single"), Context())
        statuses[case] = (response["statusCode"], json.loads(response["body"]).get("error", ""))
    score._state.clear()
    scoring.clear_cache()
    # Then the forged binding is a 503 naming the approval signature, the signed one scores
    assert statuses["forged"][0] == 503 and "approval signature does not verify" in statuses["forged"][1]
    assert statuses["signed"] == (200, "")
