"""Threat: a batch input chooses what runs or where it writes, beyond its pipeline's scope.

Whoever may start the batch state machine (``states:StartExecution``, an object dropped under the
input prefix) writes its input. Each test below sends the attacker's input to the first step as
the state machine does (the preprocess handler, with the environment the construct sets) and
checks that it is refused, naming the field, before anything is scored or written:

* a ``version`` that is Pending or Rejected, or a ``model`` other than the pipeline's own;
* a ``run_id`` of the caller's choosing, or another run's id reused as an execution name;
* an ``output_uri`` outside ``s3://<work bucket>/batch/output/<model>/``, or another run's folder;
* ``shard_rows`` and ``max_reject_share`` out of bounds (``shard_rows=1``: one Lambda per row);
* ``faults`` (the failure drill) in a stage whose ``cdk.json`` does not enable it (prod).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from infra.config import AppConfig
from sluice.errors import SluiceError
from sluice.handlers import batch_preprocess
from sluice.models.packaging import bundle_from_training
from sluice.models.training import train
from sluice.pipelines.datasource import write_table
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving import scoring
from sluice_demo import datasets

REGION = "eu-west-1"
TABLE, ARTIFACTS, WORK = "sec-registry", "sec-artifacts", "sec-work"
MODEL, OTHER = "credit", "fraud"
INPUT = f"s3://{WORK}/batch/input/{MODEL}/today.csv"
OUTPUT = f"s3://{WORK}/batch/output/{MODEL}/"


@dataclass
class Context:
    function_name: str = "batch-preprocess"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:batch-preprocess"
    aws_request_id: str = "lambda-request"


@pytest.fixture(scope="module")
def trained():
    return train(datasets.credit(1_000, seed=5), datasets.credit_spec(max_iter=200))


@pytest.fixture
def stage(trained, monkeypatch):
    """A prod-like stage: v1 Approved (champion), v2 Pending, v3 Rejected; another model, Approved."""
    with mock_aws():
        registry = create_storage(TABLE, ARTIFACTS)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=WORK, CreateBucketConfiguration={"LocationConstraint": REGION})
        bundle = bundle_from_training(trained, onnx=False)
        for _ in range(3):
            registry.register(MODEL, bundle, lineage=Lineage())
        registry.approve(MODEL, 1, actor="approver")
        registry.set_alias(MODEL, "champion", 1, actor="approver")
        registry.reject(MODEL, 3, actor="approver", reason="worse")
        registry.register(OTHER, bundle, lineage=Lineage())
        registry.approve(OTHER, 1, actor="approver")
        # As the construct sets them on the pipeline's functions (prod: no fault drill).
        for key, value in {
            "SLUICE_REGISTRY_TABLE": TABLE,
            "SLUICE_REGISTRY_BUCKET": ARTIFACTS,
            "SLUICE_WORK_BUCKET": WORK,
            "SLUICE_MODEL_NAME": MODEL,
            "SLUICE_BATCH_FAULT_DRILL": "false",
        }.items():
            monkeypatch.setenv(key, value)
        write_table(datasets.credit(2_000, seed=6), INPUT)
        scoring.clear_cache()
        yield {"s3": s3, "registry": registry}
        scoring.clear_cache()


def _start(request: dict, execution: str = "attack") -> dict:
    """The first step, with the payload the state machine gives it."""
    return batch_preprocess.lambda_handler(
        {"request": {"model": MODEL, "input_uri": INPUT, **request}, "execution": execution}, Context()
    )


def _objects(s3, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=WORK, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=WORK, Key=o["Key"])["Body"].read() for o in listed}


def _refused(request: dict, field: str, *also: str, execution: str = "attack") -> None:
    with pytest.raises(SluiceError, match=f"'{field}'") as caught:
        _start(request, execution)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in also), message


# -- 1. only Approved versions, only the pipeline's own model -----------------------------------


@pytest.mark.parametrize(("version", "status"), [(2, "PendingManualApproval"), (3, "Rejected")])
def test_a_version_that_is_not_approved_is_refused_and_nothing_is_written(stage, version, status):
    _refused({"version": version}, "version", status, f"v{version}")
    assert _objects(stage["s3"], "batch/attack/") == {}
    assert _objects(stage["s3"], OUTPUT[len(f"s3://{WORK}/") :]) == {}


def test_the_approved_champion_still_runs(stage):
    state = _start({})
    assert (state["run"]["version"], state["rows_in"], state["shards"]) == (1, 2_000, 1)


def test_an_input_naming_another_model_is_refused(stage):
    with pytest.raises(SluiceError, match="'model'") as caught:
        batch_preprocess.lambda_handler(
            {"request": {"model": OTHER, "input_uri": INPUT}, "execution": "attack"}, Context()
        )
    assert MODEL in str(caught.value) and OTHER in str(caught.value)
    assert _objects(stage["s3"], "batch/attack/") == {}
    assert _objects(stage["s3"], f"batch/output/{OTHER}/") == {}


def test_a_pipeline_without_its_scope_refuses_to_run(stage, monkeypatch):
    # A function deployed without SLUICE_MODEL_NAME fails closed rather than scoring any model.
    monkeypatch.delenv("SLUICE_MODEL_NAME")
    with pytest.raises(SluiceError, match="SLUICE_MODEL_NAME"):
        _start({})


# -- 2. the run id is the pipeline's, and no run writes over another ------------------------------


def test_a_caller_chosen_run_id_is_refused(stage):
    _refused({"run_id": "victim"}, "run_id")


def test_reusing_another_runs_id_as_an_execution_name_cannot_overwrite_its_files(stage):
    # Given a finished preprocess of the victim's run (its shards and claimed output folder)
    _start({}, execution="victim")
    before = _objects(stage["s3"], "batch/victim/") | _objects(stage["s3"], "batch/output/credit/victim/")
    assert any(key.endswith(".parquet") for key in before)
    # When the attacker starts a run under the same name (the stage's other pipeline, or after
    # Step Functions has forgotten the name) with other data
    write_table(datasets.credit(1_500, seed=99), f"s3://{WORK}/batch/input/{MODEL}/evil.csv")
    with pytest.raises(SluiceError, match="'run_id'"):
        batch_preprocess.lambda_handler(
            {
                "request": {"model": MODEL, "input_uri": f"s3://{WORK}/batch/input/{MODEL}/evil.csv"},
                "execution": "victim",
            },
            Context(),
        )
    # Then the victim's files are byte for byte what they were
    after = _objects(stage["s3"], "batch/victim/") | _objects(stage["s3"], "batch/output/credit/victim/")
    assert after == before


def test_a_retried_step_re_enters_its_own_claims_but_a_reused_name_does_not(stage):
    arn = "arn:aws:states:eu-west-1:123456789012:execution:sluice-prod-credit-batch:daily"

    def preprocess(started: str) -> dict:
        payload = {"model": MODEL, "input_uri": INPUT}
        return batch_preprocess.lambda_handler(
            {"request": payload, "execution": "daily", "execution_id": arn, "started": started}, Context()
        )

    # The state machine retrying preprocess (same execution) goes on with the same run
    first = preprocess("2026-12-05T06:00:00Z")
    assert preprocess("2026-12-05T06:00:00Z")["shard_prefix"] == first["shard_prefix"]
    # The same name started again later (Step Functions forgets names after 90 days) is refused
    with pytest.raises(SluiceError, match="'run_id'"):
        preprocess("2027-03-10T06:00:00Z")


def test_an_output_uri_naming_another_runs_folder_is_refused(stage):
    _start({}, execution="victim")
    before = _objects(stage["s3"], "batch/output/credit/victim/")
    _refused({"output_uri": f"{OUTPUT}victim/"}, "output_uri", execution="attack")
    assert _objects(stage["s3"], "batch/output/credit/victim/") == before


# -- 3. outputs stay under the stage's prefix -------------------------------------------------


@pytest.mark.parametrize(
    "output_uri",
    [
        "s3://attacker-bucket/loot/",
        f"s3://{ARTIFACTS}/artifacts/credit/1/",
        f"s3://{WORK}/batch/input/{MODEL}/",
        f"s3://{WORK}/batch/output/{OTHER}/run/",
        f"s3://{WORK}/batch/output/{MODEL}/../../input/{MODEL}/",
        f"s3://{WORK}/batch/output/{MODEL}/",
        f"s3://{WORK}/batch/output/{MODEL}//x/",
        "/tmp/loot/",
        "file:///etc/",
    ],
)
def test_an_output_uri_outside_the_stage_prefix_is_refused(stage, output_uri):
    _refused({"output_uri": output_uri}, "output_uri", OUTPUT)
    assert _objects(stage["s3"], "batch/attack/") == {}


def test_an_output_folder_under_the_prefix_is_honoured(stage):
    state = _start({"output_uri": f"{OUTPUT}daily/2026-12-05"})
    assert state["output"] == f"{OUTPUT}daily/2026-12-05/"


# -- 4. bounded fan-out and reject allowance -----------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"shard_rows": 1}, "shard_rows"),
        ({"shard_rows": 999}, "shard_rows"),
        ({"shard_rows": 1_000_001}, "shard_rows"),
        ({"max_reject_share": 1.0}, "max_reject_share"),
        ({"max_reject_share": 0.51}, "max_reject_share"),
        ({"max_reject_share": -0.1}, "max_reject_share"),
    ],
)
def test_shard_rows_and_reject_share_out_of_bounds_are_refused(stage, request_, field):
    _refused(request_, field)
    assert _objects(stage["s3"], "batch/attack/") == {}


def test_the_bounds_themselves_are_accepted(stage):
    state = _start({"shard_rows": 1_000, "max_reject_share": 0.5})
    assert (state["shards"], state["max_reject_share"]) == (2, 0.5)


# -- 5. the failure drill only where cdk.json enables it ----------------------------------------


def test_faults_are_refused_where_the_drill_is_off(stage):
    _refused({"faults": {"shard-00000": 99}}, "faults", "batchFaultDrill")
    assert _objects(stage["s3"], "batch/attack/") == {}


def test_faults_are_accepted_where_the_drill_is_on(stage, monkeypatch):
    monkeypatch.setenv("SLUICE_BATCH_FAULT_DRILL", "true")
    assert _start({"faults": {"shard-00000": 1}})["run"]["faults"] == {"shard-00000": 1}


def test_cdk_json_enables_the_drill_in_dev_only():
    context = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
    config = AppConfig.from_context(context.get)
    assert {s.name: s.batch_fault_drill for s in config.stages} == {"dev": True, "prod": False}
