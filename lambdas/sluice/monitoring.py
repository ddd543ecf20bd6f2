"""The monitoring job: data drift and concept drift of served model versions.

Data drift (:func:`run_drift_check`). For each served version, stream the window's captured rows
(``sluice.capture.iter_capture``) through the version's registered drift profile
(``profile.json``) chunk by chunk, merge the sketches, compare, publish CloudWatch metrics and
write a JSON and an HTML report. Memory depends on the chunk size, not on the window.

Concept drift (:func:`run_concept_check`). Labels arrive later (``POST /labels`` or a file in
``labels/incoming/<model>/``) and are stored as JSON lines under
``labels/model=<m>/dt=YYYY-MM-DD/``. They are joined with the captured predictions by request id
and row, and the live metrics (F1, accuracy, AUC or MAE, RMSE) are compared with the metrics the
version was registered with.

CloudWatch metrics
------------------
``Sluice/Drift``, dimensions ``Model, Version, Feature``: ``PSI``, ``JSDistance``, ``PValue``,
``Drifted`` (0/1), and with ``detailed_metrics`` ``Wasserstein`` and ``MissingRate`` (each one
is a billed custom metric; every statistic is in the JSON report); ``Model, Version``: ``DatasetDriftShare``,
``DatasetDrift``, ``DriftedFeatures``, ``Rows``. Roll-ups over the served versions (the worst
one), which the alarms watch because versions change at deploy time: ``Model, Feature``:
``PSI``, ``Drifted``; ``Model``: ``DatasetDriftShare``, ``Rows``.

``Sluice/Quality``, dimensions ``Model, Version`` and the roll-up ``Model`` (worst version):
``F1``, ``Accuracy``, ``AUC``, ``MAE``, ``RMSE``, ``R2``, each with ``<name>Delta`` (live minus
registered), and ``LabelledRows``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.capture import format_ts, iter_capture, parse_ts, partition_prefix
from sluice.errors import NotFound, SluiceError
from sluice.settings import Settings

if TYPE_CHECKING:  # sluice.drift needs pandas and scipy, which the zip labels function lacks
    from sluice.drift import DriftPolicy, DriftProfile, DriftReport

logger = logging.getLogger(__name__)

DRIFT_NAMESPACE = "Sluice/Drift"
QUALITY_NAMESPACE = "Sluice/Quality"
SERVED_EVENTS = ("deployed", "traffic", "promoted", "rolled_back")
REPORTS_PREFIX = "reports/drift"
LABELS_PREFIX = "labels"
LABELS_INCOMING = "labels/incoming/"
DEFAULT_WINDOW = timedelta(minutes=60)
METRICS_PER_CALL = 500  # PutMetricData takes up to 1,000 values and 1 MB per call

# Drift statistic -> metric name, for FeatureDrift attributes. Each (model, version, feature,
# metric) is a billed custom metric, so the rest of the statistics stay in the JSON report
# unless ``detailed_metrics`` asks for them.
FEATURE_METRICS = {"psi": "PSI", "js_distance": "JSDistance", "p_value": "PValue"}
DETAILED_FEATURE_METRICS = {"wasserstein": "Wasserstein", "target_missing_rate": "MissingRate"}
QUALITY_METRICS = {
    "f1": "F1",
    "accuracy": "Accuracy",
    "roc_auc": "AUC",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R2",
}
# Which direction is worse, for the roll-up over versions (higher-is-better metrics take the min).
_LOWER_IS_WORSE = {"F1", "Accuracy", "AUC", "R2"}

_profiles: dict[tuple[str, int, str], DriftProfile] = {}
_profiles_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Helpers: windows, registry, metrics
# ---------------------------------------------------------------------------------------------


def resolve_window(
    window: tuple[datetime, datetime] | None, *, now: datetime | None = None, minutes: float | None = None
) -> tuple[datetime, datetime]:
    """``window`` as UTC datetimes, or the ``minutes`` (default 60) up to ``now``."""
    if window is not None:
        start, end = (w if w.tzinfo else w.replace(tzinfo=UTC) for w in window)
    else:
        end = now or datetime.now(UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        start = end - (timedelta(minutes=minutes) if minutes else DEFAULT_WINDOW)
    if end <= start:
        raise SluiceError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    return start.astimezone(UTC), end.astimezone(UTC)


def _registry(settings: Settings, registry: Any | None) -> Any:
    if registry is not None:
        return registry
    from sluice.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def served_versions(registry: Any, model: str, *, since: datetime | None = None) -> list[int]:
    """Versions the model serves, from the registry's audit trail.

    Traffic events (``traffic``, ``promoted``, ``rolled_back``) carry the routing they left
    (``detail.to``: routes with ``model_version`` and ``weight``); the newest one gives the
    versions with a weight above zero. Versions named by any serving event at or after ``since``
    (and the routes such an event replaced) are added: they served part of the window. So are
    deployed versions with no routing event yet. Without any routing event, every deployed or
    aliased version counts.
    """
    routed: set[int] | None = None
    deployed: set[int] = set()
    recent: set[int] = set()
    for event in registry.history(model):  # oldest first
        if event.get("kind") not in SERVED_EVENTS:
            continue
        detail = event.get("detail") or {}
        named = {int(event["version"])} if event.get("version") is not None else set()
        routes = detail.get("to")
        if isinstance(routes, list):
            routed = {
                int(r["model_version"])
                for r in routes
                if isinstance(r, Mapping)
                and r.get("model_version") is not None
                and float(r.get("weight", 0)) > 0
            }
            named |= {
                int(r["model_version"])
                for r in routes
                if isinstance(r, Mapping) and r.get("model_version") is not None
            }
            deployed -= named
        previous = detail.get("from")
        if isinstance(previous, list):  # what served until this change
            named |= {
                int(r["model_version"])
                for r in previous
                if isinstance(r, Mapping)
                and r.get("model_version") is not None
                and float(r.get("weight", 0)) > 0
            }
        weights = detail.get("weights")
        if isinstance(weights, Mapping):
            named |= {int(v) for v in weights if str(v).isdigit()}
        if event.get("kind") == "deployed":
            deployed |= named
        if since is not None and event.get("ts") and parse_ts(event["ts"]) >= since:
            recent |= named
    if routed is None:
        found = deployed | recent
        aliases = getattr(registry, "aliases", None)
        if callable(aliases):
            found |= {int(v) for v in aliases(model).values()}
        return sorted(found)
    return sorted(routed | recent | deployed)


def captured_versions(bucket: str, *, model: str, start: datetime, end: datetime) -> list[int]:
    """Versions of ``model`` with captured objects in the hour partitions of ``[start, end)``."""
    client = aws.client("s3")
    base = f"{partition_prefix(model, 0).rsplit('/version=', 1)[0]}/"
    versions = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            tail = common["Prefix"][len(base) :].strip("/")
            if tail.startswith("version=") and tail[len("version=") :].isdigit():
                versions.append(int(tail[len("version=") :]))
    hours = []
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end + timedelta(hours=1):
        hours.append(hour)
        hour += timedelta(hours=1)
    found = []
    for version in sorted(versions):
        for hour in hours:
            listed = client.list_objects_v2(
                Bucket=bucket, Prefix=partition_prefix(model, version, hour), MaxKeys=1
            )
            if listed.get("KeyCount", 0):
                found.append(version)
                break
    return found


def _versions(
    settings: Settings,
    registry: Any,
    model: str,
    versions: Sequence[int] | None,
    start: datetime,
    end: datetime,
) -> list[int]:
    if versions:
        return sorted({int(v) for v in versions})
    chosen = set(served_versions(registry, model, since=start))
    chosen |= set(captured_versions(settings.capture_bucket, model=model, start=start, end=end))
    if not chosen:
        raise NotFound(
            f"model {model!r} has no served version (no deploy or traffic event, no alias, no captured data)"
        )
    return sorted(chosen)


def load_profile(registry: Any, model: str, version: int) -> DriftProfile:
    """The version's registered drift baseline, cached for warm invocations (artifacts are immutable)."""
    record = registry.get(model, version=version)
    info = record.artifacts.get("profile.json")
    if info is None:
        raise NotFound(f"model {model!r} version {version} has no drift baseline (profile.json)")
    key = (model, int(version), info.get("sha256", ""))
    with _profiles_lock:
        cached = _profiles.get(key)
    if cached is None:
        from sluice.drift import DriftProfile

        cached = DriftProfile.from_dict(json.loads(registry.fetch(model, version, "profile.json")))
        with _profiles_lock:
            _profiles[key] = cached
    return cached


