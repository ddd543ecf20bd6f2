"""The drift job's fan-out: planning children by window size, and merging children's sketches."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import boto3
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from sluice.errors import SluiceError
from sluice.monitoring import cloudwatch, drift_job, fanout
from sluice.monitoring.estimation import Calibrator, PerformanceSketch
from sluice.monitoring.profile import DriftProfile
from sluice.monitoring.window import DriftPlan, VersionWindow, split_objects
from sluice.registry.bundle import CALIBRATION_ARTIFACT
from sluice_demo.datasets import CATEGORICAL, credit
from tests.unit.test_monitoring import BUCKET, FEATURES, MODEL, NOW, SETTINGS, FakeRegistry, capture

MIB = 2**20


def _plan(*sizes_per_version: list[int]) -> DriftPlan:
    versions = [
        VersionWindow(v + 1, [(f"v{v}/{i}", size) for i, size in enumerate(sizes)])
        for v, sizes in enumerate(sizes_per_version)
    ]
    return DriftPlan(model=MODEL, start=NOW - timedelta(hours=1), end=NOW, versions=versions)


def test_a_window_that_fits_one_child_is_one_child_even_over_versions():
    # Given 3 MiB of capture over two versions and 4 MiB per child
    plan = _plan([MIB] * 2, [MIB])
    # Then the job checks it itself
    assert fanout.children(plan, bytes_per_child=4 * MIB) == 1


@pytest.mark.parametrize(
    ("objects", "per_child", "expected"), [(64, 16, 4), (64, 4, 16), (64, 1, 64), (3, 1, 3)]
)
def test_the_child_count_follows_the_window_size(objects, per_child, expected):
    # Given `objects` capture objects of 1 MiB each, and `per_child` MiB per child
    plan = _plan([MIB] * objects)
    # Then the window is cut into total / per-child children, at most one per object
    assert fanout.children(plan, bytes_per_child=per_child * MIB) == expected


def test_each_version_gets_its_own_children_and_the_count_is_capped():
    plan = _plan([MIB] * 8, [MIB] * 2)
    groups = fanout.child_groups(plan, bytes_per_child=2 * MIB)
    assert [v for v, _ in groups] == [1, 1, 1, 1, 2]
    assert fanout.children(_plan([MIB] * 100), bytes_per_child=1, max_children=10) == 10


@given(st.lists(st.integers(0, 10_000), max_size=60), st.integers(1, 20_000))
def test_groups_cover_every_object_once_in_order_and_balance_bytes(sizes, per_child):
    objects = [(f"k{i}", s) for i, s in enumerate(sizes)]
    groups = split_objects(objects, bytes_per_child=per_child, max_groups=1000)
    assert [o for g in groups for o in g] == objects
    total = sum(sizes)
    count = max(1, min(math.ceil(total / per_child), len(objects)))
    assert len(groups) <= count
    # each group holds about its share: at most one object more
    assert all(sum(s for _, s in g) <= total / count + max(sizes, default=0) for g in groups)


def test_performance_sketches_round_trip_through_json_exactly():
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    sketch = PerformanceSketch().add(scores, scores >= 0.5)
    again = PerformanceSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert again.estimate() == sketch.estimate()


@pytest.fixture(scope="module")
def profile():
    return DriftProfile(categorical=list(CATEGORICAL)).fit(credit(5000, seed=0)[FEATURES]).to_dict()


def _registry(profile) -> FakeRegistry:
    registry = FakeRegistry(profile, metrics={"f1": 0.8, "accuracy": 0.8})
    registry.blobs[CALIBRATION_ARTIFACT] = Calibrator().to_json()
    registry.artifacts = {**registry.artifacts, CALIBRATION_ARTIFACT: {}}
    registry.events = [{"kind": "deployed", "version": v, "detail": {}} for v in (1, 2)]
    return registry


def _approx_equal(a, b, where="report"):
    """Equal, floats to 1e-9 relative (per-bin sums add in another order when merged)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _approx_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _approx_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


def _fan_out(plan, registry, *, bytes_per_child):
    """Run the fan-out's steps in this process, as the state machine does: sketch each item, merge."""
    written = fanout.write_fanout(SETTINGS, plan, fanout.child_groups(plan, bytes_per_child=bytes_per_child))
    items = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=written.items_key)["Body"].read())
    for item in items:
        fanout.sketch_group(SETTINGS, item, registry=registry, chunk_rows=97)
    runs = fanout.merge_groups(SETTINGS, written.plan_key, registry=registry, write_reports=False)
    return written, runs


