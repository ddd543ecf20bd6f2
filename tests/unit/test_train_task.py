"""The train step outside Lambda: staged state in, the same candidate out, collected by the next step."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from sluice.errors import IntegrityError, SluiceError
from sluice.pipelines import retraining, train_task
from tests.unit.test_registry import REGION
from tests.unit.test_retraining import DATA, WORK, env  # noqa: F401  (the fixture)


def _object(key: str) -> bytes:
    return boto3.client("s3", region_name=REGION).get_object(Bucket=WORK, Key=key)["Body"].read()


def _preprocessed(settings, run_id: str = "run-task-1") -> dict:
    return retraining.preprocess(settings, retraining.RetrainRequest("credit-risk", DATA, run_id))


def test_a_train_task_run_registers_like_the_lambda_step(env, monkeypatch):  # noqa: F811
    # Given a preprocessed run (its state staged in the work bucket)
    settings, registry = env
    state = _preprocessed(settings)
    staged = json.loads(_object("retraining/credit-risk/run-task-1/train-input.json"))
    assert staged == state
    # When the container entry point runs with only the model and run id in its environment
    monkeypatch.setattr(train_task, "run_task", _with_registry(registry))
    code = train_task.main(
        {
            train_task.MODEL_ENV: "credit-risk",
            train_task.RUN_ID_ENV: "run-task-1",
            "SLUICE_WORK_BUCKET": WORK,
            "AWS_REGION": REGION,
        }
    )
    # Then it exits 0, and the collect step hands evaluate and register the staged candidate
    assert code == 0
    collected = train_task.collect(settings, state)
    body = _object(f"retraining/credit-risk/run-task-1/{collected['candidate_file']}")
    assert hashlib.sha256(body).hexdigest() == collected["candidate_sha256"]
    evaluated = retraining.evaluate(settings, collected, registry=registry)
    registered = retraining.register(settings, evaluated, registry=registry)
    assert registered["status"] == "PendingManualApproval"
    assert registered["parent_version"] == 1


def _with_registry(registry):
    original = train_task.run_task

    def run(settings, *, model, run_id, registry_=registry):
        return original(settings, model=model, run_id=run_id, registry=registry_)

    return run


def test_collect_takes_only_what_the_train_step_adds(env):  # noqa: F811
    # Given a train task output that also tries to rewrite the run's lineage
    settings, registry = env
    state = _preprocessed(settings, "run-task-2")
    train_task.run_task(settings, model="credit-risk", run_id="run-task-2", registry=registry)
    key = "retraining/credit-risk/run-task-2/train-output.json"
    out = json.loads(_object(key))
    out.update(parent_version=99, trigger="forged")
    boto3.client("s3", region_name=REGION).put_object(Bucket=WORK, Key=key, Body=json.dumps(out))
    # When the collect step reads it
    collected = train_task.collect(settings, state)
    # Then the execution's lineage stands and the candidate's digest is taken
    assert collected["parent_version"] == state["parent_version"]
    assert collected["trigger"] == "manual"
    assert collected["candidate_sha256"] == out["candidate_sha256"]


def test_collect_refuses_output_of_another_run_or_without_a_digest(env):  # noqa: F811
    settings, _ = env
    s3 = boto3.client("s3", region_name=REGION)
    state = {"model": "credit-risk", "run_id": "run-task-3"}
    key = "retraining/credit-risk/run-task-3/train-output.json"
    s3.put_object(Bucket=WORK, Key=key, Body=json.dumps({"model": "credit-risk", "run_id": "other"}))
    with pytest.raises(IntegrityError, match="not the state of credit-risk run run-task-3"):
        train_task.collect(settings, state)
    s3.put_object(Bucket=WORK, Key=key, Body=json.dumps({**state, "candidate_file": "model.joblib"}))
    with pytest.raises(IntegrityError, match="lacks candidate_sha256"):
        train_task.collect(settings, state)


def test_the_entry_point_fails_with_exit_code_1_and_the_reason(capsys):
    # Given no run in the environment, Then exit 1 naming what is missing
    assert train_task.main({}) == 1
    assert "SLUICE_RETRAIN_MODEL" in capsys.readouterr().err


@pytest.mark.parametrize(("model", "run_id"), [("../x", "run-1"), ("credit-risk", "a/../b"), ("", "run-1")])
def test_state_keys_refuse_names_that_leave_the_runs_prefix(model, run_id):
    with pytest.raises(SluiceError):
        train_task.state_key(model, run_id, train_task.INPUT_FILE)
