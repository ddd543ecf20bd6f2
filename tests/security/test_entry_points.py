"""Threat: a run-time input, or a project file, names code to run.

A model project's code runs only from the image it was deployed in: ``SLUICE_PROJECT`` names the
image's ``pyproject.toml``, whose ``[tool.sluice]`` entry points must lie inside the project's own
package. Whoever can start a pipeline writes its input; these tests send inputs naming code
(``os:system`` as ``train``, a ``postprocess``, an ``entry_point``...) the way the state machines
do and check that they are refused in one line, before anything is read, trained or written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sluice.errors import IntegrityError, SluiceError
from sluice.handlers import batch_preprocess, retrain
from sluice.models.project import Project, deployed_project
from sluice.models.schema import FeatureSchema
from sluice.pipelines import retraining
from sluice.registry.store import ModelRegistry, create_storage
from sluice.serving.scoring import Scorer
from sluice.settings import Settings
from sluice_demo.datasets import credit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"
REGION = "eu-west-1"
WORK = "sec-work"
REFUSED = "is not accepted: entry points come only from the deployed image"
CODE_FIELDS = ["train", "preprocess", "postprocess", "entry_point", "model_class", "package"]


@dataclass
class Context:
    function_name: str = "sluice-step"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:sluice-step"
    aws_request_id: str = "security-test"


@pytest.fixture
def stage(monkeypatch):
    """A stage with the example project deployed, and a record of every os.system call."""
    calls: list[tuple] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args) or 0)
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.setenv("SLUICE_PROJECT", str(EXAMPLE / "pyproject.toml"))
    with mock_aws():
        create_storage("sec-registry", "sec-artifacts", region=REGION)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=WORK, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        for name, value in {
            "SLUICE_REGISTRY_TABLE": "sec-registry",
            "SLUICE_REGISTRY_BUCKET": "sec-artifacts",
            "SLUICE_WORK_BUCKET": WORK,
            "SLUICE_MODEL_NAME": "credit",
        }.items():
            monkeypatch.setenv(name, value)
        yield calls


def _work_objects() -> list[str]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=WORK)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.mark.parametrize("field", CODE_FIELDS)
def test_a_retraining_input_naming_code_is_refused_and_nothing_runs(stage, field):
    # Given a retraining input that names os.system as one of the project's steps
    state = {
        "model": "credit",
        "data_uri": f"s3://{WORK}/datasets/credit.parquet",
        "run_id": "attack-1",
        field: "os:system",
    }
    # When the state machine's first step receives it
    with pytest.raises(SluiceError, match=f"retraining input field '{field}' {REFUSED}") as caught:
        retrain.lambda_handler({"step": "preprocess", "state": state}, Context())
    # Then it is refused in one line, and nothing ran or was written
    assert "\n" not in str(caught.value)
    assert stage == [] and _work_objects() == []


@pytest.mark.parametrize("field", CODE_FIELDS)
def test_a_batch_input_naming_code_is_refused_and_nothing_runs(stage, field):
    request = {"model": "credit", "input_uri": f"s3://{WORK}/batch/input/credit/x.csv", field: "os:system"}
    with pytest.raises(SluiceError, match=f"batch input field '{field}' {REFUSED}"):
        batch_preprocess.lambda_handler({"request": request, "execution": "attack-2"}, Context())
    assert stage == [] and _work_objects() == []


def test_an_unknown_input_field_is_refused_too(stage):
    state = {"model": "credit", "data_uri": "s3://b/k.csv", "run_id": "r", "hook": "os:system"}
    with pytest.raises(SluiceError, match="field 'hook' is not accepted: known fields"):
        retraining.RetrainRequest.from_event(state)


@pytest.mark.parametrize(
    "entry_point",
    ["os:system", "subprocess:run", "credit_decisions_evil.steps:train", "builtins:exec", "credit:train"],
)
def test_a_project_entry_point_outside_its_package_is_refused(tmp_path, entry_point):
    # Given a pyproject whose train lies outside the project's package
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[tool.sluice]\npackage = "credit_decisions"\ntrain = "{entry_point}"\n')
    # Then reading it refuses it, naming the key, before anything is imported
    with pytest.raises(SluiceError, match=r"\[tool.sluice\] train must lie inside the project's package"):
        Project.from_pyproject(path)


def test_a_deployed_project_with_an_outside_entry_point_never_runs(stage, tmp_path, monkeypatch):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.sluice]\npackage = "credit_decisions"\ntrain = "os:system"\n')
    monkeypatch.setenv("SLUICE_PROJECT", str(path))
    with pytest.raises(SluiceError, match="must lie inside the project's package"):
        deployed_project()
    request = retraining.RetrainRequest("credit", f"s3://{WORK}/datasets/credit.parquet", "attack-3")
    with pytest.raises(SluiceError, match="must lie inside the project's package"):
        retraining.preprocess(Settings.from_env(), request)
    assert stage == [] and _work_objects() == []


def test_a_state_naming_another_candidate_file_is_refused(stage):
    # The staged candidate's file name travels in the state: only the two known names load.
    state = {"model": "credit", "run_id": "attack-4", "candidate_file": "../../registry/model.joblib"}
    with pytest.raises(IntegrityError, match="candidate file"):
        retraining.evaluate(Settings.from_env(), state)


# -- a python-flavour version: the class is the deployed project's, whatever the record says --------


def _python_version(registry, *, package: str, estimator: str, files: dict[str, bytes]) -> int:
    from sluice.models.contract import Descriptor
    from sluice.registry.bundle import ModelBundle
    from sluice.registry.lineage import Lineage

    descriptor = Descriptor(
        model_file="model/", task="classification", flavour="python", classes=(0, 1), package=package
    )
    schema = FeatureSchema.infer(credit(200, seed=1).drop(columns=["default"]))
    artifacts = {"model.json": descriptor.to_json(), "schema.json": json.dumps(schema.to_dict()).encode()}
    bundle = ModelBundle(
        artifacts={**artifacts, **{f"model/{k}": v for k, v in files.items()}},
        estimator=estimator,
        notes={"source": {"model": "os:system", "entry_point": "os:system"}},
    )
    return registry.register("credit", bundle, lineage=Lineage()).version


def test_a_python_version_cannot_choose_the_class_it_is_served_with(stage):
    from credit_decisions.scorecard import fit_scorecard

    registry = ModelRegistry.from_settings(Settings.from_env())
    card = fit_scorecard(credit(1000, seed=2), "default")
    # Given a version of another package, and one of the deployed package whose record names os.system
    foreign = _python_version(registry, package="os", estimator="os.system", files={"x": b"1"})
    ours = _python_version(
        registry, package="credit_decisions", estimator="os.system", files={"scorecard.json": card.to_json()}
    )
    # Then the foreign one is refused in one line, before any of its code could be imported
    with pytest.raises(
        SluiceError, match="is a python model of package 'os'; the deployed project is"
    ) as refused:
        Scorer.from_registry(registry, "credit", foreign, flavour="python")
    assert "\n" not in str(refused.value)
    # and the other is served by the deployed project's own class, whatever its record names
    served = Scorer.from_registry(registry, "credit", ours, flavour="python").model
    assert type(served.model).__module__ == "credit_decisions.scorecard" and stage == []


def test_a_model_json_naming_a_class_is_refused_before_anything_is_uploaded(stage):
    from sluice.registry.bundle import ModelBundle

    descriptor = {
        "flavour": "python",
        "model_file": "model/",
        "task": "regression",
        "package": "credit_decisions",
    }
    for field in ("model_class", "module", "entry_point"):
        body = json.dumps({**descriptor, field: "os:system"}).encode()
        with pytest.raises(SluiceError, match=f"model.json field '{field}' is not accepted"):
            ModelBundle(artifacts={"model.json": body, "schema.json": b"{}", "model/x": b"1"})
    assert stage == []