def _datum(name: str, value: float, dims: Mapping[str, Any], when: datetime, unit: str = "None") -> dict:
    return {
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": str(v)} for k, v in dims.items()],
        "Timestamp": when,
        "Value": float(value),
        "Unit": unit,
    }


def publish(namespace: str, data: Sequence[dict]) -> int:
    """``PutMetricData`` in batches; returns how many values were sent."""
    client = aws.client("cloudwatch")
    for i in range(0, len(data), METRICS_PER_CALL):
        client.put_metric_data(Namespace=namespace, MetricData=list(data[i : i + METRICS_PER_CALL]))
    return len(data)


def _reports_bucket(settings: Settings) -> str:
    bucket = settings.reports_bucket or settings.capture_bucket
    if not bucket:
        raise SluiceError("missing setting(s): SLUICE_REPORTS_BUCKET or SLUICE_CAPTURE_BUCKET")
    return bucket


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------------------------------------
# Data drift
# ---------------------------------------------------------------------------------------------


@dataclass
class DriftRun:
    """One version's drift check: the report and where it was stored."""

    model: str
    version: int
    start: datetime
    end: datetime
    report: DriftReport
    json_key: str = ""
    html_key: str = ""
    metrics_published: int = 0

    def summary(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "start": format_ts(self.start),
            "end": format_ts(self.end),
            "rows": self.report.target.n_rows,
            "dataset_drift_share": self.report.dataset_drift_share,
            "dataset_drift": self.report.dataset_drift,
            "drifted_features": self.report.drifted_features,
            "json_key": self.json_key,
            "html_key": self.html_key,
            "metrics_published": self.metrics_published,
        }


