"""The monitoring job: drift over captured windows, metrics, reports, labels and concept drift."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
from moto import mock_aws

from sluice.errors import NotFound, SluiceError
from sluice.monitoring import cloudwatch, drift_job, quality, report_store, served
from sluice.monitoring import labels as label_store
from sluice.monitoring.estimation import Calibrator, estimate
from sluice.monitoring.profile import DriftProfile
from sluice.serving.capture import CaptureWriter, capture_records
from sluice.settings import Settings
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit

BUCKET = "capture-bucket"
MODEL = "credit-risk"
FEATURES = [*NUMERIC, *CATEGORICAL]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SETTINGS = Settings(capture_bucket=BUCKET)


@dataclass
class Record:
    version: int
    artifacts: dict
    metrics: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


class FakeRegistry:
    """The part of sluice.registry.store.ModelRegistry the monitoring job uses."""

    def __init__(self, profile: dict, *, metrics: dict | None = None, task: str = "classification"):
        self.blobs = {
            "profile.json": json.dumps(profile).encode(),
            "spec.json": json.dumps({"task": task}).encode(),
        }
        self.artifacts: dict = {"profile.json": {"sha256": "p"}, "spec.json": {}}
        self.metrics = metrics or {}
        self.events: list[dict] = []
        self.alias_map: dict[str, int] = {}

    def get(self, name, *, version=None, alias=None):
        return Record(version, self.artifacts, self.metrics)

    def fetch(self, name, version, artifact):
        return self.blobs[artifact]

    def history(self, name):
        return self.events

    def aliases(self, name):
        return self.alias_map


@pytest.fixture(scope="module")
def baseline():
    return credit(5000, seed=0)


@pytest.fixture(scope="module")
def profile(baseline):
    return DriftProfile(categorical=list(CATEGORICAL)).fit(baseline[FEATURES]).to_dict()


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield s3


def capture(
    frame, *, version: int, start: datetime, per_request: int = 50, predictions=None, probabilities=None
):
    """Capture ``frame`` as requests of ``per_request`` rows spread over the minutes after ``start``."""
    writer = CaptureWriter(bucket_name=BUCKET)
    records = frame[FEATURES].to_dict("records")
    ids = []
    for n, i in enumerate(range(0, len(records), per_request)):
        part = records[i : i + per_request]
        request_id = f"v{version}-req-{n}"
        ids.append(request_id)
        preds = [0] * len(part) if predictions is None else list(predictions[i : i + per_request])
        probs = None if probabilities is None else list(probabilities[i : i + per_request])
        writer.put(
            capture_records(
                request_id=request_id,
                model=MODEL,
                version=version,
                rows=part,
                predictions=preds,
                probabilities=probs,
                ts=start + timedelta(seconds=30 * n),
            )
        )
    return ids


def metric_values(namespace: str, name: str, dims: dict) -> list[float]:
    stats = boto3.client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": str(v)} for k, v in dims.items()],
        StartTime=NOW - timedelta(days=1),
        EndTime=NOW + timedelta(days=1),
        Period=60,
        Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in stats["Datapoints"]]


def test_without_routing_events_deployed_and_aliased_versions_are_served(profile):
    registry = FakeRegistry(profile)
    registry.events = [
        {"kind": "registered", "version": 7, "detail": {}},
        {"kind": "deployed", "version": 1, "detail": {}},
    ]
    registry.alias_map = {"champion": 3}
    assert served.served_versions(registry, MODEL) == [1, 3]


def route(version: int, weight: float) -> dict:
    return {"lambda_version": str(version), "model_version": version, "flavour": "sklearn", "weight": weight}


def test_the_newest_routing_decides_plus_versions_that_served_since_the_window_start(profile):
    # Given v2 canaried at 10% then rolled back, and v3 deployed but not routed yet
    registry = FakeRegistry(profile)
    registry.alias_map = {"champion": 1, "old": 9}
    registry.events = [
        {"kind": "deployed", "version": 1, "ts": "2026-11-25T09:00:00.000000Z", "detail": {}},
        {"kind": "deployed", "version": 2, "ts": "2026-11-25T09:10:00.000000Z", "detail": {}},
        {
            "kind": "traffic",
            "version": 2,
            "ts": "2026-11-25T09:20:00.000000Z",
            "detail": {"to": [route(1, 0.9), route(2, 0.1)]},
        },
        {
            "kind": "rolled_back",
            "version": 1,
            "ts": "2026-11-25T11:30:00.000000Z",
            "detail": {"from": [route(1, 0.9), route(2, 0.1)], "to": [route(1, 1.0), route(2, 0.0)]},
        },
        {"kind": "deployed", "version": 3, "ts": "2026-11-25T11:40:00.000000Z", "detail": {}},
    ]
    # Then a window starting after the rollback checks v1 (routed) and v3 (deployed since)
    assert served.served_versions(registry, MODEL, since=datetime(2026, 11, 25, 11, 35, tzinfo=UTC)) == [
        1,
        3,
    ]
    # And a window spanning the canary includes v2, which served part of it
    assert served.served_versions(registry, MODEL, since=datetime(2026, 11, 25, 11, 0, tzinfo=UTC)) == [
        1,
        2,
        3,
    ]


def test_versions_with_captured_data_are_checked_even_without_events(aws, profile):
    capture(credit(50, seed=11), version=5, start=NOW - timedelta(minutes=20))
    capture(credit(50, seed=11), version=6, start=NOW - timedelta(hours=5))
    assert served.captured_versions(BUCKET, model=MODEL, start=NOW - timedelta(hours=1), end=NOW) == [5]
    runs = drift_job.drift_runs(
        SETTINGS, model=MODEL, now=NOW, registry=FakeRegistry(profile), write_reports=False
    )
    assert [(r.version, r.report.target.n_rows) for r in runs] == [(5, 50)]


def test_drift_check_flags_the_shifted_version_publishes_metrics_and_writes_reports(aws, profile):
    # Given v1 serving data like its training data and v2 serving data with income shifted by 2 sigma
    start = NOW - timedelta(minutes=50)
    capture(credit(2000, seed=1), version=1, start=start)
    capture(credit(2000, seed=2, shift={"income": 2.0}), version=2, start=start)
    registry = FakeRegistry(profile)
    registry.events = [{"kind": "deployed", "version": v, "detail": {}} for v in (1, 2)]
    # When the drift job runs on the last hour
    runs = drift_job.drift_runs(SETTINGS, model=MODEL, now=NOW, registry=registry)
    # Then v2's income drifts and v1 shows no drift, over all 2,000 captured rows each
    by_version = {r.version: r.report for r in runs}
    assert by_version[1].target.n_rows == by_version[2].target.n_rows == 2000
    assert "income" in by_version[2].drifted_features
    assert by_version[1].drifted_features == []
    # And CloudWatch has the per-version, per-feature and roll-up values
    dims = {"Model": MODEL, "Version": 2}
    assert metric_values("Sluice/Drift", "DatasetDriftShare", dims) == [by_version[2].dataset_drift_share]
    assert metric_values("Sluice/Drift", "Drifted", {**dims, "Feature": "income"}) == [1.0]
    assert metric_values("Sluice/Drift", "PSI", {"Model": MODEL, "Feature": "income"}) == [
        pytest.approx(max(by_version[v]["income"].psi for v in (1, 2)))
    ]
    assert metric_values("Sluice/Drift", "Rows", {"Model": MODEL}) == [4000.0]
    # And each version has a JSON report (with its window) and an HTML report with plots
    document = json.loads(aws.get_object(Bucket=BUCKET, Key=runs[1].json_key)["Body"].read())
    assert document["version"] == 2 and document["window"]["end"] == "2026-11-25T12:00:00.000Z"
    assert document["report"]["drifted_features"] == by_version[2].drifted_features
    page = aws.get_object(Bucket=BUCKET, Key=runs[1].html_key)["Body"].read().decode()
    assert runs[1].html_key == "reports/drift/credit-risk/2/20261125T120000Z.html"
    assert "data:image/png;base64," in page and "income" in page


def test_a_calibrated_binary_classifier_gets_its_performance_estimated_without_labels(aws, profile):
    # Given a version registered with calibration.json and 1,000 captured rows with probabilities
    probabilities = np.random.default_rng(0).beta(2, 3, size=1000)
    predicted = (probabilities >= 0.5).astype(int)
    capture(
        credit(1000, seed=4),
        version=1,
        start=NOW - timedelta(minutes=40),
        predictions=predicted,
        probabilities=probabilities,
    )
    registry = FakeRegistry(profile, metrics={"f1": 0.8})
    registry.blobs["calibration.json"] = Calibrator().to_json()
    registry.artifacts["calibration.json"] = {"sha256": "c"}
    # When the drift job runs in chunks
    (run,) = drift_job.drift_runs(SETTINGS, model=MODEL, versions=[1], now=NOW, registry=registry, chunk_rows=64)
    # Then the estimate is that of all the window's probabilities at once, and it is published
    expected = estimate(probabilities, predicted)
    assert run.estimate is not None and run.estimate.rows == 1000
    assert run.estimate.f1 == pytest.approx(expected.f1) and run.estimate.roc_auc == pytest.approx(expected.roc_auc)
    assert run.summary()["estimated"]["f1"] == pytest.approx(expected.f1)
    for dims in ({"Model": MODEL, "Version": 1}, {"Model": MODEL}):
        assert metric_values("Sluice/Drift", "EstimatedF1", dims) == [pytest.approx(expected.f1)]
    # and the drift report shows the estimate beside the registered metrics
    page = aws.get_object(Bucket=BUCKET, Key=run.html_key)["Body"].read().decode()
    assert "Performance before labels" in page and f"{expected.f1:.3f}" in page
    document = json.loads(aws.get_object(Bucket=BUCKET, Key=run.json_key)["Body"].read())
    assert document["estimated"]["f1"] == pytest.approx(expected.f1) and document["registered"] == {"f1": 0.8}


def test_chunked_window_gives_the_same_report_as_one_chunk(aws, profile):
    capture(credit(600, seed=3, shift={"age": 1.0}), version=1, start=NOW - timedelta(minutes=30))
    registry = FakeRegistry(profile)
    options = dict(versions=[1], now=NOW, registry=registry, publish_metrics=False, write_reports=False)
    small = drift_job.run_drift_check(SETTINGS, model=MODEL, chunk_rows=7, **options)
    whole = drift_job.run_drift_check(SETTINGS, model=MODEL, chunk_rows=100_000, **options)
    assert_same(small[0].to_dict(), whole[0].to_dict())
    assert small[0].target.n_rows == 600


def test_a_version_without_traffic_in_the_window_publishes_only_zero_rows(aws, profile):
    registry = FakeRegistry(profile)
    (run,) = drift_job.drift_runs(
        SETTINGS, model=MODEL, versions=[4], now=NOW, registry=registry, html=False
    )
    assert run.report.target.n_rows == 0 and run.report.dataset_drift_share == 0.0
    assert metric_values("Sluice/Drift", "Rows", {"Model": MODEL, "Version": 4}) == [0.0]
    assert metric_values("Sluice/Drift", "DatasetDriftShare", {"Model": MODEL, "Version": 4}) == []


def test_drift_check_without_served_versions_names_the_model(aws, profile):
    with pytest.raises(NotFound, match="credit-risk"):
        drift_job.run_drift_check(SETTINGS, model=MODEL, now=NOW, registry=FakeRegistry(profile))


def test_drift_check_needs_the_capture_bucket(profile):
    with pytest.raises(SluiceError, match="SLUICE_CAPTURE_BUCKET"):
        drift_job.run_drift_check(Settings(), model=MODEL, registry=FakeRegistry(profile))


def test_latest_reports_returns_the_newest_report_per_version(aws, profile):
    capture(credit(200, seed=4), version=1, start=NOW - timedelta(minutes=90))
    registry = FakeRegistry(profile)
    for end in (NOW - timedelta(minutes=30), NOW):
        drift_job.drift_runs(SETTINGS, model=MODEL, versions=[1], now=end, registry=registry, html=False)
    (latest,) = report_store.latest_reports(SETTINGS, model=MODEL)
    assert latest["window"]["end"] == "2026-11-25T12:00:00.000Z"
    with pytest.raises(NotFound, match="no drift report stored for model 'other'"):
        report_store.latest_reports(SETTINGS, model="other")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "non-empty list"),
        ([{"label": 1}], r"labels\[0\]: 'request_id'"),
        ([{"request_id": "a"}], r"labels\[0\]: 'label' is missing"),
        ([{"request_id": "a", "label": None}], "'label' must be"),
        ([{"request_id": "a", "label": 1, "row": -1}], "'row' must be"),
    ],
)
def test_bad_labels_are_rejected_naming_the_field(labels, message):
    with pytest.raises(SluiceError, match=message):
        label_store.validate_labels(labels)


def test_label_files_parse_as_csv_or_json_lines():
    model, labels = label_store.parse_label_file(b"request_id,label,row\nr1,1,0\nr2,no,2\n", key="x.csv")
    assert model is None and labels == [
        {"request_id": "r1", "label": 1, "row": 0},
        {"request_id": "r2", "label": "no", "row": 2},
    ]
    model, labels = label_store.parse_label_file(
        b'{"model": "m", "request_id": "r", "label": 0}\n', key="x.jsonl"
    )
    assert model == "m" and labels == [{"request_id": "r", "label": 0}]
    with pytest.raises(SluiceError, match="CSV header lacks"):
        label_store.parse_label_file(b"id,label\n", key="x.csv")


def test_concept_drift_joins_labels_with_captured_predictions(aws, profile):
    # Given v1 predictions captured over 200 rows, half of them later labelled
    frame = credit(200, seed=5)
    truth = frame[TARGET].to_numpy()
    predictions = truth.copy()
    predictions[:20] = 1 - predictions[:20]  # 20 wrong predictions among the labelled rows
    ids = capture(
        frame, version=1, start=NOW - timedelta(minutes=40), per_request=10, predictions=predictions
    )
    labels = [{"request_id": ids[i // 10], "row": i % 10, "label": int(truth[i])} for i in range(100)]
    # When the labels arrive through the API payload and a dropped CSV file
    assert label_store.ingest_labels(SETTINGS, model=MODEL, labels=labels[:50], now=NOW) == 50
    csv_body = "request_id,row,label\n" + "".join(
        f"{x['request_id']},{x['row']},{x['label']}\n" for x in labels[50:]
    )
    aws.put_object(Bucket=BUCKET, Key=f"labels/incoming/{MODEL}/batch.csv", Body=csv_body.encode())
    assert (
        label_store.ingest_label_object(
            SETTINGS, bucket=BUCKET, key=f"labels/incoming/{MODEL}/batch.csv", now=NOW
        )
        == 50
    )
    # Normalised label objects are not re-ingested (no S3 event loop)
    stored = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix="labels/model=")["Contents"]]
    assert label_store.ingest_label_object(SETTINGS, bucket=BUCKET, key=stored[0]) == 0
    # And the concept check runs against v1 registered with accuracy 0.95
    registry = FakeRegistry(profile, metrics={"accuracy": 0.95, "f1": 0.9})
    (result,) = quality.run_concept_check(
        SETTINGS, model=MODEL, versions=[1], now=NOW, registry=registry, min_labels=10
    )
    # Then the 100 labelled rows are scored: 80 right out of 100
    assert result.labelled_rows == 100
    assert result.metrics["accuracy"] == pytest.approx(0.8)
    assert result.deltas["accuracy"] == pytest.approx(0.8 - 0.95)
    assert metric_values("Sluice/Quality", "AccuracyDelta", {"Model": MODEL}) == [pytest.approx(-0.15)]
    assert metric_values("Sluice/Quality", "F1", {"Model": MODEL, "Version": 1}) == [
        pytest.approx(result.metrics["f1"])
    ]
    # and the delta's exact interval is published as the bound the alarm compares: 80/100 right
    # is surely below a registered 0.95, so the whole interval is on the bad side
    interval = result.intervals["accuracy"]
    assert interval.low < -0.15 < interval.high < 0 and result.worse["accuracy"]
    assert metric_values("Sluice/Quality", "AccuracyDeltaBound", {"Model": MODEL}) == [
        pytest.approx(interval.high)
    ]


def test_concept_drift_of_a_regressor_is_mae_and_rmse_against_the_registered_ones(aws, profile):
    # Given a regression model's predictions captured over 60 rows, every one labelled later,
    # with errors of +2 on the first 30 rows and -1 on the rest
    frame = credit(60, seed=11)
    truth = np.linspace(10.0, 40.0, 60)
    predictions = truth + np.where(np.arange(60) < 30, 2.0, -1.0)
    ids = capture(
        frame, version=1, start=NOW - timedelta(minutes=20), per_request=10, predictions=predictions.tolist()
    )
    labels = [{"request_id": ids[i // 10], "row": i % 10, "label": float(truth[i])} for i in range(60)]
    assert label_store.ingest_labels(SETTINGS, model=MODEL, labels=labels, now=NOW) == 60
    # When the concept check runs against v1, registered with MAE 0.5 and RMSE 0.8
    registry = FakeRegistry(profile, metrics={"mae": 0.5, "rmse": 0.8}, task="regression")
    (result,) = quality.run_concept_check(
        SETTINGS, model=MODEL, versions=[1], now=NOW, registry=registry, min_labels=10
    )
    # Then MAE and RMSE are those of the live errors, with their deltas, and they are published
    expected_mae, expected_rmse = 1.5, float(np.sqrt((30 * 4 + 30 * 1) / 60))
    assert (result.task, result.labelled_rows) == ("regression", 60)
    assert result.metrics["mae"] == pytest.approx(expected_mae)
    assert result.metrics["rmse"] == pytest.approx(expected_rmse)
    assert result.deltas == pytest.approx({"mae": expected_mae - 0.5, "rmse": expected_rmse - 0.8})
    assert metric_values("Sluice/Quality", "MAE", {"Model": MODEL, "Version": 1}) == [
        pytest.approx(expected_mae)
    ]


def test_concept_check_below_min_labels_publishes_only_the_count(aws, profile):
    ids = capture(credit(20, seed=6), version=1, start=NOW - timedelta(minutes=5), per_request=10)
    label_store.ingest_labels(SETTINGS, model=MODEL, labels=[{"request_id": ids[0], "label": 0}], now=NOW)
    (result,) = quality.run_concept_check(
        SETTINGS, model=MODEL, versions=[1], now=NOW, registry=FakeRegistry(profile), min_labels=30
    )
    assert result.labelled_rows == 1 and result.metrics == {}
    assert metric_values("Sluice/Quality", "LabelledRows", {"Model": MODEL, "Version": 1}) == [1.0]
    assert metric_values("Sluice/Quality", "F1", {"Model": MODEL, "Version": 1}) == []


def assert_same(left, right, path="report"):
    """Equal structures, floats up to summation order (chunks add their sums in another order)."""
    if isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, rel=1e-9, abs=1e-12), path
    elif isinstance(left, dict):
        assert left.keys() == right.keys(), path
        for key in left:
            assert_same(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert left == right, path


# -- the `sluice monitor` command ---------------------------------------------------------------


@pytest.fixture
def cli_env(aws, profile, monkeypatch):
    monkeypatch.setenv("SLUICE_CAPTURE_BUCKET", BUCKET)
    registry = FakeRegistry(profile, metrics={"accuracy": 0.9})
    registry.events = [{"kind": "deployed", "version": 1, "detail": {}}]
    monkeypatch.setattr(drift_job, "open_registry", lambda settings, given: registry)
    monkeypatch.setattr(quality, "open_registry", lambda settings, given: registry)
    return registry


def test_cli_monitor_run_prints_the_drift_table_and_saves_the_html(cli_env, aws, tmp_path, capsys):
    from sluice.cli import main

    capture(
        credit(500, seed=7, shift={"income": 2.0}), version=1, start=datetime.now(UTC) - timedelta(minutes=10)
    )
    out = tmp_path / "report.html"
    assert main(["monitor", "run", "--model", MODEL, "--window", "30m", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "credit-risk v1" in printed and "DATASET DRIFT" in printed and "income" in printed
    assert out.read_text().startswith("<!DOCTYPE html>")
    # And `report` shows the stored report again, as JSON on request
    assert main(["monitor", "report", "--model", MODEL, "--json"]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert document["version"] == 1 and "income" in document["report"]["drifted_features"]


def test_cli_monitor_quality_prints_live_and_registered_metrics(cli_env, capsys):
    from sluice.cli import main

    frame = credit(40, seed=8)
    ids = capture(
        frame,
        version=1,
        start=datetime.now(UTC) - timedelta(minutes=10),
        per_request=10,
        predictions=frame[TARGET].to_numpy(),
    )
    label_store.ingest_labels(
        SETTINGS,
        model=MODEL,
        labels=[
            {"request_id": ids[i // 10], "row": i % 10, "label": int(frame[TARGET].iloc[i])}
            for i in range(40)
        ],
    )
    assert main(["monitor", "quality", "--model", MODEL, "--min-labels", "5", "--json", "--no-publish"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["labelled_rows"] == 40 and result["metrics"]["accuracy"] == 1.0
    assert result["deltas"]["accuracy"] == pytest.approx(0.1)


@pytest.mark.parametrize("argv", [["run", "--window", "soon"], ["report"]])
def test_cli_monitor_user_errors_exit_2_with_one_line(cli_env, capsys, argv):
    from sluice.cli import main

    assert main(["monitor", argv[0], "--model", MODEL, *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sluice: error:") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "minutes"), [("60m", 60), ("2h", 120), ("1d", 1440), ("90", 90), ("30s", 0.5)]
)
def test_window_parsing(text, minutes):
    from sluice.cli.monitor import parse_window

    assert parse_window(text) == minutes


def test_wasserstein_and_missing_rate_metrics_only_when_detailed(aws, profile):
    capture(credit(300, seed=12), version=1, start=NOW - timedelta(minutes=10))
    runs = drift_job.drift_runs(
        SETTINGS,
        model=MODEL,
        versions=[1],
        now=NOW,
        registry=FakeRegistry(profile),
        publish_metrics=False,
        write_reports=False,
    )

    def names(data):
        return {d["MetricName"] for d in data if any(x["Name"] == "Feature" for x in d["Dimensions"])}

    assert names(cloudwatch.drift_metric_data(runs)) == {"PSI", "JSDistance", "PValue", "Drifted"}
    assert names(cloudwatch.drift_metric_data(runs, detailed=True)) == {
        "PSI",
        "JSDistance",
        "PValue",
        "Drifted",
        "Wasserstein",
        "MissingRate",
    }


class RegistryWithoutBaseline(FakeRegistry):
    def get(self, name, *, version=None, alias=None):
        record = super().get(name, version=version, alias=alias)
        return Record(version, {} if version == 2 else record.artifacts, record.metrics)


def test_a_version_without_a_baseline_is_skipped_not_fatal(aws, profile):
    registry = RegistryWithoutBaseline(profile)
    runs = drift_job.drift_runs(
        SETTINGS,
        model=MODEL,
        versions=[1, 2],
        now=NOW,
        registry=registry,
        publish_metrics=False,
        write_reports=False,
    )
    assert [r.version for r in runs] == [1]
    with pytest.raises(NotFound, match="version 2 has no drift baseline"):
        drift_job.drift_runs(
            SETTINGS, model=MODEL, versions=[2], now=NOW, registry=registry, write_reports=False
        )


def test_cli_monitor_labels_uploads_a_csv_file(cli_env, aws, tmp_path, capsys):
    from sluice.cli import main

    path = tmp_path / "labels.csv"
    path.write_text("request_id,row,label\nr1,0,1\nr1,1,0\n")
    assert main(["monitor", "labels", "--model", MODEL, str(path)]) == 0
    assert "stored 2 label(s)" in capsys.readouterr().out
    today = datetime.now(UTC)  # labels are filed by the day received, which may turn meanwhile
    stored = list(
        label_store.iter_labels(
            BUCKET, model=MODEL, start=today - timedelta(days=1), end=today + timedelta(days=1)
        )
    )
    assert [(x["request_id"], x["row"], x["label"]) for x in stored] == [("r1", 0, 1), ("r1", 1, 0)]
    path.write_text("request_id,label\n,1\n")
    assert main(["monitor", "labels", "--model", MODEL, str(path)]) == 2
    assert "'request_id' must be a non-empty string" in capsys.readouterr().err
