"""Threat: a run-time input, or a project file, names code to run.

A model project's code runs only from the image it was deployed in: ``SLUICE_PROJECT`` names the
image's ``pyproject.toml``, whose ``[tool.sluice]`` entry points must lie inside the project's own
package. Whoever can start a pipeline writes its input; these tests send inputs naming code
(``os:system`` as ``train``, a ``postprocess``, an ``entry_point``...) the way the state machines
do and check that they are refused in one line, before anything is read, trained or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sluice.errors import IntegrityError, SluiceError
from sluice.handlers import batch_preprocess, retrain
from sluice.models.project import Project, deployed_project
from sluice.pipelines import retraining
from sluice.registry.store import create_storage
from sluice.settings import Settings

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