def sketch_capture(
    profile: DriftProfile,
    bucket: str,
    *,
    model: str,
    version: int,
    start: datetime,
    end: datetime,
    chunk_rows: int,
):
    """The profile's sketch of the captured features of ``[start, end)``, one chunk at a time."""
    import pandas as pd

    columns = list(profile.features_)
    total = profile.partial(pd.DataFrame())
    for chunk in iter_capture(
        bucket, model=model, version=version, start=start, end=end, chunk_rows=chunk_rows
    ):
        frame = pd.DataFrame.from_records([r.get("features") or {} for r in chunk]).reindex(columns=columns)
        total = total.merge(profile.partial(frame))
        # Drop this chunk before the reader builds the next one: one chunk in memory at a time.
        del frame, chunk
    return total


def drift_runs(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    window_minutes: float | None = None,
    policy: DriftPolicy | None = None,
    registry: Any | None = None,
    publish_metrics: bool = True,
    detailed_metrics: bool = False,
    write_reports: bool = True,
    html: bool = True,
    chunk_rows: int = 50_000,
) -> list[DriftRun]:
    """Check every served (or given) version of ``model`` over the window; see :func:`run_drift_check`."""
    settings.require("capture_bucket")
    start, end = resolve_window(window, now=now, minutes=window_minutes)
    registry = _registry(settings, registry)
    chosen = _versions(settings, registry, model, versions, start, end)
    runs: list[DriftRun] = []
    skipped: list[str] = []
    for version in chosen:
        try:
            profile = load_profile(registry, model, version)
        except NotFound as missing:  # e.g. a version registered without a baseline: check the others
            logger.warning("skipping drift check of %s v%s: %s", model, version, missing)
            skipped.append(str(missing))
            continue
        sketch = sketch_capture(
            profile,
            settings.capture_bucket,
            model=model,
            version=version,
            start=start,
            end=end,
            chunk_rows=chunk_rows,
        )
        report = profile.compare(
            sketch,
            policy=policy,
            label=f"{model} v{version} capture {format_ts(start)} to {format_ts(end)}",
            baseline_label=f"{model} v{version} training data",
        )
        runs.append(DriftRun(model=model, version=version, start=start, end=end, report=report))
    if not runs:
        raise NotFound(f"no drift check was possible for model {model!r}: {'; '.join(skipped)}")
    if publish_metrics:
        data = drift_metric_data(runs, detailed=detailed_metrics)
        publish(DRIFT_NAMESPACE, data)
        for run in runs:
            run.metrics_published = sum(
                1 for d in data if {"Name": "Version", "Value": str(run.version)} in d["Dimensions"]
            )
    if write_reports:
        for run in runs:
            write_report(settings, run, html=html)
    return runs


