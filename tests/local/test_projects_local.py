"""A user's model project end to end on the embedded local AWS, beside the demo's model.

The dev stage serves two models (``infra/models.json``): the demo's ``credit-risk`` (built-in
recipe, zip endpoint) and ``credit-decisions``, the example project ``examples/credit_decisions``
(its own pipeline and steps, its own image). Here the example's fitted pipeline is registered
from a file and served by its container endpoint through the gateway, its batch pipeline runs
its own preprocess and postprocess, and a drift alarm retrains it with its own ``train`` and the
champion's hyperparameters. Locally the image functions run the project from its source, as the
image installs it (``SLUICE_PROJECT``).
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from sluice.models.imports import register_fitted
from sluice.names import batch_state_machine_name, registry_table_name, stage_bucket_name
from sluice.pipelines.datasource import write_table
from sluice.registry.store import ModelRegistry
from sluice.serving.traffic import EndpointTraffic
from sluice_demo import datasets
from tests.local.conftest import wait_execution
from tests.local.test_onnx_local import post

pytestmark = pytest.mark.local

MODEL = "credit-decisions"
OTHER = "credit-risk"
PROJECT = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"
HYPERPARAMETERS = {"max_iter": 60, "learning_rate": 0.12, "max_leaf_nodes": 15}


def instances(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@pytest.fixture(scope="module")
def example():
    """The example project's steps, imported from its source as the image installs it."""
    sys.path.insert(0, str(PROJECT / "src"))
    try:
        from credit_decisions import steps

        yield steps
    finally:
        sys.path.remove(str(PROJECT / "src"))


@pytest.fixture(scope="module")
def stage(local_aws, example, tmp_path_factory):
    """The example's pipeline, fitted here, saved with joblib, registered from the file, approved, champion."""

    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage="dev", account=local_aws.account, region=local_aws.region)

    registry = ModelRegistry(table_name=registry_table_name("dev"), bucket_name=bucket("artifacts"))
    data = example.preprocess(datasets.credit_applications(3_000, seed=1))
    pipeline = example.train(data, HYPERPARAMETERS)
    path = tmp_path_factory.mktemp("model") / "pipeline.joblib"
    joblib.dump(pipeline, path)
    record = register_fitted(
        registry, MODEL, path, data, target=example.TARGET, packages=["credit_decisions"]
    )
    registry.approve(MODEL, record.version, actor="tester")
    registry.set_alias(MODEL, "champion", record.version, actor="tester")
    outputs = json.loads(local_aws.outputs["Models"])
    return {
        "registry": registry,
        "pipeline": pipeline,
        "version": record.version,
        "models": outputs,
        "work": bucket("work"),
        "sfn": local_aws.client("stepfunctions"),
        "s3": local_aws.client("s3"),
    }


def predict_url(local_aws, stage, model: str) -> str:
    """The local gateway's /predict of the model's API (the stage output names its AWS URL)."""
    api_id = stage["models"][model]["url"].split("//", 1)[1].split(".", 1)[0]
    return local_aws.gateway_url(api_id) + "/predict"


def serve(registry: ModelRegistry, model: str, function: str, version: int) -> None:
    traffic = EndpointTraffic(function_name=function, model_name=model, registry=registry, actor="tests")
    traffic.deploy(version)
    traffic.promote(version)


def test_the_examples_pipeline_is_served_by_its_container_endpoint_like_its_predict_proba(local_aws, stage):
    # Given the fitted pipeline, registered from its joblib file, live on the model's endpoint
    served = stage["models"][MODEL]
    serve(stage["registry"], MODEL, served["function"], stage["version"])
    # When 1,000 applications are scored through the gateway
    rows = datasets.credit_applications(1_000, seed=5)
    status, body = post(predict_url(local_aws, stage, MODEL), json.dumps({"instances": instances(rows)}).encode())
    # Then the answers are the pipeline's own predict_proba on the same rows
    assert status == 200, body
    assert (body["model"], body["version"]) == (MODEL, stage["version"])
    expected = stage["pipeline"].predict_proba(rows)
    np.testing.assert_allclose(body["probabilities"], expected, rtol=0, atol=1e-9)
    assert body["predictions"] == stage["pipeline"].predict(rows).tolist()


