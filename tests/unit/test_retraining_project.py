"""Retraining with the deployed project's own code (examples/credit_decisions), under moto.

The image's ``SLUICE_PROJECT`` names the example's pyproject; its ``[tool.sluice]`` declares
``preprocess`` and ``train``, so retraining runs them with the champion's recorded hyperparameters.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import joblib
import numpy as np
import pytest
from moto import mock_aws

from sluice.errors import SluiceError
from sluice.models.imports import register_fitted
from sluice.pipelines import retraining
from sluice.pipelines.datasource import write_table
from sluice.pipelines.project_training import ProjectTrainer
from sluice.pipelines.retraining import deployed_trainer
from sluice.pipelines.trainers import BuiltinTrainer
from sluice.settings import Settings
from sluice_demo.datasets import credit
from tests.unit.test_registry import BUCKET, REGION, TABLE, create_registry_resources

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"
WORK = "sluice-test-work"
MODEL = "credit-decisions"
DATA = f"s3://{WORK}/datasets/{MODEL}/latest.parquet"
#: The champion's own hyperparameters, unlike the project's defaults, so the test can tell them apart.
CHAMPION_PARAMS = {"max_iter": 40, "learning_rate": 0.15, "max_leaf_nodes": 15}


@pytest.fixture
def project(monkeypatch):
    """The example project deployed: its source importable and ``SLUICE_PROJECT`` set, as in its image."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.setenv("SLUICE_PROJECT", str(EXAMPLE / "pyproject.toml"))
    from credit_decisions import pipeline, steps

    return steps, pipeline


@pytest.fixture
def env(project, tmp_path):
    steps, pipeline = project
    with mock_aws():
        registry = create_registry_resources()
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=WORK, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        settings = Settings(registry_table=TABLE, registry_bucket=BUCKET, work_bucket=WORK, region=REGION)
        # The champion: the project's pipeline fitted elsewhere, registered as `sluice models register --model`
        data = steps.preprocess(credit(1_500, seed=1))
        fitted = pipeline.build_pipeline(CHAMPION_PARAMS).fit(
            data.drop(columns=[steps.TARGET]), data[steps.TARGET]
        )
        joblib.dump(fitted, tmp_path / "champion.joblib")
        v1 = register_fitted(registry, MODEL, tmp_path / "champion.joblib", data, target=steps.TARGET)
        registry.approve(MODEL, v1.version, actor="test")
        registry.set_alias(MODEL, "champion", v1.version, actor="test")
        # Fresh data, with rows the project's preprocess drops (no usable income)
        fresh = credit(2_000, seed=2, shift={"income": 0.5})
        fresh.loc[:49, "income"] = -1.0
        fresh.loc[50:99, "region"] = "  North "
        write_table(fresh, DATA)
        yield settings, registry


def _staged(state: dict) -> bytes:
    key = f"retraining/{MODEL}/{state['run_id']}/{state['candidate_file']}"
    return boto3.client("s3", region_name=REGION).get_object(Bucket=WORK, Key=key)["Body"].read()


def test_the_deployed_project_chooses_the_trainer(project, monkeypatch):
    assert isinstance(deployed_trainer(), ProjectTrainer)
    monkeypatch.delenv("SLUICE_PROJECT")
    assert isinstance(deployed_trainer(), BuiltinTrainer)


def test_retrain_runs_the_projects_train_with_the_champions_hyperparameters(env, project, monkeypatch):
    # Given an approved champion v1 fitted with the project's pipeline, and the project deployed
    settings, registry = env
    steps, _ = project
    calls = []
    real_train = steps.train

    def spy(data, hyperparameters):
        calls.append((len(data), dict(hyperparameters)))
        return real_train(data, hyperparameters)

    monkeypatch.setattr(steps, "train", spy)
    # When a retraining run completes
    state = retraining.run_all(settings, retraining.RetrainRequest(MODEL, DATA, "run-p1"), registry=registry)
    # Then the project's train ran once, on the preprocessed train partition, with v1's hyperparameters
    champion = registry.get(MODEL, version=1)
    assert len(calls) == 1
    assert calls[0] == (state["rows"]["train"], champion.hyperparameters)
    assert champion.hyperparameters["max_iter"] == CHAMPION_PARAMS["max_iter"]
    # the rows the project's preprocess drops never reached training or the holdout
    assert state["rows"]["train"] + state["rows"]["holdout"] == 2_000 - 50
    # and v2 is pending, descends from v1 and records the same hyperparameters
    v2 = registry.get(MODEL, version=state["version"])
    assert (v2.version, v2.status, v2.parent_version) == (2, "PendingManualApproval", 1)
    assert v2.lineage["hyperparameters"] == champion.hyperparameters
    assert v2.lineage["parent_version"] == 1 and v2.lineage["data_rows"] == 2_000
    assert v2.lineage["libraries"]["scikit-learn"] and "credit_decisions" in v2.lineage["code_version"]
    assert v2.notes["run_id"] == "run-p1" and v2.notes["trigger"] == "manual"
    assert v2.metrics == state["candidate_metrics"] == state["comparison"]["challenger"]
    # and nothing was deployed
    assert registry.get(MODEL, alias="champion").version == 1