def run_drift_check(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    **options: Any,
) -> list[DriftReport]:
    """Compare the captured window of each served version of ``model`` with its training baseline.

    Parameters
    ----------
    versions
        Versions to check; default the served ones (deploy/traffic events and aliases).
    window
        ``(start, end)``, default the 60 minutes up to ``now`` (``window_minutes`` changes it).
    options
        ``window_minutes``, ``policy``, ``registry``, ``publish_metrics``, ``detailed_metrics``, ``write_reports``,
        ``html``, ``chunk_rows``: see :func:`drift_runs`.

    Returns
    -------
    One report per version, in version order. Metrics go to CloudWatch (``Sluice/Drift``) and
    the reports to ``reports/drift/<model>/<version>/<end>.json|.html`` in the reports bucket.
    A version without captured rows in the window publishes only ``Rows = 0``.
    """
    runs = drift_runs(settings, model=model, versions=versions, window=window, now=now, **options)
    return [run.report for run in runs]


def drift_metric_data(runs: Sequence[DriftRun], *, detailed: bool = False) -> list[dict]:
    """CloudWatch values of the runs, per version and rolled up per model (worst version)."""
    per_feature = {**FEATURE_METRICS, **(DETAILED_FEATURE_METRICS if detailed else {})}
    data: list[dict] = []
    feature_psi: dict[tuple[str, str], float] = {}
    feature_drifted: dict[tuple[str, str], float] = {}
    share: dict[str, float] = {}
    rows: dict[str, float] = {}
    for run in runs:
        report, when = run.report, run.end
        version_dims = {"Model": run.model, "Version": run.version}
        n_rows = report.target.n_rows
        rows[run.model] = rows.get(run.model, 0.0) + n_rows
        data.append(_datum("Rows", n_rows, version_dims, when, "Count"))
        if n_rows == 0:
            continue  # nothing was compared: no drift values, so alarms see missing data
        data.append(_datum("DatasetDriftShare", report.dataset_drift_share, version_dims, when))
        data.append(_datum("DatasetDrift", float(report.dataset_drift), version_dims, when))
        data.append(_datum("DriftedFeatures", report.n_drifted, version_dims, when, "Count"))
        share[run.model] = max(share.get(run.model, 0.0), report.dataset_drift_share)
        for feature in report.features:
            dims = {**version_dims, "Feature": feature.name}
            data.append(_datum("Drifted", float(feature.drifted), dims, when))
            for attribute, name in per_feature.items():
                value = getattr(feature, attribute)
                if value is not None and value == value and abs(value) != float("inf"):
                    data.append(_datum(name, value, dims, when))
            key = (run.model, feature.name)
            feature_drifted[key] = max(feature_drifted.get(key, 0.0), float(feature.drifted))
            if feature.psi is not None:
                feature_psi[key] = max(feature_psi.get(key, 0.0), feature.psi)
    when = max((run.end for run in runs), default=datetime.now(UTC))
    for model, value in rows.items():
        data.append(_datum("Rows", value, {"Model": model}, when, "Count"))
    for model, value in share.items():
        data.append(_datum("DatasetDriftShare", value, {"Model": model}, when))
    for (model, feature), value in feature_drifted.items():
        data.append(_datum("Drifted", value, {"Model": model, "Feature": feature}, when))
    for (model, feature), value in feature_psi.items():
        data.append(_datum("PSI", value, {"Model": model, "Feature": feature}, when))
    return data


