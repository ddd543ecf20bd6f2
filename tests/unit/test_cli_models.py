"""``sluice models`` through ``sluice.cli.main`` under moto: tables, JSON and exit 2 on user errors."""

from __future__ import annotations

import hashlib
import json

import pytest
from moto import mock_aws

from sluice.cli import main
from sluice_demo.datasets import credit
from tests.unit.test_registry import BUCKET, TABLE, acting_as, create_registry_resources, lineage, tiny_bundle


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    monkeypatch.setenv("COLUMNS", "200")  # wide tables, so cells are not wrapped
    with mock_aws():
        yield create_registry_resources()


def run_json(capsys, *argv: str):
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_register_from_a_csv_records_lineage_of_the_file(registry, capsys, tmp_path):
    # Given a CSV of training data
    path = tmp_path / "train.csv"
    credit(300, seed=1).to_csv(path, index=False)
    # When it is registered with a spec from flags
    record = run_json(
        capsys,
        "models",
        "register",
        "credit",
        "--data",
        str(path),
        "--target",
        "default",
        "--numeric",
        "income,debt_ratio,age",
        "--categorical",
        "region",
        "--param",
        "C=0.5",
        "--no-onnx",
    )
    # Then version 1 is pending, with the file's hash and row count as lineage
    assert (record["version"], record["status"]) == (1, "PendingManualApproval")
    assert record["lineage"]["data_uri"] == path.resolve().as_uri()
    assert record["lineage"]["data_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["lineage"]["data_rows"] == 300
    assert record["hyperparameters"]["C"] == 0.5
    assert "model.onnx" not in record["artifacts"]
    assert registry.get("credit").version == 1


def test_register_generated_dataset_with_a_spec_file_and_idempotency(registry, capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "target": "default",
                "numeric": ["income", "utilisation"],
                "estimator": "sklearn.linear_model.LogisticRegression",
            }
        )
    )
    argv = ["models", "register", "credit", "--dataset", "credit", "--rows", "200", "--spec", str(spec)]
    first = run_json(capsys, *argv, "--idempotency-key", "job-7")
    again = run_json(capsys, *argv, "--idempotency-key", "job-7")
    assert first["version"] == again["version"] == 1
    assert first["lineage"]["data_uri"] == "sluice:datasets/credit?rows=200&seed=0"
    assert first["lineage"]["data_rows"] == 200
    assert json.loads(registry.fetch("credit", 1, "spec.json"))["numeric"] == ["income", "utilisation"]


def test_lifecycle_tables_and_json(registry, capsys, tmp_path):
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    registry.register("m", tiny_bundle("2"), lineage=lineage())

    # The CLI acts as the caller STS verifies, which must not be the principal that registered
    with acting_as("sluice-test-approver", "alice") as alice:
        approved = run_json(capsys, "models", "approve", "m", "1", "--reason", "good")
        assert main(["models", "alias", "m", "champion", "1"]) == 0
    assert approved["status"] == "Approved" and approved["decided_by"] == alice
    assert "champion -> v1" in capsys.readouterr().out
    assert main(["models", "reject", "m", "2", "--reason", "worse"]) == 0
    assert "Rejected" in capsys.readouterr().out

    models = run_json(capsys, "models", "list")
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in models] == [("m", 2, {"champion": 1})]
    versions = run_json(capsys, "models", "list", "m")
    assert [(v["version"], v["status"]) for v in versions] == [(1, "Approved"), (2, "Rejected")]
    described = run_json(capsys, "models", "describe", "m", "--alias", "champion")
    assert described["version"] == 1 and described["aliases"] == ["champion"]
    history = run_json(capsys, "models", "history", "m")
    assert [e["kind"] for e in history] == ["registered", "registered", "approved", "alias_moved", "rejected"]

    # The tables name what matters
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "champion=v1" in table and "m" in table
    assert main(["models", "describe", "m", "--version", "2"]) == 0
    table = capsys.readouterr().out
    assert "Rejected" in table and "model.joblib" in table and "s3://data/credit.csv" in table
    assert main(["models", "history", "m"]) == 0
    table = capsys.readouterr().out
    for kind in ("registered", "approved", "alias_moved", "rejected"):
        assert kind in table


def test_download_writes_verified_artifacts(registry, capsys, tmp_path):
    bundle = tiny_bundle("x")
    registry.register("m", bundle, lineage=lineage())
    result = run_json(capsys, "models", "download", "m", "--version", "1", "--out", str(tmp_path / "out"))
    assert sorted(f["artifact"] for f in result["files"]) == sorted(bundle.artifacts)
    for name, body in bundle.artifacts.items():
        assert (tmp_path / "out" / name).read_bytes() == body
    assert json.loads((tmp_path / "out" / "record.json").read_text())["version"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "describe", "ghost"], "model 'ghost' not found"),
        (["models", "history", "ghost"], "model 'ghost' not found"),
        (["models", "list", "ghost"], "model 'ghost' not found"),
        (["models", "approve", "ghost", "1"], "model 'ghost' not found"),
        (["models", "describe", "m", "--version", "5"], "model 'm' has no version 5"),
        (["models", "describe", "m", "--alias", "champion"], "model 'm' has no alias 'champion'"),
        (["models", "alias", "m", "champion", "1"], "only an Approved version can be 'champion'"),
        (["models", "download", "m", "--out", "/tmp/x", "--artifact", "nope"], "has no artifact 'nope'"),
        (
            ["models", "register", "m2", "--data", "/no/such.csv", "--target", "y", "--numeric", "a"],
            "no such file",
        ),
        (
            ["models", "register", "m2", "--dataset", "credit", "--target", "nope", "--numeric", "x"],
            "lacks column",
        ),
        (["models", "register", "bad name", "--dataset", "credit", "--rows", "50"], "model name 'bad name'"),
    ],
)
def test_user_errors_exit_2_with_one_line(registry, capsys, argv, message):
    registry.register("m", tiny_bundle(), lineage=lineage())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("sluice: error: ")
    assert err.strip().count("\n") == 0