def test_sketches_of_groups_merge_to_the_single_process_report(profile):
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        # Given two served versions, one shifted, captured as many small requests with probabilities
        registry = _registry(profile)
        start = NOW - timedelta(minutes=50)
        rng = np.random.default_rng(3)
        for version, shift in ((1, None), (2, {"income": 2.0})):
            frame = credit(1200, seed=version, shift=shift)
            probabilities = rng.random(len(frame))
            capture(
                frame,
                version=version,
                start=start,
                predictions=(probabilities >= 0.5).astype(int),
                probabilities=probabilities,
            )
        plan = drift_job.plan_drift(SETTINGS, model=MODEL, now=NOW, registry=registry)
        # When the window is checked in one process and fanned out over several children
        single = drift_job.drift_runs(
            SETTINGS, model=MODEL, plan=plan, registry=registry, write_reports=False
        )
        written, fanned = _fan_out(plan, registry, bytes_per_child=max(1, plan.bytes // 7))
        # Then there were several children per version, and the reports and estimates agree
        assert written.children >= 6
        assert [r.version for r in fanned] == [r.version for r in single] == [1, 2]
        for one, many in zip(single, fanned, strict=True):
            assert many.report.target.n_rows == one.report.target.n_rows == 1200
            assert many.report.drifted_features == one.report.drifted_features
            _approx_equal(one.report.to_dict(), many.report.to_dict())
            _approx_equal(one.estimate.to_dict(), many.estimate.to_dict())
        assert "income" in fanned[1].report.drifted_features
        # And the run's work files are gone once it has published
        work = written.plan_key.removesuffix("plan.json")
        assert boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=work)["KeyCount"] == 0
        # And both publish the same metrics, EstimatedF1Delta among them
        published = [cloudwatch.drift_metric_data(runs) for runs in (single, fanned)]
        _approx_equal(*[[(d["MetricName"], d["Dimensions"], d["Value"]) for d in data] for data in published])
        names = {d["MetricName"] for d in published[0]}
        assert {"EstimatedF1", "EstimatedF1Delta"} <= names


@pytest.mark.parametrize(
    "plan_key", ["reports/drift/x/plan.json", "labels/plan.json", "reports/drift-work/m/r/x"]
)
def test_a_merge_of_a_key_outside_the_work_prefix_is_refused(plan_key):
    with pytest.raises(SluiceError, match="plan_key"):
        fanout.merge_groups(SETTINGS, plan_key, registry=object())


def test_estimated_f1_delta_is_the_estimate_minus_the_registered_f1(profile):
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        registry = _registry(profile)
        probabilities = np.random.default_rng(1).random(300)
        capture(
            credit(300, seed=1),
            version=1,
            start=NOW - timedelta(minutes=30),
            predictions=(probabilities >= 0.5).astype(int),
            probabilities=probabilities,
        )
        (run,) = drift_job.drift_runs(
            SETTINGS, model=MODEL, versions=[1], now=NOW, registry=registry, write_reports=False
        )
        data = cloudwatch.drift_metric_data([run])
        deltas = [d for d in data if d["MetricName"] == "EstimatedF1Delta"]
        # one per version and the model's roll-up (worst version)
        assert [d["Value"] for d in deltas] == [pytest.approx(run.estimate.f1 - 0.8)] * 2


def test_the_job_hands_a_large_window_to_the_state_machine_and_checks_a_small_one_itself(profile):
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        machine = boto3.client("stepfunctions").create_state_machine(
            name="sluice-test-drift",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        registry = _registry(profile)
        capture(credit(400, seed=1), version=1, start=NOW - timedelta(minutes=30))
        options = {
            "model": MODEL,
            "versions": [1],
            "now": NOW,
            "registry": registry,
            "state_machine_arn": machine,
        }
        # Given a window of 8 capture objects
        plan = drift_job.plan_drift(SETTINGS, model=MODEL, versions=[1], now=NOW, registry=registry)
        assert len(plan.versions[0].objects) == 8
        # When a child may take the whole window, the job checks it itself
        small = fanout.run_drift(SETTINGS, bytes_per_child=plan.bytes, **options)
        assert small.fanout is None and small.runs[0].report.target.n_rows == 400
        # When a child may take a quarter, the job writes the plan and starts the state machine
        large = fanout.run_drift(SETTINGS, bytes_per_child=plan.bytes // 4 + 1, **options)
        assert large.runs == [] and large.fanout.children == 4
        described = boto3.client("stepfunctions").describe_execution(executionArn=large.fanout.execution_arn)
        assert json.loads(described["input"]) == {
            "model": MODEL,
            "plan_key": large.fanout.plan_key,
            "items_key": large.fanout.items_key,
        }


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"model": "m", "min_effect": 0.02, "bytes_per_child": 1000},
            {"min_effect": 0.02, "bytes_per_child": 1000},
        ),
        ({"model": "m"}, {"min_effect": None, "bytes_per_child": None}),
    ],
)
def test_the_monitor_event_takes_the_models_min_effect_and_a_child_size(event, expected):
    from sluice.handlers.monitor import MonitorEvent

    parsed = MonitorEvent.parse(event)
    assert {k: getattr(parsed, k) for k in expected} == expected


@pytest.mark.parametrize("event", [{"model": "m", "min_effect": 1.5}, {"model": "m", "bytes_per_child": 0}])
def test_a_bad_min_effect_or_child_size_is_refused(event):
    from sluice.errors import SluiceError
    from sluice.handlers.monitor import MonitorEvent

    with pytest.raises(SluiceError, match=r"min_effect|bytes_per_child"):
        MonitorEvent.parse(event)