def report_key(model: str, version: int, end: datetime, suffix: str) -> str:
    return f"{REPORTS_PREFIX}/{model}/{int(version)}/{_stamp(end)}.{suffix}"


def write_report(settings: Settings, run: DriftRun, *, html: bool = True) -> None:
    """Store the run's JSON report (with its window) and, if ``html``, the rendered HTML report."""
    bucket = _reports_bucket(settings)
    client = aws.client("s3")
    document = {
        "model": run.model,
        "version": run.version,
        "window": {"start": format_ts(run.start), "end": format_ts(run.end)},
        "report": run.report.to_dict(),
    }
    run.json_key = report_key(run.model, run.version, run.end, "json")
    client.put_object(
        Bucket=bucket,
        Key=run.json_key,
        Body=json.dumps(document).encode(),
        ContentType="application/json",
    )
    if html:
        from sluice.drift_report import render_html

        run.html_key = report_key(run.model, run.version, run.end, "html")
        page = render_html(run.report, title=f"Sluice drift report: {run.model} v{run.version}")
        client.put_object(
            Bucket=bucket, Key=run.html_key, Body=page.encode(), ContentType="text/html; charset=utf-8"
        )


def latest_reports(settings: Settings, *, model: str, version: int | None = None) -> list[dict]:
    """The newest stored JSON report of each version of ``model`` (or of ``version``)."""
    bucket = _reports_bucket(settings)
    client = aws.client("s3")
    prefix = f"{REPORTS_PREFIX}/{model}/" + (f"{int(version)}/" if version is not None else "")
    newest: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith(".json"):
                continue
            folder = key.rsplit("/", 1)[0]
            if key > newest.get(folder, ""):
                newest[folder] = key
    if not newest:
        which = f"model {model!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"no drift report stored for {which} (run `sluice monitor run --model {model}`)")
    documents = []
    for key in sorted(newest.values()):
        document = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        document["key"] = key
        documents.append(document)
    return sorted(documents, key=lambda d: d["version"])


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def _label_value(value: Any, where: str) -> Any:
    if isinstance(value, bool | int | float | str) and value == value and value != "":
        return value
    raise SluiceError(f"{where}: 'label' must be a number, a string or a boolean, got {value!r}")


def validate_labels(labels: Any, *, where: str = "labels") -> list[dict]:
    """``[{"request_id", "label", "row"?}]`` checked and normalised (``row`` defaults to 0)."""
    if not isinstance(labels, list) or not labels:
        raise SluiceError(f"'{where}' must be a non-empty list of {{request_id, label}} objects")
    out = []
    for i, item in enumerate(labels):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise SluiceError(f"{at} must be an object with 'request_id' and 'label'")
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise SluiceError(f"{at}: 'request_id' must be a non-empty string")
        if "label" not in item:
            raise SluiceError(f"{at}: 'label' is missing")
        row = item.get("row", 0)
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise SluiceError(f"{at}: 'row' must be an integer >= 0, got {row!r}")
        out.append({"request_id": request_id, "row": row, "label": _label_value(item["label"], at)})
    return out


def _check_model(model: Any) -> str:
    if not isinstance(model, str) or not model or "/" in model or "=" in model:
        raise SluiceError(f"'model' must be a model name, got {model!r}")
    return model


def ingest_labels(
    settings: Settings, *, model: str, labels: list[Mapping[str, Any]], now: datetime | None = None
) -> int:
    """Store ground-truth labels for captured requests; returns how many were stored.

    They go to ``labels/model=<model>/dt=<day received>/<time>-<uuid>.jsonl`` in the capture
    bucket, one JSON line each: ``{"request_id", "row", "label", "received_at"}``.
    """
    model = _check_model(model)
    clean = validate_labels(labels)
    settings.require("capture_bucket")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    received = format_ts(moment)
    body = "".join(json.dumps({**item, "received_at": received}) + "\n" for item in clean)
    key = f"{LABELS_PREFIX}/model={model}/dt={moment:%Y-%m-%d}/{_stamp(moment)}-{uuid.uuid4().hex[:12]}.jsonl"
    aws.client("s3").put_object(Bucket=settings.capture_bucket, Key=key, Body=body.encode())
    return len(clean)


