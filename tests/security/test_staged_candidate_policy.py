"""Threat: someone other than a model's train role writes its staged candidate and the digest.

A train step outside Lambda (Fargate, SageMaker) hands its candidate's sha256 back through
``train-output.json`` beside ``candidate.joblib``. Whoever could write both would choose the
pickle the evaluate and register steps load, the digest check notwithstanding. The work
bucket's policy (:func:`infra.constructs.retraining.staged_candidate_guard`) denies writing or
deleting either to every principal but the model's train role. Each attack is a request to the
policy simulator over the synthesized templates (moto evaluates no IAM).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.names import (
    CANDIDATE_FILES,
    TRAIN_OUTPUT_FILE,
    retrain_role_name,
    role_arn,
    stage_bucket_name,
    train_task_role_name,
)
from tests.infra.conftest import stacks  # noqa: F401  (the session's synthesized stacks)
from tests.security.test_iam_policies import EVERYTHING, STAGES, App, app  # noqa: F401

MODELS = json.loads((Path(__file__).resolve().parents[2] / "infra/models.json").read_text())
STAGED = (*CANDIDATE_FILES, TRAIN_OUTPUT_FILE)
WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")


def _train_role(stage: str, account: str, model: dict) -> str:
    compute = model.get("trainingCompute", "lambda")
    name = (retrain_role_name if compute == "lambda" else train_task_role_name)(stage, model["name"])
    return role_arn(account, name)


def _staged(on: App, stage: str, model: str, file: str) -> str:
    account, region = on.env(stage)
    work = stage_bucket_name("work", stage=stage, account=account, region=region)
    return f"arn:aws:s3:::{work}/retraining/{model}/20261206T000000Z-a1b2/{file}"


@pytest.mark.parametrize("stage", STAGES)
def test_an_account_administrator_cannot_stage_a_candidate(app, stage):  # noqa: F811
    # Given an administrator of the stage's account, allowed everything by its identity policy
    account, _ = app.env(stage)
    admin = f"arn:aws:iam::{account}:role/{stage}-admin"
    app.sim.add_principal(admin, EVERYTHING)
    for model in MODELS:
        # It may write the run's other files (the deny is what stops it, not a missing grant)
        assert app.sim.allowed(admin, "s3:PutObject", _staged(app, stage, model["name"], "train.parquet"))
        # When it writes or deletes a staged candidate or the train task's output, it is denied
        for file in STAGED:
            for action in WRITES:
                decision = app.sim.allowed(admin, action, _staged(app, stage, model["name"], file))
                assert not decision, f"{admin} may {action} {model['name']}'s {file}"


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_models_train_role_stages_its_candidate(app, stage):  # noqa: F811
    account, _ = app.env(stage)
    for model in MODELS:
        writer = _train_role(stage, account, model)
        # The train role stages the candidate (and, outside Lambda, its output)
        assert writer in app.roles(stage), writer
        for file in STAGED:
            assert app.sim.allowed(writer, "s3:PutObject", _staged(app, stage, model["name"], file))
        # Every other role of the stage (the steps' role of a Fargate-trained model, another
        # model's task, the batch and endpoint roles) is refused every write of those files
        found = [
            f"{role}: {action} {file}"
            for role in app.roles(stage)
            if role != writer
            for file in STAGED
            for action in WRITES
            if app.sim.allowed(role, action, _staged(app, stage, model["name"], file))
        ]
        assert found == [], model["name"]


def test_a_fargate_model_is_staged_by_its_task_alone():
    # The session app trains one model on Fargate: its steps' role is not its train role
    fargate = [m for m in MODELS if m.get("trainingCompute") == "fargate"]
    assert fargate, "infra/models.json trains no model on Fargate"
    assert _train_role("dev", "111111111111", fargate[0]) != role_arn(
        "111111111111", retrain_role_name("dev", fargate[0]["name"])
    )
