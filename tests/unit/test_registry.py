"""The model registry under moto: versions, idempotency, integrity, approval, aliases, audit."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.server import ThreadedMotoServer

from localaws import dynamodb as moto_patches
from sluice import aws as sluice_aws
from sluice.errors import Conflict, IntegrityError, NotFound, SluiceError
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.monitoring.profile import DriftProfile
from sluice.registry.approval import TRANSITIONS
from sluice.registry.bundle import (
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    PREPROCESSING_ARTIFACTS,
    PROFILE_ARTIFACT,
    REQUIRED_ARTIFACTS,
    SCHEMA_ARTIFACT,
    ModelBundle,
)
from sluice.registry.lineage import Lineage
from sluice.registry.manifest import approval_binding, serving_manifest, version_manifest
from sluice.registry.store import ModelRegistry, create_storage
from sluice_demo.datasets import credit, credit_spec

TABLE = "sluice-test-registry"
BUCKET = "sluice-test-artifacts"
REGION = "eu-west-1"


# -- helpers shared with the handler and CLI tests -----------------------------------------------


def create_registry_resources(table: str = TABLE, bucket: str = BUCKET) -> ModelRegistry:
    """The registry table and bucket with the key schema of ``infra/constructs/registry.py``."""
    return create_storage(table, bucket, region=REGION)


def tiny_bundle(tag: str = "") -> ModelBundle:
    """A bundle of small placeholder artifacts (registration logic only, no model)."""
    artifacts = {name: f"{name}:{tag}".encode() for name in REQUIRED_ARTIFACTS}
    return ModelBundle(artifacts=artifacts, metrics={"f1": 0.5}, hyperparameters={"C": 1.0})


@contextmanager
def acting_as(role: str, session: str) -> Iterator[str]:
    """Within the block every new boto3 client (the CLI's too) is an assumed role of the moto account.

    Yields the caller ARN STS reports, ``arn:aws:sts::123456789012:assumed-role/<role>/<session>``.
    A registry caches its caller: build the one that acts inside the block.
    """
    role_arn = f"arn:aws:iam::123456789012:role/{role}"
    sts = boto3.client("sts", region_name=REGION)
    credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
    names = {
        "AWS_ACCESS_KEY_ID": "AccessKeyId",
        "AWS_SECRET_ACCESS_KEY": "SecretAccessKey",
        "AWS_SESSION_TOKEN": "SessionToken",
    }
    saved = {var: os.environ.get(var) for var in names}
    os.environ.update({var: credentials[field] for var, field in names.items()})
    boto3.DEFAULT_SESSION = None  # it caches the credentials it first read
    try:
        yield f"arn:aws:sts::123456789012:assumed-role/{role}/{session}"
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        boto3.DEFAULT_SESSION = None


def train_credit(rows: int = 400, seed: int = 0):
    return train(credit(rows, seed=seed), credit_spec(max_iter=200))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def registry():
    with mock_aws():
        yield create_registry_resources()


@pytest.fixture(scope="module")
def trained():
    return train_credit()


@pytest.fixture(scope="module")
def bundle(trained):
    return bundle_from_training(trained)


def lineage(**kw) -> Lineage:
    return Lineage(data_uri="s3://data/credit.csv", data_sha256="0" * 64, data_rows=400, **kw)


# -- bundle --------------------------------------------------------------------------------------


def test_bundle_from_training_holds_every_artifact(trained, bundle):
    # Given a trained model, the bundle has the model, the preprocessing, the schema, the profile, the spec
    for name in (*REQUIRED_ARTIFACTS, PROFILE_ARTIFACT):
        assert name in bundle.artifacts, name
    schema = json.loads(bundle.artifacts[SCHEMA_ARTIFACT])
    assert [f["name"] for f in schema["features"]] == trained.spec.features
    profile = DriftProfile.from_dict(json.loads(bundle.artifacts[PROFILE_ARTIFACT]))
    assert sorted(profile.features_) == sorted(trained.spec.features)
    assert profile.n_rows_ == len(trained.train)
    assert bundle.metrics == trained.metrics
    assert bundle.hyperparameters["max_iter"] == 200
    # The ONNX attempt is recorded whether or not the graph was kept
    assert "exported" in bundle.notes["onnx"]
    assert ("model.onnx" in bundle.artifacts) == bundle.notes["onnx"]["exported"]


def test_bundle_refuses_missing_or_unsafe_artifacts():
    artifacts = tiny_bundle().artifacts
    del artifacts[MODEL_ARTIFACT]
    with pytest.raises(SluiceError, match=r"lacks artifact\(s\): model.joblib"):
        ModelBundle(artifacts=artifacts)
    artifacts = {**tiny_bundle().artifacts, "../escape": b"x"}
    with pytest.raises(SluiceError, match="escape"):
        ModelBundle(artifacts=artifacts)


def test_registry_module_imports_with_numpy_and_boto3_only():
    # The zip endpoint flavour has neither pandas, scikit-learn nor scipy
    code = (
        "import sys\n"
        "for m in ('pandas', 'sklearn', 'scipy', 'joblib'): sys.modules[m] = None\n"
        "import sluice.registry.store, sluice.registry.promotion\n"
        "print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported"


# -- registering ---------------------------------------------------------------------------------


def test_register_stores_content_addressed_artifacts_and_a_pending_record(registry, bundle):
    record = registry.register("credit", bundle, lineage=lineage())
    assert (record.name, record.version, record.status) == ("credit", 1, "PendingManualApproval")
    s3 = boto3.client("s3", region_name=REGION)
    for name, body in bundle.artifacts.items():
        info = record.artifacts[name]
        digest = hashlib.sha256(body).hexdigest()
        assert info == {"sha256": digest, "size": len(body), "key": f"artifacts/credit/{digest}/{name}"}
        assert s3.get_object(Bucket=BUCKET, Key=info["key"])["Body"].read() == body
    assert record.metrics == bundle.metrics
    assert record.hyperparameters == bundle.hyperparameters
    # Lineage: the data, the producing role (from STS) and the hyperparameters
    assert record.lineage["data_uri"] == "s3://data/credit.csv"
    assert record.lineage["role"].startswith("arn:aws:")
    assert record.lineage["hyperparameters"] == bundle.hyperparameters
    assert record.created_by == record.lineage["role"]


def test_create_storage_keeps_what_exists_and_versions_the_bucket(registry):
    # Given a registry holding one version
    registry.register("m", tiny_bundle("a"), lineage=lineage())
    # When its storage is "created" again (the demo re-run against a kept local stage)
    again = create_storage(TABLE, BUCKET, region=REGION)
    # Then nothing stored is lost, and the artifact bucket keeps object versions
    assert [r.version for r in again.list_versions("m")] == [1]
    versioning = boto3.client("s3", region_name=REGION).get_bucket_versioning(Bucket=BUCKET)
    assert versioning["Status"] == "Enabled"


def test_versions_are_consecutive_and_bytes_are_never_overwritten(registry):
    versions = [registry.register("m", tiny_bundle(), lineage=lineage()).version for _ in range(3)]
    assert versions == [1, 2, 3]
    assert [r.version for r in registry.list_versions("m")] == [1, 2, 3]
    # Identical artifacts are stored once: one S3 object version per content address
    s3 = boto3.client("s3", region_name=REGION)
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix="artifacts/m/")["Versions"]
    assert len(listed) == len(REQUIRED_ARTIFACTS)
    assert registry.list_models() == [
        {
            "name": "m",
            "latest_version": 3,
            "aliases": {},
            "created_at": registry.list_models()[0]["created_at"],
            "updated_at": registry.list_models()[0]["updated_at"],
        }
    ]


def test_idempotency_key_returns_the_first_version(registry):
    first = registry.register("m", tiny_bundle("a"), lineage=lineage(), idempotency_key="job-1")
    again = registry.register("m", tiny_bundle("b"), lineage=lineage(), idempotency_key="job-1")
    other = registry.register("m", tiny_bundle("c"), lineage=lineage(), idempotency_key="job-2")
    assert (first.version, again.version, other.version) == (1, 1, 2)
    assert again.artifacts == first.artifacts
    assert [r.version for r in registry.list_versions("m")] == [1, 2]
    events = registry.history("m")
    assert [e["kind"] for e in events] == ["registered", "registered"]
    assert [e["detail"]["idempotency_key"] for e in events] == ["job-1", "job-2"]


def test_parent_version_must_exist(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    child = registry.register("m", tiny_bundle("2"), lineage=lineage(parent_version=1))
    assert child.parent_version == 1
    with pytest.raises(NotFound, match="model 'm' has no version 7"):
        registry.register("m", tiny_bundle(), lineage=lineage(parent_version=7))


@pytest.mark.parametrize("bad", ["", "has space", "-leading", "x" * 64, "a/b"])
def test_model_names_are_validated(registry, bad):
    with pytest.raises(SluiceError, match="model name"):
        registry.register(bad, tiny_bundle(), lineage=lineage())


@pytest.fixture
def moto_server(monkeypatch):
    """moto's threaded server on an ephemeral port, serialised like real DynamoDB."""
    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto's backends are process-global: start from an empty account
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    sluice_aws.reset_clients()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        sluice_aws.reset_clients()


def test_concurrent_registrations_give_exactly_versions_1_to_200(moto_server):
    # Given the registry on moto's threaded server (requests really interleave)
    registry = _create_on_server(moto_server)
    registered: list[int] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        for i in range(25):
            version = registry.register("race", tiny_bundle(f"{thread}-{i}"), lineage=lineage()).version
            with lock:
                registered.append(version)

    # When 8 threads register 25 versions each
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(worker, range(8)))

    # Then versions 1..200 exist exactly once each, with no gaps
    assert sorted(registered) == list(range(1, 201))
    assert [r.version for r in registry.list_versions("race")] == list(range(1, 201))
    assert registry.list_models()[0]["latest_version"] == 200
    assert sorted(e["version"] for e in registry.history("race")) == list(range(1, 201))