def _csv_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    return {"true": True, "false": False}.get(lowered, text)


def parse_label_file(body: bytes, *, key: str) -> tuple[str | None, list[dict]]:
    """Labels of a dropped file: CSV (header ``request_id,label[,row][,model]``) or JSON lines.

    Returns the model named in the file (``model`` column or field, if any) and the raw labels.
    """
    text = body.decode("utf-8-sig")
    models: set[str] = set()
    labels: list[dict] = []
    if key.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        missing = {"request_id", "label"} - set(reader.fieldnames or ())
        if missing:
            raise SluiceError(f"label file {key}: CSV header lacks {sorted(missing)}")
        for line in reader:
            item: dict[str, Any] = {"request_id": line["request_id"], "label": _csv_value(line["label"])}
            if line.get("row") not in (None, ""):
                item["row"] = _csv_value(line["row"])
            if line.get("model"):
                models.add(line["model"])
            labels.append(item)
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise SluiceError(f"label file {key}: line {number} is not JSON") from None
            if isinstance(item, Mapping) and item.get("model"):
                models.add(str(item["model"]))
                item = {k: v for k, v in item.items() if k != "model"}
            labels.append(item)
    if len(models) > 1:
        raise SluiceError(f"label file {key} names several models {sorted(models)}; use one file per model")
    return (models.pop() if models else None), labels


def ingest_label_object(settings: Settings, *, bucket: str, key: str, now: datetime | None = None) -> int:
    """Ingest a label file dropped at ``labels/incoming/<model>/<file>.csv|.jsonl``.

    ``now`` is the moment of reception (default: the current time), as in :func:`ingest_labels`.

    Keys outside ``labels/incoming/`` (for example the normalised labels this module writes) are
    ignored and return 0, so an S3 notification on ``labels/`` cannot loop.
    """
    if not key.startswith(LABELS_INCOMING):
        return 0
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    named, labels = parse_label_file(body, key=key)
    parts = key[len(LABELS_INCOMING) :].split("/")
    model = named or (parts[0] if len(parts) > 1 else None)
    if not model:
        raise SluiceError(f"label file {key}: put it under labels/incoming/<model>/ or add a 'model' column")
    return ingest_labels(settings, model=model, labels=validate_labels(labels, where=key), now=now)


def iter_labels(bucket: str, *, model: str, start: datetime, end: datetime) -> Iterator[dict]:
    """Stored labels of ``model`` received on the days from ``start`` to ``end`` (inclusive)."""
    client = aws.client("s3")
    paginator = client.get_paginator("list_objects_v2")
    day = start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        prefix = f"{LABELS_PREFIX}/model={model}/dt={day:%Y-%m-%d}/"
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                for line in body.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        day += timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# Concept drift
# ---------------------------------------------------------------------------------------------


@dataclass
class QualityResult:
    """Live metrics of one version on its labelled captured predictions."""

    model: str
    version: int
    task: str
    labelled_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    registered: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "task": self.task,
            "labelled_rows": self.labelled_rows,
            "metrics": self.metrics,
            "registered": self.registered,
            "deltas": self.deltas,
        }


def _task(registry: Any, model: str, version: int, registered: Mapping[str, float]) -> str:
    try:
        return str(json.loads(registry.fetch(model, version, "spec.json"))["task"])
    except Exception:  # an older or hand-made version: fall back on its metric names
        return "classification" if "f1" in registered or "accuracy" in registered else "regression"


def _join(
    labels: Mapping[tuple[str, int], Any], chunks: Iterable[list[dict]]
) -> tuple[list[Any], list[Any], list[Any]]:
    truth, predicted, scores = [], [], []
    for chunk in chunks:
        for record in chunk:
            label = labels.get((record.get("request_id"), int(record.get("row", 0))), _MISSING)
            if label is _MISSING or record.get("prediction") is None:
                continue
            truth.append(label)
            predicted.append(record["prediction"])
            scores.append(record.get("probability"))
    return truth, predicted, scores


_MISSING = object()


