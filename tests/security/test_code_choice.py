"""Threat: a run-time input chooses code to run.

A retraining input's ``spec`` names its estimator by dotted path. Before, any ``sklearn.*`` path
passed, and ``sklearn.utils._testing.assert_run_python_script_without_output`` runs the Python
source it is given. These tests send that input the way the state machine would and check that
nothing runs and the error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from moto import mock_aws

from sluice.errors import SluiceError
from sluice.handlers import retrain
from sluice.registry.store import create_storage
from sluice_demo import datasets

EXPLOIT = "sklearn.utils._testing.assert_run_python_script_without_output"


@dataclass
class Context:
    function_name: str = "retrain"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:retrain"
    aws_request_id: str = "security-test"


@pytest.fixture
def stage(monkeypatch):
    with mock_aws():
        create_storage("sec-registry", "sec-artifacts", region="eu-west-1")
        import boto3

        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="sec-work", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "sec-registry")
        monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "sec-artifacts")
        monkeypatch.setenv("SLUICE_WORK_BUCKET", "sec-work")
        yield


def _spec(estimator: str, hyperparameters: dict) -> dict:
    return {**datasets.credit_spec().to_dict(), "estimator": estimator, "hyperparameters": hyperparameters}


def test_a_retraining_spec_naming_a_code_running_callable_is_refused(stage, tmp_path: Path):
    # Given a retraining input whose spec names a callable that runs Python source
    marker = tmp_path / "pwned"
    state = {
        "model": "credit-risk",
        "data_uri": "s3://sec-work/datasets/credit.parquet",
        "run_id": "attack-1",
        "spec": _spec(EXPLOIT, {"source_code": f"open({str(marker)!r}, 'w').write('x')"}),
    }
    # When the state machine's first step receives it
    with pytest.raises(SluiceError, match="estimator must be the public path of a scikit-learn class"):
        retrain.lambda_handler({"step": "preprocess", "state": state}, Context())
    # Then nothing ran
    assert not marker.exists()


@pytest.mark.parametrize("estimator", ["sklearn.utils.shuffle", "sklearn.base.clone"])
def test_a_public_function_is_not_called_as_an_estimator(stage, estimator, monkeypatch):
    # A public, non-estimator name passes the path check; it must still never be called.
    calls = []
    module, _, name = estimator.rpartition(".")
    monkeypatch.setattr(f"{module}.{name}", lambda *a, **k: calls.append((a, k)))
    spec_dict = _spec(estimator, {})
    from sluice.models.training import TrainingSpec

    with pytest.raises(SluiceError, match="is not a scikit-learn classification estimator"):
        TrainingSpec.from_dict(spec_dict).build_estimator()
    assert calls == []
