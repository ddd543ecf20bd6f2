"""The ``python`` flavour (issue 15): a model class of the user's own package, under moto.

The example project declares ``model = "credit_decisions.scorecard:Scorecard"``: a hand-written
points scorecard whose directory holds ``scorecard.json``. It registers with reference rows and is
served by the container endpoint built from its project, whose class alone loads the files.
"""

from __future__ import annotations

import builtins
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from moto import mock_aws

from sluice.cli import main
from sluice.errors import Conflict, SluiceError
from sluice.models.contract import Descriptor
from sluice.models.imports import register_python
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.manifest import serving_artifacts, version_manifest
from sluice.serving.scoring import Scorer
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit
from tests.unit.test_model_imports import bucket_objects
from tests.unit.test_registry import BUCKET, TABLE, create_registry_resources
from tests.unit.test_traffic import FUNCTION, _endpoint_flavour, endpoint  # noqa: F401 (a fixture)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"
PYPROJECT = EXAMPLE / "pyproject.toml"
FEATURES = [*NUMERIC, *CATEGORICAL]


@pytest.fixture
def project(monkeypatch):
    """The example project deployed: its src importable and SLUICE_PROJECT naming its pyproject."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.setenv("SLUICE_PROJECT", str(PYPROJECT))
    from credit_decisions import scorecard

    return scorecard


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    with mock_aws():
        yield create_registry_resources()


@pytest.fixture
def model_dir(project, tmp_path):
    card = project.fit_scorecard(credit(3000, seed=1), TARGET)
    return card.save(tmp_path / "scorecard"), card


@pytest.fixture(scope="module")
def reference():
    return credit(1000, seed=4)


def instances(frame):
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict("records")
    ]


def test_a_scorecard_registers_and_serves_what_its_own_class_predicts(registry, model_dir, reference):
    directory, card = model_dir
    # Given the example project's scorecard directory, registered with labelled reference rows
    record = register_python(registry, "scorecard", directory, reference, target=TARGET)
    # Then its files are model/ artifacts and model.json names the project's package, not code
    assert record.flavours == ("python",) and "model/scorecard.json" in record.artifacts
    described = json.loads(registry.fetch("scorecard", record.version, DESCRIPTOR_ARTIFACT))
    assert described["flavour"] == "python" and described["model_file"] == "model/"
    assert (described["package"], described["package_version"]) == ("credit_decisions", "1.0.0")
    assert (described["task"], described["classes"]) == ("classification", [0, 1])
    assert {"numpy", "pandas"} <= set(described["libraries"])
    assert not {"module", "model_class", "entry_point", "model"} & set(described)
    assert {"roc_auc", "f1"} <= set(record.metrics) and record.metrics["roc_auc"] > 0.75
    # And served, on 1,000 rows, it answers exactly what the class's own predict_proba does
    scorer = Scorer.from_registry(registry, "scorecard", record.version, flavour="python")
    rows = credit(1000, seed=7)
    labels, probabilities = scorer.predict(instances(rows))
    np.testing.assert_array_equal(probabilities, card.predict_proba(rows[FEATURES]))
    np.testing.assert_array_equal(labels, card.predict(rows[FEATURES]))
    # and no other flavour serves it
    for flavour in ("sklearn", "onnx"):
        with pytest.raises(SluiceError, match=f"no {flavour} flavour"):
            Scorer.from_registry(registry, "scorecard", record.version, flavour=flavour)


def test_batch_scores_a_python_version_with_its_own_class(registry, model_dir, reference):
    from sluice.pipelines.batch_scorers import ModelShardScorer
    from sluice.serving.scoring import clear_cache

    directory, card = model_dir
    record = register_python(registry, "scorecard", directory, reference, target=TARGET)
    clear_cache()
    scorer = ModelShardScorer.load("scorecard", record.version, registry=registry)
    rows = credit(300, seed=9)[FEATURES]
    labels, positive = scorer.predict(rows)
    assert scorer.scorer.flavour == "python"
    np.testing.assert_array_equal(positive, card.predict_proba(rows)[:, 1])
    np.testing.assert_array_equal(labels, card.predict(rows))


def test_serving_from_the_deploy_time_manifest_verifies_the_model_files(registry, model_dir, reference):
    directory, _ = model_dir
    record = register_python(registry, "scorecard", directory, reference)
    registry.approve("scorecard", record.version, actor="approver")
    approved = registry.get("scorecard", version=record.version)
    assert serving_artifacts(approved, "python") == ["model.json", "schema.json", "model/scorecard.json"]
    approval = json.dumps({"approved_by": "approver", "signature": approved.approval_signature})
    loaded = registry.load_manifest(
        "scorecard", record.version, version_manifest(approved), approval=approval, flavour="python"
    )
    assert type(loaded.estimator).__name__ == "Scorecard" and loaded.flavour == "python"


def test_without_a_deployed_project_serving_refuses_in_one_line(registry, model_dir, reference, monkeypatch):
    directory, _ = model_dir
    record = register_python(registry, "scorecard", directory, reference, project=PYPROJECT)
    monkeypatch.delenv("SLUICE_PROJECT")
    with pytest.raises(SluiceError) as refused:
        Scorer.from_registry(registry, "scorecard", record.version, flavour="python")
    assert "no project is deployed" in str(refused.value) and "\n" not in str(refused.value)


def test_a_version_of_another_package_is_refused_and_nothing_is_imported(
    registry, model_dir, reference, tmp_path, monkeypatch
):
    directory, _ = model_dir
    record = register_python(registry, "scorecard", directory, reference)
    # Given an endpoint whose deployed project is another package
    other = tmp_path / "other" / "pyproject.toml"
    other.parent.mkdir()
    other.write_text('[tool.sluice]\npackage = "fraud_rules"\nmodel = "fraud_rules.rules:Rules"\n')
    monkeypatch.setenv("SLUICE_PROJECT", str(other))
    imported: list[str] = []
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda name, *a: imported.append(name) or real_import(name, *a)
    )
    # Then the version is refused in one line naming both packages, before any import
    with pytest.raises(SluiceError) as refused:
        Scorer.from_registry(registry, "scorecard", record.version, flavour="python")
    message = str(refused.value)
    assert "'credit_decisions'" in message and "'fraud_rules'" in message and "\n" not in message
    assert not [name for name in imported if name.startswith(("credit_decisions", "fraud_rules"))]


@pytest.mark.parametrize("field", ["model_class", "module", "entry_point", "model", "callable"])
def test_a_model_json_naming_code_is_refused_and_nothing_is_imported(field, monkeypatch):
    imported: list[str] = []
    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins, "__import__", lambda name, *a, **k: imported.append(name) or real_import(name, *a, **k)
    )
    descriptor = {
        "flavour": "python",
        "model_file": "model/",
        "task": "classification",
        "package": "credit_decisions",
        field: "os:system",
    }
    with pytest.raises(SluiceError, match=f"model.json field '{field}' is not accepted") as refused:
        ModelBundle(
            artifacts={"model.json": json.dumps(descriptor).encode(), "schema.json": b"{}", "model/x": b"1"}
        )
    assert "\n" not in str(refused.value)
    assert "os" not in imported


def test_a_directory_without_the_files_the_class_needs_is_refused_before_any_upload(
    registry, project, reference, tmp_path
):
    empty_card = tmp_path / "not-a-scorecard"
    empty_card.mkdir()
    (empty_card / "notes.txt").write_text("the scorecard is elsewhere")
    before = bucket_objects()
    with pytest.raises(SluiceError) as refused:
        register_python(registry, "scorecard", empty_card, reference)
    message = str(refused.value)
    assert "Scorecard.load cannot load the model's files (FileNotFoundError:" in message
    assert "\n" not in message and bucket_objects() == before


def test_registration_needs_a_project_with_a_model_class(
    registry, model_dir, reference, tmp_path, monkeypatch
):
    directory, _ = model_dir
    monkeypatch.delenv("SLUICE_PROJECT")
    with pytest.raises(SluiceError, match="--flavour python needs the model's project: pass --project"):
        register_python(registry, "scorecard", directory, reference)
    bare = tmp_path / "pyproject.toml"
    bare.write_text('[tool.sluice]\npackage = "credit_decisions"\n')
    with pytest.raises(SluiceError, match="declares no model class"):
        register_python(registry, "scorecard", directory, reference, project=bare)
    assert bucket_objects() == 0


def test_a_model_that_cannot_predict_the_reference_is_refused_in_one_line(
    registry, model_dir, reference, monkeypatch
):
    directory, _ = model_dir
    with pytest.raises(SluiceError) as refused:
        register_python(registry, "scorecard", directory, reference.drop(columns=["income"]))
    assert (
        "cannot predict the --reference rows: the python model's predict failed (KeyError: 'income')"
        in str(refused.value)
        and "\n" not in str(refused.value)
    )
    assert bucket_objects() == 0


def test_a_project_given_by_path_imports_its_package_from_src(registry, model_dir, reference, monkeypatch):
    directory, _ = model_dir
    monkeypatch.delenv("SLUICE_PROJECT")
    for name in [m for m in sys.modules if m.startswith("credit_decisions")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.endswith("credit_decisions/src")])
    record = register_python(registry, "scorecard", directory, reference, project=PYPROJECT)
    assert record.flavours == ("python",)
    assert str(EXAMPLE / "src") not in sys.path  # put back as it was


def test_a_python_descriptor_round_trips_and_names_a_package_only():
    descriptor = Descriptor(
        model_file="model/",
        task="regression",
        flavour="python",
        package="credit_decisions",
        package_version="2",
    )
    assert Descriptor.from_json(descriptor.to_json()) == descriptor
    with pytest.raises(SluiceError, match="package"):
        Descriptor(model_file="model/", task="regression", flavour="python")
    with pytest.raises(SluiceError, match="package"):
        Descriptor(model_file="model.skops", task="regression", package="credit_decisions")
    with pytest.raises(SluiceError, match="importable package name"):
        Descriptor(model_file="model/", task="regression", flavour="python", package="os:system")
    with pytest.raises(SluiceError, match="lacks artifact"):
        ModelBundle(artifacts={"model.json": descriptor.to_json(), "schema.json": b"{}"})


def test_the_cli_registers_a_directory_and_refuses_bad_input_with_exit_2(
    registry, model_dir, reference, tmp_path, capsys
):
    directory, _ = model_dir
    data = tmp_path / "reference.csv"
    reference.to_csv(data, index=False)
    common = ["models", "register", "scorecard", "--reference", str(data), "--flavour", "python"]
    assert main([*common, "--model", str(directory), "--target", TARGET, "--project", str(PYPROJECT)]) == 0
    for bad, said in [
        (["--model", str(tmp_path / "nowhere")], "not a directory"),
        (
            ["--model", str(directory), "--project", str(tmp_path / "none.toml")],
            "cannot read the project file",
        ),
        (["--model", str(directory), "--onnx", str(data)], "--onnx and --trust are for scikit-learn files"),
    ]:
        capsys.readouterr()
        assert main([*common, *bad]) == 2
        error = capsys.readouterr().err.strip()
        assert said in error and "\n" not in error
    # --project belongs to --flavour python
    assert (
        main(
            ["models", "register", "x", "--model", str(directory), "--reference", str(data), "--project", "p"]
        )
        == 2
    )
    assert "--project names the project of a --flavour python model" in capsys.readouterr().err


# -- deploy: the container endpoint serves it as python, the zip endpoint refuses it ---------------


def _python_bundle() -> ModelBundle:
    descriptor = Descriptor(
        model_file="model/",
        task="classification",
        flavour="python",
        classes=(0, 1),
        package="credit_decisions",
    )
    return ModelBundle(
        artifacts={"model.json": descriptor.to_json(), "schema.json": b"{}", "model/scorecard.json": b"{}"}
    )


def test_a_container_endpoint_deploys_a_python_version_as_python_and_a_zip_one_refuses(endpoint):  # noqa: F811
    traffic, registry, lam = endpoint
    version = registry.register("credit", _python_bundle(), lineage=Lineage()).version
    registry.approve("credit", version, actor="t")
    # The zip endpoint refuses it in one line naming the fix
    with pytest.raises(Conflict) as refused:
        traffic.deploy(version)
    message = str(refused.value)
    assert "has no onnx flavour (it has: python)" in message and "container endpoint" in message
    assert "\n" not in message
    # A container endpoint deploys it with its own flavour, and a scikit-learn version after it
    _endpoint_flavour(lam, "sklearn")
    route = traffic.deploy(version)
    bound = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier=route.lambda_version)
    assert route.flavour == "python" and bound["Environment"]["Variables"]["SLUICE_MODEL_FLAVOUR"] == "python"
    assert traffic.deploy(1).flavour == "sklearn"
    with pytest.raises(Conflict, match=r"has no sklearn flavour \(it has: python\)"):
        traffic.deploy(version, flavour="sklearn")
    with pytest.raises(Conflict, match="not a python model"):
        traffic.deploy(1, flavour="python")
