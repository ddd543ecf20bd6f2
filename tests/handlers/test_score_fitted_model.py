"""The endpoint handler serving a user's fitted scikit-learn pipeline (``model.json`` + ``model.skops``)."""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
from moto import mock_aws

from sluice.handlers import score
from sluice.registry.lineage import Lineage
from sluice.registry.manifest import approval_binding, version_manifest
from sluice.registry.store import create_storage
from sluice.serving import scoring
from tests.handlers.test_score import Context, event
from tests.unit.test_model_contract import fitted_pipeline, instances_of, sklearn_bundle

REGION = "eu-west-1"
TABLE, BUCKET, CAPTURE = "fitted-registry", "fitted-artifacts", "fitted-capture"


@pytest.fixture(scope="module")
def fitted():
    return fitted_pipeline(3000, seed=11)


@pytest.mark.parametrize("bound", [False, True], ids=["from-table", "from-deploy-manifest"])
def test_a_fitted_pipeline_is_served_exactly_through_the_handler(fitted, bound, monkeypatch):
    pipeline, features = fitted
    with mock_aws():
        # Given the pipeline registered as model.json + model.skops + schema.json, and approved
        registry = create_storage(TABLE, BUCKET)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=CAPTURE, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        record = registry.register("credit", sklearn_bundle(pipeline, features), lineage=Lineage())
        record = registry.approve("credit", record.version, actor="approver")
        variables = {
            "SLUICE_REGISTRY_TABLE": TABLE,
            "SLUICE_REGISTRY_BUCKET": BUCKET,
            "SLUICE_CAPTURE_BUCKET": CAPTURE,
            "SLUICE_MODEL_NAME": "credit",
            "SLUICE_MODEL_VERSION": str(record.version),
            "SLUICE_MODEL_FLAVOUR": "sklearn",
        }
        if bound:  # as deploy binds it: the cold start verifies the approval over these digests
            variables["SLUICE_MODEL_ARTIFACTS"] = version_manifest(record)
            variables["SLUICE_MODEL_APPROVAL"] = approval_binding(record)
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        score._state.clear()
        scoring.clear_cache()
        try:
            # When 1,000 rows are posted to the endpoint
            rows = features.sample(1000, random_state=3)
            request = event("single")
            request["body"] = json.dumps({"instances": instances_of(rows)})
            response = score.lambda_handler(request, Context())
        finally:
            score._state.clear()
            scoring.clear_cache()
    # Then the predictions are the pipeline's own, preprocessed once
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    np.testing.assert_allclose(body["probabilities"], pipeline.predict_proba(rows), rtol=0, atol=1e-12)
    assert body["predictions"] == pipeline.predict(rows).tolist()
    assert (body["model"], body["version"]) == ("credit", record.version)
