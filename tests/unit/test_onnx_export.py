"""The optional ONNX export: a model that can't be converted still registers, with a short reason."""

from __future__ import annotations

import dataclasses
import json

import pytest
from moto import mock_aws

from sluice.models.onnx_export import MAX_REASON_CHARS, bounded_reason
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.registry.bundle import ONNX_ARTIFACT
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice_demo.datasets import credit, credit_spec


@pytest.fixture(scope="module")
def hist_gradient_boosting():
    spec = dataclasses.replace(
        credit_spec(max_iter=20), estimator="sklearn.ensemble.HistGradientBoostingClassifier"
    )
    return train(credit(1_500, seed=0), spec)


def test_a_failed_export_keeps_a_bounded_reason_and_no_onnx_artifact(hist_gradient_boosting):
    bundle = bundle_from_training(hist_gradient_boosting)
    onnx = bundle.notes["onnx"]
    assert onnx["exported"] is False
    assert ONNX_ARTIFACT not in bundle.artifacts
    assert "HistGradientBoostingClassifier cannot be converted to ONNX" in onnx["reason"]
    # skl2onnx's own message was 324 KB; the record keeps its start and says how long it was.
    assert len(onnx["reason"]) < MAX_REASON_CHARS + 200
    assert "characters in all" in onnx["reason"]


def test_a_model_without_onnx_twin_registers(hist_gradient_boosting):
    bundle = bundle_from_training(hist_gradient_boosting)
    with mock_aws():
        registry = create_storage("sluice-test-registry", "sluice-test-artifacts", region="eu-west-1")
        record = registry.register(
            "credit-hgb",
            bundle,
            lineage=Lineage(data_uri="s3://data/credit.csv", data_sha256="0" * 64, data_rows=1_500),
        )
        assert record.version == 1
        stored = registry.get("credit-hgb", version=1)
    assert stored.status == "PendingManualApproval"
    assert len(json.dumps(stored.notes)) < 2_000


def test_bounded_reason_keeps_short_messages_whole_on_one_line():
    assert bounded_reason(ValueError("bad\n  input")) == "bad input"
    long = bounded_reason(ValueError("x" * 10_000), limit=50)
    assert long.startswith("x" * 50) and long.endswith("(10,000 characters in all)")