def run_concept_check(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    window_minutes: float | None = None,
    registry: Any | None = None,
    min_labels: int = 30,
    publish_metrics: bool = True,
) -> list[QualityResult]:
    """Live quality of each served version on the predictions of the window that have labels.

    Labels received from the window's start up to ``now`` are joined with the window's captured
    predictions by ``(request_id, row)``. Metrics (and their deltas against the registered
    metrics) are published to ``Sluice/Quality`` when at least ``min_labels`` rows matched;
    ``LabelledRows`` always is.
    """
    import numpy as np

    from sluice.training import prediction_metrics

    settings.require("capture_bucket")
    start, end = resolve_window(window, now=now, minutes=window_minutes)
    registry = _registry(settings, registry)
    chosen = _versions(settings, registry, model, versions, start, end)
    label_end = max(end, (now or datetime.now(UTC)).astimezone(UTC))
    labels: dict[tuple[str, int], Any] = {}
    for item in iter_labels(settings.capture_bucket, model=model, start=start, end=label_end):
        labels[(item["request_id"], int(item.get("row", 0)))] = item["label"]

    results = []
    for version in chosen:
        record = registry.get(model, version=version)
        registered = {k: float(v) for k, v in (record.metrics or {}).items() if isinstance(v, int | float)}
        task = _task(registry, model, version, registered)
        chunks = iter_capture(settings.capture_bucket, model=model, version=version, start=start, end=end)
        truth, predicted, scores = _join(labels, chunks)
        result = QualityResult(model=model, version=version, task=task, labelled_rows=len(truth))
        if len(truth) >= max(min_labels, 1):
            use_scores = task == "classification" and all(s is not None for s in scores)
            if task == "classification":
                truth_array, predicted_array = _aligned(truth, predicted)
            else:
                truth_array = np.asarray(truth, dtype=float)
                predicted_array = np.asarray(predicted, dtype=float)
            result.metrics = prediction_metrics(
                task,
                truth_array,
                predicted_array,
                scores=np.asarray(scores, dtype=float) if use_scores else None,
            )
            result.registered = {k: v for k, v in registered.items() if k in result.metrics}
            result.deltas = {k: result.metrics[k] - v for k, v in result.registered.items()}
        results.append(result)
    if publish_metrics:
        publish(QUALITY_NAMESPACE, quality_metric_data(results, when=end))
    return results


def _aligned(truth: list[Any], predicted: list[Any]) -> tuple[Any, Any]:
    """Labels and predictions as arrays of one type (a CSV label "1" matches a prediction 1)."""
    import numpy as np

    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in predicted)
    if numeric:
        try:
            return np.asarray([float(v) for v in truth]), np.asarray(predicted, dtype=float)
        except (TypeError, ValueError):
            pass
    return np.asarray([str(v) for v in truth]), np.asarray([str(v) for v in predicted])


def quality_metric_data(results: Sequence[QualityResult], *, when: datetime) -> list[dict]:
    data: list[dict] = []
    worst: dict[tuple[str, str], float] = {}
    rows: dict[str, float] = {}
    for result in results:
        dims = {"Model": result.model, "Version": result.version}
        data.append(_datum("LabelledRows", result.labelled_rows, dims, when, "Count"))
        rows[result.model] = rows.get(result.model, 0.0) + result.labelled_rows
        values = {QUALITY_METRICS[k]: v for k, v in result.metrics.items() if k in QUALITY_METRICS}
        values.update(
            {f"{QUALITY_METRICS[k]}Delta": v for k, v in result.deltas.items() if k in QUALITY_METRICS}
        )
        for name, value in values.items():
            data.append(_datum(name, value, dims, when))
            base = name.removesuffix("Delta")
            lower_is_worse = base in _LOWER_IS_WORSE
            key = (result.model, name)
            if key not in worst:
                worst[key] = value
            else:
                worst[key] = min(worst[key], value) if lower_is_worse else max(worst[key], value)
    for model, value in rows.items():
        data.append(_datum("LabelledRows", value, {"Model": model}, when, "Count"))
    for (model, name), value in worst.items():
        data.append(_datum(name, value, {"Model": model}, when))
    return data