def test_concurrent_retries_with_one_idempotency_key_create_one_version(moto_server):
    registry = _create_on_server(moto_server)
    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = list(
            pool.map(
                lambda i: (
                    registry.register(
                        "m", tiny_bundle(str(i)), lineage=lineage(), idempotency_key="k"
                    ).version
                ),
                range(12),
            )
        )
    assert set(versions) == {1}
    assert [r.version for r in registry.list_versions("m")] == [1]


def _create_on_server(endpoint: str) -> ModelRegistry:
    for client in ("dynamodb", "s3"):
        assert sluice_aws.client(client).meta.endpoint_url == endpoint
    return create_storage(TABLE, BUCKET)


# -- integrity and loading -----------------------------------------------------------------------


def test_load_by_version_and_alias_rebuilds_the_model(registry, trained, bundle):
    record = registry.register("credit", bundle, lineage=lineage())
    registry.approve("credit", 1, actor="alice")
    registry.set_alias("credit", "champion", 1, actor="alice")
    by_alias = registry.load("credit", alias="champion")
    by_version = registry.load("credit", version=1)
    assert by_alias.record.version == by_version.record.version == record.version
    holdout = trained.holdout
    np.testing.assert_allclose(
        by_alias.preprocessor.transform(holdout), trained.preprocessor.transform(holdout)
    )
    np.testing.assert_array_equal(
        by_alias.estimator.predict(by_alias.preprocessor.transform(holdout)), trained.predict(holdout)
    )
    assert by_alias.schema.names == tuple(trained.spec.features)
    assert by_alias.profile is not None and by_alias.spec["target"] == trained.spec.target
    # Default is the latest version
    assert registry.get("credit").version == 1


