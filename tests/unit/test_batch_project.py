"""Batch scoring with the deployed project's own preprocess and postprocess (examples/credit_decisions)."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
import joblib
import numpy as np
import pandas as pd
import pytest
from moto import mock_aws

from sluice.models.imports import register_fitted
from sluice.pipelines import batch
from sluice.pipelines.batch_request import BatchRequest
from sluice.pipelines.datasource import write_table
from sluice.registry.store import create_storage
from sluice.serving import scoring
from sluice_demo.datasets import credit
from tests.unit.test_batch import ARTIFACTS, CAPTURE, REGION, SETTINGS, TABLE, WORK

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"
MODEL = "credit"
DROPPED = 40  # input rows without a usable income, which the project's preprocess drops


@pytest.fixture
def stage(monkeypatch, tmp_path):
    """The example project deployed (``SLUICE_PROJECT``), its pipeline registered and approved as champion."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.setenv("SLUICE_PROJECT", str(EXAMPLE / "pyproject.toml"))
    from credit_decisions import steps

    data = steps.preprocess(credit(1_500, seed=1))
    fitted = steps.train(data, {"max_iter": 40})
    joblib.dump(fitted, tmp_path / "model.joblib")
    with mock_aws():
        registry = create_storage(TABLE, ARTIFACTS)
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (WORK, CAPTURE):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        register_fitted(registry, MODEL, tmp_path / "model.joblib", data, target=steps.TARGET)
        registry.approve(MODEL, 1, actor="tester")
        registry.set_alias(MODEL, "champion", 1, actor="tester")
        scoring.clear_cache()
        yield {"s3": s3, "registry": registry, "steps": steps, "fitted": fitted}
        scoring.clear_cache()


def _raw_input() -> pd.DataFrame:
    """Raw rows as they arrive: some without a usable income, some with unnormalised spelling."""
    frame = credit(2_500, seed=11).drop(columns=["default"])
    frame["income"] = frame["income"].abs() + 1.0  # the generator's own few non-positive incomes
    frame.loc[: DROPPED - 1, "income"] = 0.0
    frame.loc[100:149, "region"] = "  NORTH "
    return frame


def _read(s3, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_batch_runs_the_projects_preprocess_and_postprocess(stage):
    # Given raw input rows, some of which the project's preprocess drops or respells
    s3, steps, fitted = stage["s3"], stage["steps"], stage["fitted"]
    raw = _raw_input()
    write_table(raw, f"s3://{WORK}/in/raw.parquet")
    request = BatchRequest(
        model=MODEL, input_uri=f"s3://{WORK}/in/raw.parquet", run_id="proj-1", shard_rows=1_000
    )
    # When the batch pipeline runs
    summary = batch.run_local(SETTINGS, request)
    # Then every kept row is scored, none of the dropped ones, and nothing is rejected
    manifest = summary["manifest"]
    assert summary["status"] == "SUCCEEDED", manifest["reasons"]
    assert (manifest["rows_in"], manifest["dropped_by_preprocess"], manifest["rejects"]) == (
        2_500,
        DROPPED,
        0,
    )
    assert manifest["rows_out"] == 2_500 - DROPPED
    scored = pd.read_parquet(io.BytesIO(_read(s3, manifest["predictions_uri"])))
    assert len(scored) == 2_500 - DROPPED and not (scored["income"] <= 0).any()
    assert set(scored["region"]) <= {"north", "south", "east", "west"}
    # and the scores are the model's on the preprocessed rows, in order
    expected = fitted.predict_proba(steps.preprocess(raw))[:, 1]
    assert np.allclose(scored["probability"].to_numpy(), expected)
    # and the project's postprocess decided each row
    assert scored["decision"].tolist() == steps.postprocess(scored, expected)["decision"].tolist()
    assert set(scored["decision"]) <= {"approve", "review", "decline"} and scored["decision"].nunique() > 1


def test_a_postprocess_that_loses_rows_fails_the_run(stage, monkeypatch):
    steps = stage["steps"]
    monkeypatch.setattr(steps, "postprocess", lambda frame, scores: frame.head(3))
    write_table(_raw_input(), f"s3://{WORK}/in/raw.parquet")
    request = BatchRequest(
        model=MODEL, input_uri=f"s3://{WORK}/in/raw.parquet", run_id="proj-2", shard_rows=1_000
    )
    summary = batch.run_local(SETTINGS, request)
    assert summary["status"] == "FAILED" and summary["manifest"]["predictions_uri"] is None
    assert "postprocess returned 3 rows" in summary["manifest"]["failed_shards"][0]["cause"]


def test_without_a_project_batch_scores_the_input_as_it_is(stage, monkeypatch):
    monkeypatch.delenv("SLUICE_PROJECT")
    raw = _raw_input()
    write_table(raw, f"s3://{WORK}/in/raw.parquet")
    request = BatchRequest(
        model=MODEL, input_uri=f"s3://{WORK}/in/raw.parquet", run_id="proj-3", shard_rows=1_000
    )
    manifest = batch.run_local(SETTINGS, request)["manifest"]
    # the unnormalised spellings are rejected by the schema, nothing is dropped, no decision column
    assert (manifest["dropped_by_preprocess"], manifest["rejects"]) == (0, 50)
    scored = pd.read_parquet(io.BytesIO(_read(stage["s3"], manifest["predictions_uri"])))
    assert "decision" not in scored.columns and len(scored) == 2_450
