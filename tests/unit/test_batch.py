"""Batch scoring runtime under moto: shard planning, rejects, manifest, capture, fault drills, endpoint scorer."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import boto3
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from sluice.errors import SluiceError
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.pipelines import batch, batch_notify, batch_postprocess, batch_preprocess, batch_score
from sluice.pipelines.batch_request import DEFAULT_SHARD_ROWS, BatchRequest, BatchScope
from sluice.pipelines.batch_scorers import EndpointShardScorer
from sluice.pipelines.batch_shards import BatchTransientError, ShardError, plan_shards
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving import scoring
from sluice.serving.capture_reader import read_object
from sluice.settings import Settings
from sluice_demo import datasets

REGION = "eu-west-1"
TABLE, ARTIFACTS, WORK, CAPTURE = "batch-registry", "batch-artifacts", "batch-work", "batch-capture"
SETTINGS = Settings(
    registry_table=TABLE, registry_bucket=ARTIFACTS, work_bucket=WORK, capture_bucket=CAPTURE, region=REGION
)


# -- shard planning ------------------------------------------------------------------------------


@given(n=st.integers(0, 50_000), size=st.integers(1, 5_000), cap=st.integers(1, 40))
def test_shards_cover_every_row_once_in_order(n, size, cap):
    shards = plan_shards(n, size, max_shards=cap)
    # contiguous from 0 to n, never empty, never more than the cap
    assert [a for a, _ in shards] == ([0] if shards else []) + [b for _, b in shards[:-1]]
    assert (shards[-1][1] if shards else 0) == n
    assert all(b > a for a, b in shards) and len(shards) <= cap
    if n and -(-n // size) <= cap:
        # within the cap every shard but the last is exactly shard_rows long
        assert all(b - a == size for a, b in shards[:-1]) and shards[-1][1] - shards[-1][0] <= size


def test_shards_grow_evenly_past_the_cap():
    shards = plan_shards(10_001, 1, max_shards=10)
    assert len(shards) == 10 and {b - a for a, b in shards} <= {1000, 1001}


def test_request_fields_are_checked_by_name():
    good = {"model": "credit", "input_uri": "s3://b/in.csv"}
    scope = BatchScope(model="credit", work_bucket="b", fault_drill=True)
    assert BatchRequest.from_event(good, scope=scope, run_id="r1").shard_rows == DEFAULT_SHARD_ROWS
    for bad, field in (
        ({"input_uri": "s3://b/in.csv"}, "model"),
        ({**good, "version": "x"}, "version"),
        ({**good, "version": 0}, "version"),
        ({**good, "shard_rows": 0}, "shard_rows"),
        ({**good, "max_reject_share": 2}, "max_reject_share"),
        ({**good, "output_format": "xml"}, "output_format"),
        ({**good, "faults": {"shard-00001": "x"}}, "faults"),
        ({**good, "postprocess": "os:system"}, "postprocess"),
        ({**good, "colour": "red"}, "colour"),
    ):
        with pytest.raises(SluiceError, match=field):
            BatchRequest.from_event(bad, scope=scope, run_id="r1")
    with pytest.raises(SluiceError, match="run_id"):
        BatchRequest.from_event(good, scope=scope, run_id="not a valid id!")


def test_reject_reasons_name_every_problem_of_a_row():
    class E:
        def __init__(self, feature, code, rows):
            self.feature, self.code, self.rows = feature, code, rows

    reasons = batch_preprocess.reject_reasons(
        [E("age", "type", (3, 5)), E("region", "unknown_category", (3,))], 10
    )
    assert reasons == {3: "age: type; region: unknown_category", 5: "age: type"}


# -- the steps end to end on moto ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    spec = datasets.credit_spec(max_iter=300)
    return train(datasets.credit(2000, seed=5), spec)


@pytest.fixture
def stage(trained):
    with mock_aws():
        registry = create_storage(TABLE, ARTIFACTS)
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (WORK, CAPTURE):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        registry.register("credit", bundle_from_training(trained, onnx=False), lineage=Lineage())
        registry.approve("credit", 1, actor="tester")
        registry.set_alias("credit", "champion", 1, actor="tester")
        scoring.clear_cache()
        yield {"s3": s3, "registry": registry}
        scoring.clear_cache()


def _input_with_bad_rows(n: int) -> tuple[pd.DataFrame, list[int]]:
    """Rows 3 and 7 are bad; ``age`` is a text column (as in a CSV or Parquet file written from text)."""
    frame = datasets.credit(n, seed=11)
    frame["age"] = pd.Series([None if pd.isna(v) else repr(float(v)) for v in frame["age"]], dtype=object)
    frame.loc[3, "age"] = "forty"
    frame.loc[7, "region"] = "mars"
    return frame, [3, 7]


def _read(s3, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_run_scores_valid_rows_like_predict_and_rejects_bad_rows_with_reasons(stage, trained, fmt):
    # Given 2,500 rows, two of them bad, split into shards of 600
    s3 = stage["s3"]
    frame, bad = _input_with_bad_rows(2_500)
    uri = f"s3://{WORK}/in/credit.{fmt}"
    from sluice.pipelines.datasource import write_table

    write_table(frame, uri)
    request = BatchRequest(model="credit", input_uri=uri, run_id=f"run-{fmt}", shard_rows=600)
    # When the steps run in process
    steps = []
    summary = batch.run_local(SETTINGS, request, progress=lambda step, done, total: steps.append(step))
    # Then predictions match estimator.predict on the same (valid) rows, in input order
    manifest = summary["manifest"]
    assert summary["status"] == "SUCCEEDED", manifest["reasons"]
    assert manifest["model_version"] == 1
    out = _read(s3, manifest["predictions_uri"])
    scored = pd.read_csv(io.BytesIO(out)) if fmt == "csv" else pd.read_parquet(io.BytesIO(out))
    valid = frame.drop(index=bad).astype({"age": float})
    expected = trained.estimator.predict(trained.preprocessor.transform(valid))
    assert np.array_equal(scored["prediction"].to_numpy(), expected)
    assert scored["input_row"].tolist() == valid.index.tolist()
    proba = trained.estimator.predict_proba(trained.preprocessor.transform(valid))[:, 1]
    assert np.allclose(scored["probability"].to_numpy(), proba)
    assert set(scored["model_version"]) == {1}
    # and the manifest counts add up, with the rejects file naming row and reason
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rejects"]) == (2_500, 2_498, 2)
    assert manifest["shards"] == 5 and manifest["failed_shards"] == []
    rejects = pd.read_csv(io.BytesIO(_read(s3, manifest["rejects_uri"])))
    assert rejects["input_row"].tolist() == bad
    assert rejects["reason"].tolist() == ["age: type", "region: unknown_category"]
    assert json.loads(_read(s3, summary["manifest_uri"])) == manifest
    assert steps.count("score") == 5


def test_batch_rows_are_captured_as_batch(stage):
    s3 = stage["s3"]
    from sluice.pipelines.datasource import write_table

    write_table(datasets.credit(300, seed=2), f"s3://{WORK}/in/c.parquet")
    request = BatchRequest(
        model="credit", input_uri=f"s3://{WORK}/in/c.parquet", run_id="cap", shard_rows=100
    )
    summary = batch.run_local(SETTINGS, request)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=CAPTURE, Prefix="capture/model=credit/")["Contents"]]
    lines = [record for key in keys for record in read_object(CAPTURE, key)]
    assert len(lines) == summary["manifest"]["rows_out"] == 300
    assert {r["source"] for r in lines} == {"batch"} and {r["version"] for r in lines} == {1}
    assert set(lines[0]["features"]) == set(datasets.NUMERIC) | set(datasets.CATEGORICAL)


def test_too_many_rejects_fail_the_run_without_predictions(stage):
    from sluice.pipelines.datasource import write_table

    frame, _ = _input_with_bad_rows(100)
    write_table(frame, f"s3://{WORK}/in/small.csv")
    request = BatchRequest(
        model="credit", input_uri=f"s3://{WORK}/in/small.csv", run_id="strict", max_reject_share=0.01
    )
    summary = batch.run_local(SETTINGS, request)
    assert summary["status"] == "FAILED" and summary["manifest"]["predictions_uri"] is None
    assert "2 of 100 rows rejected" in summary["manifest"]["reasons"][0]


def test_a_shard_failing_once_is_retried_and_one_always_failing_fails_the_run(stage):
    from sluice.pipelines.datasource import write_table

    write_table(datasets.credit(400, seed=3), f"s3://{WORK}/in/f.csv")

    def run(run_id: str, faults: dict) -> dict:
        request = BatchRequest(
            model="credit", input_uri=f"s3://{WORK}/in/f.csv", run_id=run_id, shard_rows=100, faults=faults
        )
        return batch.run_local(SETTINGS, request)

    once = run("once", {"shard-00001": 1})
    assert once["status"] == "SUCCEEDED" and once["manifest"]["rows_out"] == 400
    always = run("always", {"shard-00002": 99})
    assert always["status"] == "FAILED"
    assert [s["shard"] for s in always["manifest"]["failed_shards"]] == ["shard-00002"]
    assert always["manifest"]["failed_shards"][0]["error"] == "BatchTransientError"


def test_postprocess_reads_result_writer_files_including_failed_children(stage):
    # Given a ResultWriter manifest with one succeeded and one failed child (AWS's file layout)
    s3 = stage["s3"]
    from sluice.pipelines.datasource import write_table

    write_table(datasets.credit(50, seed=4), f"s3://{WORK}/in/rw.csv")
    state = batch_preprocess.preprocess(
        SETTINGS, BatchRequest(model="credit", input_uri=f"s3://{WORK}/in/rw.csv", run_id="rw", shard_rows=25)
    )
    ok = batch_score.score_shard(
        SETTINGS, {"key": f"{state['shard_prefix']}shard-00000.parquet", "run": state["run"]}
    )
    s3.put_object(Bucket=WORK, Key="mr/SUCCEEDED_0.json", Body=json.dumps([{"Output": json.dumps(ok)}]))
    failed_input = json.dumps({"key": f"{state['shard_prefix']}shard-00001.parquet"})
    s3.put_object(
        Bucket=WORK,
        Key="mr/FAILED_0.json",
        Body=json.dumps([{"Input": failed_input, "Error": "States.Timeout", "Cause": "slow"}]),
    )
    files = {"SUCCEEDED": [{"Key": "mr/SUCCEEDED_0.json"}], "FAILED": [{"Key": "mr/FAILED_0.json"}]}
    s3.put_object(Bucket=WORK, Key="mr/manifest.json", Body=json.dumps({"ResultFiles": files}))
    # When postprocess runs on it
    summary = batch_postprocess.postprocess(
        SETTINGS, {**state, "map": {"ResultWriterDetails": {"Bucket": WORK, "Key": "mr/manifest.json"}}}
    )
    # Then the failed child is named in the manifest and the run fails
    assert summary["status"] == "FAILED"
    assert summary["manifest"]["failed_shards"] == [
        {"shard": "shard-00001", "error": "States.Timeout", "cause": "slow"}
    ]


def test_unknown_model_and_missing_input_are_user_errors(stage):
    from sluice.errors import NotFound

    with pytest.raises(SluiceError, match="nope"):
        batch_preprocess.preprocess(
            SETTINGS, BatchRequest(model="nope", input_uri=f"s3://{WORK}/x.csv", run_id="r")
        )
    with pytest.raises(NotFound, match="does not exist"):
        batch_preprocess.preprocess(
            SETTINGS, BatchRequest(model="credit", input_uri=f"s3://{WORK}/x.csv", run_id="r")
        )


def test_notify_failure_publishes_failed_shards_and_writes_a_manifest_when_none_exists(stage):
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="batch")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    settings = Settings(**{**SETTINGS.__dict__, "notify_topic_arn": topic})
    # a run that failed before preprocess finished (its input plus the caught error)
    state = {
        "model": "credit",
        "input_uri": "s3://nowhere/x.csv",
        "error": {"Error": "NotFound", "Cause": json.dumps({"errorMessage": "data file does not exist"})},
    }
    message = batch_notify.notify_failure(settings, state)
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert body == message and body["model"] == "credit"
    assert body["reasons"] == ["NotFound: data file does not exist"]


# -- endpoint scorer ---------------------------------------------------------------------------------


class _FakeEndpoint(BaseHTTPRequestHandler):
    scorer = None
    status = 200
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(dict(self.headers))
        if type(self).status != 200:
            payload, status = {"error": "nope"}, type(self).status
        else:
            payload, status = type(self).scorer.score(body, request_id="r").to_dict(), 200
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_endpoint(trained):
    from sluice.models.schema import FeatureSchema
    from sluice.serving.predictors import SklearnPredictor
    from sluice.serving.scoring import Scorer

    features = trained.train[trained.spec.features]
    _FakeEndpoint.scorer = Scorer(
        name="credit",
        version=4,
        flavour="sklearn",
        schema=FeatureSchema.infer(features, categorical=list(trained.spec.categorical)),
        preprocessor=trained.preprocessor,
        predictor=SklearnPredictor(trained.estimator),
    )
    _FakeEndpoint.status, _FakeEndpoint.seen = 200, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prod/predict"
    server.shutdown()


def test_endpoint_scorer_signs_requests_and_matches_predict(fake_endpoint, trained):
    frame = datasets.credit(1_234, seed=8)
    scorer = EndpointShardScorer(fake_endpoint, region=REGION, chunk_rows=500)
    labels, probabilities = scorer.predict(frame[list(trained.spec.features)])
    assert np.array_equal(labels, trained.estimator.predict(trained.preprocessor.transform(frame)))
    assert probabilities is not None and len(probabilities) == 1_234 and scorer.version == 4
    assert len(_FakeEndpoint.seen) == 3
    assert all(
        h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/") for h in _FakeEndpoint.seen
    )
    assert all("/execute-api/aws4_request" in h["Authorization"] for h in _FakeEndpoint.seen)


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, BatchTransientError), (429, BatchTransientError), (400, ShardError)],
)
def test_endpoint_errors_are_transient_or_final(fake_endpoint, status, error):
    _FakeEndpoint.status = status
    scorer = EndpointShardScorer(fake_endpoint, region=REGION)
    with pytest.raises(error, match=str(status)):
        scorer.predict(datasets.credit(5, seed=1).drop(columns=[datasets.TARGET]))


def test_unreachable_endpoint_is_transient():
    scorer = EndpointShardScorer("http://127.0.0.1:9/predict", region=REGION, timeout_s=2)
    with pytest.raises(BatchTransientError, match="unreachable"):
        scorer.predict(datasets.credit(3, seed=1).drop(columns=[datasets.TARGET]))


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_here_scores_in_process_and_exits_by_run_status(stage, monkeypatch, capsys):
    from sluice.cli import main
    from sluice.pipelines.datasource import write_table

    for key, value in {
        "SLUICE_REGISTRY_TABLE": TABLE,
        "SLUICE_REGISTRY_BUCKET": ARTIFACTS,
        "SLUICE_WORK_BUCKET": WORK,
        "SLUICE_CAPTURE_BUCKET": CAPTURE,
    }.items():
        monkeypatch.setenv(key, value)
    frame, _ = _input_with_bad_rows(3_000)
    write_table(frame, f"s3://{WORK}/in/cli.csv")
    args = ["batch", "run", "--model", "credit", "--input", f"s3://{WORK}/in/cli.csv", "--here", "--json"]
    assert main([*args, "--shard-rows", "1000"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rejects"], manifest["shards"]) == (
        3_000,
        2_998,
        2,
        3,
    )
    # too many rejects: the run fails (exit 1); a bad argument is the user's error (exit 2)
    assert main([*args, "--max-reject-share", "0"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "FAILED"
    assert main([*args, "--max-reject-share", "3"]) == 2
    assert "max_reject_share" in capsys.readouterr().err


def test_cli_output_takes_a_folder_name_under_the_models_prefix_or_the_uri():
    from sluice.cli.batch import _output_uri

    assert _output_uri("today", model="m", work_bucket="w") == "s3://w/batch/output/m/today/"
    assert _output_uri("s3://w/batch/output/m/x/", model="m", work_bucket="w") == "s3://w/batch/output/m/x/"
    assert _output_uri("", model="m", work_bucket="w") == ""


def test_a_shard_whose_output_is_not_stored_is_not_captured(stage, monkeypatch):
    # Given a shard whose scored output fails to store (the Map retries the shard)
    from sluice.pipelines.batch_shards import shard_name
    from sluice.pipelines.datasource import write_table

    write_table(datasets.credit(50, seed=3), f"s3://{WORK}/in/f.parquet")
    request = BatchRequest(
        model="credit", input_uri=f"s3://{WORK}/in/f.parquet", run_id="nostore", shard_rows=50
    )
    state = batch_preprocess.preprocess(SETTINGS, request, registry=stage["registry"])
    key = f"{state['shard_prefix']}{shard_name(0)}.parquet"

    def fail(frame):
        raise OSError("the work bucket refused the scored shard")

    monkeypatch.setattr(batch_score, "parquet_bytes", fail)
    # When the shard is scored, the step fails
    with pytest.raises(OSError):
        batch_score.score_shard(SETTINGS, {"key": key, "run": state["run"]})
    # Then its rows were not captured, so the retry captures them once
    listed = stage["s3"].list_objects_v2(Bucket=CAPTURE, Prefix="capture/")
    assert listed.get("KeyCount", 0) == 0
    monkeypatch.undo()
    batch_score.score_shard(SETTINGS, {"key": key, "run": state["run"]})
    listed = stage["s3"].list_objects_v2(Bucket=CAPTURE, Prefix="capture/")
    assert listed["KeyCount"] == 1