def test_tampered_artifact_refuses_to_load_naming_model_version_and_artifact(registry, bundle):
    record = registry.register("credit", bundle, lineage=lineage())
    # Given someone overwrites the model file in S3
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=record.artifacts[MODEL_ARTIFACT]["key"], Body=b"not the model"
    )
    # Then loading refuses, naming the model, the version and the artifact
    with pytest.raises(IntegrityError) as caught:
        registry.load("credit", version=1)
    message = str(caught.value)
    assert "'credit'" in message and "version 1" in message and "'model.joblib'" in message
    assert caught.value.status == 409
    with pytest.raises(IntegrityError, match=r"model\.joblib"):
        registry.fetch("credit", 1, MODEL_ARTIFACT)
    # Untouched artifacts still verify
    assert registry.fetch("credit", 1, SCHEMA_ARTIFACT) == bundle.artifacts[SCHEMA_ARTIFACT]


def test_deleted_artifact_is_an_integrity_error(registry):
    record = registry.register("m", tiny_bundle(), lineage=lineage())
    boto3.client("s3", region_name=REGION).delete_object(
        Bucket=BUCKET, Key=record.artifacts[SCHEMA_ARTIFACT]["key"]
    )
    with pytest.raises(IntegrityError, match=r"'schema.json' of model 'm' version 1 is missing"):
        registry.fetch("m", 1, SCHEMA_ARTIFACT)