def test_one_stage_serves_both_models_and_each_alarms_on_its_own_features(local_aws, stage):
    # Given the demo's model trained with the built-in recipe and live on its own endpoint
    from sluice.models.packaging import bundle_from_training
    from sluice.models.training import train
    from sluice.registry.lineage import Lineage

    registry = stage["registry"]
    trained = train(datasets.credit(2_000, seed=3), datasets.credit_spec())
    version = registry.register(OTHER, bundle_from_training(trained), lineage=Lineage()).version
    registry.approve(OTHER, version, actor="tester")
    serve(registry, OTHER, stage["models"][OTHER]["function"], version)
    serve(registry, MODEL, stage["models"][MODEL]["function"], stage["version"])
    # When each endpoint is called with its own model's rows
    for model, rows in ((OTHER, datasets.credit(20, seed=8)), (MODEL, datasets.credit_applications(20, seed=8))):
        features = rows.drop(columns=[datasets.TARGET])
        status, body = post(predict_url(local_aws, stage, model), json.dumps({"instances": instances(features)}).encode())
        # Then each answers for itself
        assert status == 200 and body["model"] == model and len(body["predictions"]) == 20, body
    # And each model's per-feature drift alarms name exactly its own schema's features
    paginator = local_aws.client("cloudwatch").get_paginator("describe_alarms")
    alarms = [a for page in paginator.paginate() for a in page["MetricAlarms"]]
    for model, frame in ((OTHER, datasets.credit(5)), (MODEL, datasets.credit_applications(5))):
        named = {
            d["Value"]
            for a in alarms
            if {"Name": "Model", "Value": model} in a.get("Dimensions", [])
            for d in a.get("Dimensions", [])
            if d["Name"] == "Feature"
        }
        assert named == set(frame.columns) - {datasets.TARGET}, (model, named)


def test_the_batch_pipeline_runs_the_examples_own_preprocess_and_postprocess(local_aws, stage, example):
    # Given applications as a user's system exports them: spelled loosely, some without income
    frame = datasets.credit_applications(400, seed=11).drop(columns=[datasets.TARGET])
    frame["region"] = frame["region"].str.upper().str.pad(8, side="right")
    frame.loc[::40, "income"] = -1.0
    uri = f"s3://{stage['work']}/data/applications.parquet"
    write_table(frame, uri)
    # When the model's batch pipeline scores them
    arn = f"arn:aws:states:{local_aws.region}:{local_aws.account}:stateMachine:"
    arn += batch_state_machine_name("dev", MODEL)
    run = stage["sfn"].start_execution(
        stateMachineArn=arn, name="applications", input=json.dumps({"model": MODEL, "input_uri": uri})
    )["executionArn"]
    done = wait_execution(stage["sfn"], run)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    # Then the project's preprocess ran (rows without income dropped, spellings normalised) and its
    # postprocess's decisions are in the predictions, equal to the project's own steps in-process
    key = f"batch/output/{MODEL}/applications/manifest.json"
    manifest = json.loads(stage["s3"].get_object(Bucket=stage["work"], Key=key)["Body"].read())
    bucket, key = manifest["predictions_uri"].removeprefix("s3://").split("/", 1)
    predictions = pd.read_parquet(io.BytesIO(stage["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()))
    kept = example.preprocess(frame)
    assert len(predictions) == len(kept) <= 400 - 10  # every 40th row, and any with income <= 0
    expected = example.postprocess(kept, stage["pipeline"].predict_proba(kept)[:, 1])
    assert predictions["decision"].tolist() == expected["decision"].tolist()
    np.testing.assert_allclose(predictions["probability"], expected["probability"], atol=1e-9)
    assert set(predictions["decision"]) <= {"approve", "review", "decline"}


def test_a_drift_alarm_retrains_the_example_with_its_own_train_and_the_champions_hyperparameters(
    local_aws, stage
):
    registry = stage["registry"]
    before = {r.version for r in registry.list_versions(MODEL)}
    champion = registry.get(MODEL, alias="champion")
    # Given the latest labelled applications where the stage's retraining reads them
    write_table(
        datasets.credit_applications(2_000, seed=21, shift={"income": 0.5}),
        f"s3://{stage['work']}/datasets/{MODEL}/latest.parquet",
    )
    # When the model's drift share breaches its alarm twice in a row
    cloudwatch = local_aws.client("cloudwatch")
    for _ in range(2):
        cloudwatch.put_metric_data(
            Namespace="Sluice/Drift",
            MetricData=[
                {"MetricName": "DatasetDriftShare", "Dimensions": [{"Name": "Model", "Value": MODEL}], "Value": 0.7}
            ],
        )
        time.sleep(1.0)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(registry.list_versions(MODEL)) == len(before):
        time.sleep(0.5)
    # Then a child of the champion is registered pending approval, fitted by the project's train
    # with the champion's recorded hyperparameters, and nothing is deployed
    (child,) = [r for r in registry.list_versions(MODEL) if r.version not in before]
    assert (child.status, child.parent_version) == ("PendingManualApproval", champion.version)
    assert child.hyperparameters == champion.hyperparameters
    assert child.hyperparameters["max_leaf_nodes"] == HYPERPARAMETERS["max_leaf_nodes"]
    loaded = registry.load(MODEL, version=child.version)
    steps = [type(step).__module__ + "." + type(step).__name__ for _, step in loaded.estimator.steps]
    assert steps == [
        "credit_decisions.features.AffordabilityFeatures",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    ]
    assert registry.get(MODEL, alias="champion").version == champion.version