def test_the_registered_model_is_the_staged_candidate(env, project):
    settings, registry = env
    steps, _ = project
    state = retraining.run_all(settings, retraining.RetrainRequest(MODEL, DATA, "run-p2"), registry=registry)
    # The candidate is staged in skops only with types of scikit-learn, numpy, scipy and the project
    # (the booster holds a functools.partial, so here it is kept as joblib, saying why)
    trusted = ("sklearn.", "numpy.", "scipy.", "credit_decisions.")
    if state["candidate_file"] == "candidate.skops":
        import skops.io as sio

        assert all(t.startswith(trusted) for t in state["candidate_trusted"])
        staged = sio.loads(_staged(state), trusted=state["candidate_trusted"])
    else:
        assert state["candidate_file"] == "candidate.joblib"
        assert "functools.partial" in state["candidate_source"]["kept_joblib"]
        staged = joblib.load(io.BytesIO(_staged(state)))
    rows = steps.preprocess(credit(300, seed=9)).drop(columns=[steps.TARGET])
    registered = registry.load(MODEL, version=state["version"])
    assert registered.descriptor is not None
    assert registered.descriptor.model_file == state["candidate_file"].replace("candidate", "model")
    assert np.array_equal(registered.estimator.predict_proba(rows), staged.predict_proba(rows))


def test_champion_and_challenger_are_compared_on_the_same_holdout(env):
    settings, registry = env
    state = retraining.run_all(settings, retraining.RetrainRequest(MODEL, DATA, "run-p3"), registry=registry)
    comparison = json.loads(registry.fetch(MODEL, state["version"], "reports/comparison.json"))
    assert comparison["primary_metric"] == "f1"
    assert set(comparison["champion"]) == set(comparison["challenger"]) >= {"f1", "accuracy", "roc_auc"}
    assert comparison["holdout_rows"] == state["rows"]["holdout"]
    assert b"<img" in registry.fetch(MODEL, state["version"], "reports/comparison.html")


def test_a_retried_register_returns_the_same_version(env):
    settings, registry = env
    first = retraining.run_all(settings, retraining.RetrainRequest(MODEL, DATA, "run-p4"), registry=registry)
    again = retraining.register(settings, first, registry=registry)
    assert again["version"] == first["version"]
    assert [r.version for r in registry.list_versions(MODEL)] == [1, 2]


def test_a_swapped_project_candidate_is_refused(env):
    settings, registry = env
    request = retraining.RetrainRequest(MODEL, DATA, "run-p5")
    state = retraining.train_candidate(
        settings, retraining.preprocess(settings, request, registry=registry), registry=registry
    )
    key = f"retraining/{MODEL}/run-p5/{state['candidate_file']}"
    buffer = io.BytesIO()
    joblib.dump({"not": "the candidate"}, buffer)
    boto3.client("s3", region_name=REGION).put_object(Bucket=WORK, Key=key, Body=buffer.getvalue())
    with pytest.raises(SluiceError, match="does not match the digest"):
        retraining.evaluate(settings, state, registry=registry)


def test_data_without_the_projects_target_is_refused_naming_it(env):
    settings, registry = env
    write_table(credit(200, seed=3).drop(columns=["default"]), f"s3://{WORK}/unlabelled.parquet")
    request = retraining.RetrainRequest(MODEL, f"s3://{WORK}/unlabelled.parquet", "run-p6")
    with pytest.raises(SluiceError, match="target column 'default'"):
        retraining.preprocess(settings, request, registry=registry)


def test_a_train_that_returns_no_model_fails_the_step_in_one_line(env, project, monkeypatch):
    settings, registry = env
    steps, _ = project
    monkeypatch.setattr(steps, "train", lambda data, hyperparameters: "not a model")
    with pytest.raises(SluiceError, match=r"train returned a str, not a fitted model") as caught:
        retraining.run_all(settings, retraining.RetrainRequest(MODEL, DATA, "run-p7"), registry=registry)
    assert "\n" not in str(caught.value)
    assert [r.version for r in registry.list_versions(MODEL)] == [1]


def test_a_built_in_spec_is_refused_when_the_image_has_a_project(env):
    settings, registry = env
    request = retraining.RetrainRequest(MODEL, DATA, "run-p8", spec={"target": "default", "numeric": ["age"]})
    with pytest.raises(SluiceError, match="field 'spec' is not accepted"):
        retraining.preprocess(settings, request, registry=registry)