def test_unknown_artifact_and_flavour(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    with pytest.raises(NotFound, match=r"has no artifact 'weights\.bin'"):
        registry.fetch("m", 1, "weights.bin")
    with pytest.raises(Conflict, match="no onnx flavour"):
        registry.load("m", version=1, flavour="onnx")
    with pytest.raises(SluiceError, match="flavour must be one of"):
        registry.load("m", version=1, flavour="pytorch")


def test_not_found_messages_name_the_resource(registry):
    with pytest.raises(NotFound, match="model 'nope' not found"):
        registry.get("nope")
    with pytest.raises(NotFound, match="model 'nope' not found"):
        registry.history("nope")
    registry.register("m", tiny_bundle(), lineage=lineage())
    with pytest.raises(NotFound, match="model 'm' has no version 9"):
        registry.get("m", version=9)
    with pytest.raises(NotFound, match="model 'm' has no alias 'champion'"):
        registry.get("m", alias="champion")
    with pytest.raises(SluiceError, match="version must be a positive integer"):
        registry.get("m", version=0)


# -- approval, aliases and the audit trail -------------------------------------------------------


def test_transitions_rejected_is_final_and_pending_is_not_deployable(registry):
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    registry.register("m", tiny_bundle("2"), lineage=lineage())
    # A Pending version cannot be deployed
    with pytest.raises(Conflict, match="version 1 is PendingManualApproval; only Approved"):
        registry.require_deployable("m", 1)
    # A Rejected version cannot be approved
    rejected = registry.reject("m", 1, actor="bob", reason="bad f1")
    assert (rejected.status, rejected.decided_by, rejected.decision_reason) == ("Rejected", "bob", "bad f1")
    with pytest.raises(Conflict, match="version 1 is Rejected; it cannot become Approved"):
        registry.approve("m", 1, actor="alice")
    with pytest.raises(Conflict, match="only Approved"):
        registry.require_deployable("m", 1)
    # Approved is deployable, and an approval can be revoked
    assert registry.approve("m", 2, actor="alice").status == "Approved"
    assert registry.require_deployable("m", 2).version == 2
    with pytest.raises(Conflict, match="is Approved; it cannot become Approved"):
        registry.approve("m", 2, actor="alice")
    registry.set_alias("m", "champion", 2, actor="alice")
    assert registry.reject("m", 2, actor="carol", reason="leak found").status == "Rejected"
    with pytest.raises(Conflict):
        registry.require_deployable("m", 2)
    # Revoking an aliased version names the alias it leaves behind
    revoked = registry.history("m")[-1]
    assert revoked["kind"] == "rejected"
    assert revoked["detail"] == {
        "from": "Approved",
        "to": "Rejected",
        "reason": "leak found",
        "aliases": ["champion"],
    }


def test_aliases_point_only_at_allowed_versions(registry):
    for tag in "123":
        registry.register("m", tiny_bundle(tag), lineage=lineage())
    with pytest.raises(Conflict, match="only an Approved version can be 'champion'"):
        registry.set_alias("m", "champion", 1, actor="alice")
    registry.set_alias("m", "challenger", 1, actor="alice")  # Pending is fine for a challenger
    registry.set_alias("m", "challenger", 1, actor="alice")  # unchanged: no second event
    assert [e["kind"] for e in registry.history("m")].count("alias_moved") == 1
    registry.approve("m", 2, actor="alice")
    registry.set_alias("m", "champion", 2, actor="alice")
    registry.reject("m", 3, actor="alice")
    with pytest.raises(Conflict, match="Rejected"):
        registry.set_alias("m", "challenger", 3, actor="alice")
    with pytest.raises(SluiceError, match="alias 'Champion!' is invalid"):
        registry.set_alias("m", "Champion!", 2, actor="alice")
    assert registry.aliases("m") == {"challenger": 1, "champion": 2}
    assert registry.list_models()[0]["aliases"] == {"challenger": 1, "champion": 2}
    # Moving an alias records where it came from
    registry.approve("m", 1, actor="alice")
    registry.set_alias("m", "champion", 1, actor="alice")
    assert registry.get("m", alias="champion").version == 1
    moved = [e for e in registry.history("m") if e["kind"] == "alias_moved"][-1]
    assert moved["detail"] == {"alias": "champion", "from": 2, "to": 1}


def test_history_after_register_approve_alias_is_three_events_in_order(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    registry.approve("m", 1, actor="alice", reason="looks good")
    registry.set_alias("m", "champion", 1, actor="alice")
    events = registry.history("m")
    assert [e["kind"] for e in events] == ["registered", "approved", "alias_moved"]
    assert [e["version"] for e in events] == [1, 1, 1]
    assert events[1]["actor"] == "alice" and events[1]["detail"]["reason"] == "looks good"
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_record_event_appends_for_known_models_only(registry):
    registry.register("m", tiny_bundle(), lineage=lineage())
    registry.record_event("m", "deployed", actor="deployer", version=1, detail={"lambda_version": "3"})
    registry.record_event("m", "traffic", actor="deployer", detail={"weights": {"1": 0.9}})
    events = registry.history("m")
    assert [e["kind"] for e in events] == ["registered", "deployed", "traffic"]
    assert events[1]["detail"] == {"lambda_version": "3"} and events[2]["version"] is None
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        registry.record_event("ghost", "deployed", actor="deployer")
    with pytest.raises(SluiceError, match="written by the registry itself"):
        registry.record_event("m", "approved", actor="x")
    with pytest.raises(SluiceError, match="event kind must match"):
        registry.record_event("m", "Bad Kind", actor="x")
    with pytest.raises(NotFound, match="no version 4"):
        registry.record_event("m", "deployed", actor="x", version=4)


# -- lineage -------------------------------------------------------------------------------------


def test_lineage_of_a_local_file_hashes_its_bytes(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SLUICE_CODE_VERSION", "abc123")
    path = tmp_path / "train.csv"
    path.write_bytes(b"a,b\n1,2\n")
    found = Lineage.from_data(path, rows=1, parent_version=3)
    assert found.data_uri == path.resolve().as_uri()
    assert found.data_sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert (found.data_rows, found.parent_version, found.code_version) == (1, 3, "abc123")
    with pytest.raises(NotFound, match="not found"):
        Lineage.from_data(tmp_path / "absent.csv", rows=0)


def test_lineage_of_an_s3_object_records_its_version_id(registry):
    s3 = boto3.client("s3", region_name=REGION)
    put = s3.put_object(Bucket=BUCKET, Key="data/train.csv", Body=b"x,y\n")
    found = Lineage.from_data(f"s3://{BUCKET}/data/train.csv", rows=0)
    assert found.data_version == put["VersionId"]
    assert found.data_sha256 == hashlib.sha256(b"x,y\n").hexdigest()
    with pytest.raises(NotFound):
        Lineage.from_data(f"s3://{BUCKET}/data/absent.csv", rows=0)
    assert Lineage.from_dict(found.to_dict()) == found


def test_from_settings_requires_both_names():
    from sluice.settings import Settings

    with pytest.raises(SluiceError, match="SLUICE_REGISTRY_BUCKET"):
        ModelRegistry.from_settings(Settings(registry_table="t"))
    assert ModelRegistry.from_settings(Settings(registry_table="t", registry_bucket="b")).table_name == "t"
    assert os.environ.get("AWS_ENDPOINT_URL") is None


def test_onnx_flavour_loads_without_pandas_sklearn_scipy_or_joblib(moto_server, bundle, trained):
    # Given a version with an ONNX graph, registered on moto's server
    # (skl2onnx is pinned: an export that stops working must fail here, not skip)
    assert "model.onnx" in bundle.artifacts, bundle.notes.get("onnx")
    registry = _create_on_server(moto_server)
    registry.register("credit", bundle, lineage=lineage())
    # When the zip flavour's process (numpy + boto3 + onnxruntime only) loads it
    code = (
        "import sys, hashlib, json\n"
        "for m in ('pandas', 'sklearn', 'scipy', 'joblib'): sys.modules[m] = None\n"
        "from sluice.registry.store import ModelRegistry\n"
        f"loaded = ModelRegistry(table_name={TABLE!r}, bucket_name={BUCKET!r}).load('credit', version=1, flavour='onnx')\n"
        "matrix = loaded.preprocessor.transform_records([{n: None for n in loaded.schema.names}])\n"
        "print(json.dumps({'sha': hashlib.sha256(loaded.onnx_bytes).hexdigest(), 'width': matrix.shape[1],\n"
        "                  'estimator': loaded.estimator, 'features': list(loaded.schema.names)}))\n"
    )
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    # Then it gets the verified graph and a numpy-only preprocessor
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["sha"] == hashlib.sha256(bundle.artifacts["model.onnx"]).hexdigest()
    assert got["width"] == trained.preprocessor.n_features_out_
    assert got["estimator"] is None
    assert got["features"] == trained.spec.features


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(decisions=st.lists(st.sampled_from(["approve", "reject"]), min_size=1, max_size=5))
def test_status_follows_the_transition_table_for_any_decision_sequence(registry, decisions):
    # Given a fresh version (one model name per example, in the same table)
    name = f"p{uuid.uuid4().hex[:12]}"
    registry.register(name, tiny_bundle(), lineage=lineage())
    expected, recorded = "PendingManualApproval", []
    for decision in decisions:
        target = "Approved" if decision == "approve" else "Rejected"
        allowed = target in TRANSITIONS[expected]
        # When a decision is made, it succeeds exactly when the table allows it
        try:
            getattr(registry, decision)(name, 1, actor="prop")
        except Conflict:
            assert not allowed
        else:
            assert allowed
            expected = target
            recorded.append("approved" if decision == "approve" else "rejected")
    # Then the stored status and the audit trail agree with the table
    assert registry.get(name, version=1).status == expected
    assert [e["kind"] for e in registry.history(name)] == ["registered", *recorded]


# -- serving manifest ----------------------------------------------------------------------------


def test_a_serving_manifest_loads_without_the_table_and_still_verifies(registry, bundle, trained):
    registry.register("credit", bundle, lineage=lineage())
    record = registry.approve("credit", 1, actor="alice")
    # Given the serving subset names the serving artifacts by sha256 (no drift profile, no ONNX)
    assert set(json.loads(serving_manifest(record, "sklearn"))) == {
        MODEL_ARTIFACT, SCHEMA_ARTIFACT, "spec.json", *PREPROCESSING_ARTIFACTS.values()
    }  # fmt: skip
    # And the deploy-time manifest names every artifact, with the approval over them
    manifest, approval = version_manifest(record), approval_binding(record)
    assert set(json.loads(manifest)) == set(record.artifacts)
    # When the registry table is gone, the manifest still loads the version and it predicts
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)
    loaded = registry.load_manifest("credit", 1, manifest, approval=approval)
    holdout = trained.holdout.drop(columns=[trained.spec.target])
    np.testing.assert_array_equal(
        loaded.estimator.predict(loaded.preprocessor.transform(holdout)), trained.predict(holdout)
    )
    assert (loaded.record.name, loaded.record.version) == ("credit", 1)
    # And a tampered object is still refused
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=record.artifacts[SCHEMA_ARTIFACT]["key"], Body=b"{}"
    )
    with pytest.raises(IntegrityError, match=r"'schema.json' of model 'credit' version 1"):
        registry.load_manifest("credit", 1, manifest, approval=approval)


@pytest.mark.parametrize("manifest", ["not json", "[]", '{"model.joblib": "abc"}', '{"model.joblib": 1}'])
def test_a_malformed_manifest_is_refused_by_name(registry, manifest):
    with pytest.raises(SluiceError, match="SLUICE_MODEL_ARTIFACTS must be a JSON object"):
        registry.load_manifest("m", 1, manifest, approval="")


def test_a_manifest_without_the_flavour_is_a_conflict(registry):
    record = registry.register("m", tiny_bundle(), lineage=lineage())
    assert ONNX_ARTIFACT not in json.loads(serving_manifest(record, "sklearn"))
    with pytest.raises(Conflict, match="no onnx flavour"):
        serving_manifest(record, "onnx")
    with pytest.raises(SluiceError, match="flavour must be one of"):
        registry.load_manifest("m", 1, version_manifest(record), approval="", flavour="pytorch")