def test_approving_a_rejected_version_exits_2(registry, capsys):
    registry.register("m", tiny_bundle(), lineage=lineage())
    registry.reject("m", 1, actor="bob")
    assert main(["models", "approve", "m", "1"]) == 2
    assert "version 1 is Rejected; it cannot become Approved" in capsys.readouterr().err


def test_missing_registry_settings_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("SLUICE_REGISTRY_TABLE", raising=False)
    monkeypatch.delenv("SLUICE_REGISTRY_BUCKET", raising=False)
    assert main(["models", "list"]) == 2
    assert "SLUICE_REGISTRY_TABLE" in capsys.readouterr().err


def test_register_from_s3_records_the_object_version(registry, capsys):
    import boto3

    s3 = boto3.client("s3", region_name="eu-west-1")
    body = credit(200, seed=2).to_csv(index=False).encode()
    put = s3.put_object(Bucket=BUCKET, Key="datasets/train.csv", Body=body)
    record = run_json(
        capsys,
        "models",
        "register",
        "credit",
        "--data",
        f"s3://{BUCKET}/datasets/train.csv",
        "--target",
        "default",
        "--numeric",
        "income,age",
        "--no-onnx",
    )
    assert record["lineage"]["data_uri"] == f"s3://{BUCKET}/datasets/train.csv"
    assert record["lineage"]["data_version"] == put["VersionId"]
    assert record["lineage"]["data_sha256"] == hashlib.sha256(body).hexdigest()


def test_download_of_a_tampered_artifact_exits_2_naming_it(registry, capsys, tmp_path):
    import boto3

    record = registry.register("m", tiny_bundle(), lineage=lineage())
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket=BUCKET, Key=record.artifacts["spec.json"]["key"], Body=b"{}"
    )
    assert main(["models", "download", "m", "--version", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "artifact 'spec.json' of model 'm' version 1 failed its integrity check" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_register_from_parquet_with_estimator_and_params(registry, capsys, tmp_path):
    path = tmp_path / "train.parquet"
    credit(200, seed=3).to_parquet(path, index=False)
    record = run_json(
        capsys,
        "models",
        "register",
        "credit",
        "--data",
        str(path),
        "--target",
        "default",
        "--numeric",
        "income,age,debt_ratio",
        "--estimator",
        "sklearn.tree.DecisionTreeClassifier",
        "--param",
        "max_depth=3",
        "--no-onnx",
    )
    assert record["estimator"] == "sklearn.tree.DecisionTreeClassifier"
    assert record["hyperparameters"]["max_depth"] == 3
    assert record["lineage"]["data_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = registry.load("credit", version=1)
    assert type(loaded.estimator).__name__ == "DecisionTreeClassifier"


def test_one_grammar_for_model_references(registry, capsys, tmp_path):
    # Given two versions of a model
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    registry.register("m", tiny_bundle("2"), lineage=lineage())
    # When they are named NAME:VERSION and NAME@ALIAS in every command
    with acting_as("sluice-test-approver", "alice"):
        assert run_json(capsys, "models", "approve", "m:2")["status"] == "Approved"
    assert run_json(capsys, "models", "alias", "m:2", "champion")["version"] == 2
    assert run_json(capsys, "models", "describe", "m:1")["version"] == 1
    assert run_json(capsys, "models", "describe", "m@champion")["version"] == 2
    assert run_json(capsys, "models", "describe", "m")["version"] == 2  # NAME alone: the latest
    assert run_json(capsys, "models", "reject", "m@champion", "--reason", "no")["status"] == "Rejected"
    out = tmp_path / "out"
    assert run_json(capsys, "models", "download", "m:1", "--out", str(out))["version"] == 1
    # Then the older forms still work too: a positional version, --version, NAME ALIAS VERSION
    assert run_json(capsys, "models", "describe", "m", "2")["version"] == 2
    with acting_as("sluice-test-approver", "alice"):
        assert run_json(capsys, "models", "approve", "m", "1")["status"] == "Approved"
    assert run_json(capsys, "models", "alias", "m", "champion", "1")["version"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "approve", "m"], "m: name a version, as m:VERSION or m@ALIAS"),
        (["models", "describe", "m:1", "2"], "m:1 already names a version"),
        (["models", "approve", "m@nope"], "m@nope: model m has no alias 'nope'"),
    ],
)
def test_reference_errors_are_one_line(registry, capsys, argv, message):
    registry.register("m", tiny_bundle("1"), lineage=lineage())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sluice: error: {message}") and err.count("\n") == 1
