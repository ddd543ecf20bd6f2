"""The data-drift job: compare each served version's captured window with its training baseline.

Three steps, which the single-process job (:func:`drift_runs`) and the fan-out
(:mod:`sluice.monitoring.fanout`) share: :func:`plan_drift` lists each served version's capture
objects in the window; :func:`sketch_objects` streams objects' rows through the version's
registered drift profile (``profile.json``) chunk by chunk into mergeable sketches;
:func:`finish_runs` compares the merged sketches, publishes CloudWatch metrics
(:mod:`sluice.monitoring.cloudwatch`) and writes a JSON and an HTML report
(:mod:`sluice.monitoring.report_store`). Memory depends on the chunk size, not on the window.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice.errors import NotFound
from sluice.monitoring.cloudwatch import drift_metric_data, publish
from sluice.monitoring.report_store import write_report
from sluice.monitoring.served import choose_versions, open_registry, resolve_window
from sluice.monitoring.window import (
    CaptureObject,
    DriftPlan,
    VersionWindow,
    iter_feature_chunks,
    list_objects,
)
from sluice.names import DRIFT_NAMESPACE
from sluice.serving.capture import format_ts
from sluice.settings import Settings

if TYPE_CHECKING:  # the drift statistics need pandas and scipy: loaded when a check runs
    from sluice.monitoring.estimation import Calibrator, Estimate, PerformanceSketch
    from sluice.monitoring.policy import DriftPolicy
    from sluice.monitoring.profile import DriftProfile
    from sluice.monitoring.report import DriftReport
    from sluice.monitoring.sketch import TargetSketch
    from sluice.registry.store import ModelRegistry

logger = logging.getLogger(__name__)

_profiles: dict[tuple[str, int, str], DriftProfile] = {}
_profiles_lock = threading.Lock()


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
    estimate: Estimate | None = None
    """Performance expected from the served probabilities (binary classifiers with ``calibration.json``)."""
    registered: dict[str, float] = field(default_factory=dict)
    """The version's registered (holdout) metrics, which the estimate is shown beside."""

    def summary(self) -> dict[str, Any]:
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
            "estimated": None if self.estimate is None else self.estimate.to_dict(),
        }


def load_profile(registry: ModelRegistry, model: str, version: int) -> DriftProfile:
    """The version's registered drift baseline, cached for warm invocations (artifacts are immutable)."""
    record = registry.get(model, version=version)
    info = record.artifacts.get("profile.json")
    if info is None:
        raise NotFound(f"model {model!r} version {version} has no drift baseline (profile.json)")
    key = (model, int(version), info.get("sha256", ""))
    with _profiles_lock:
        cached = _profiles.get(key)
    if cached is None:
        from sluice.monitoring.profile import DriftProfile

        cached = DriftProfile.from_dict(json.loads(registry.fetch(model, version, "profile.json")))
        with _profiles_lock:
            _profiles[key] = cached
    return cached


def load_calibrator(registry: ModelRegistry, model: str, version: int) -> Calibrator | None:
    """The version's ``calibration.json`` (binary classifiers), ``None`` if it has none."""
    from sluice.monitoring.estimation import Calibrator
    from sluice.registry.bundle import CALIBRATION_ARTIFACT

    if CALIBRATION_ARTIFACT not in registry.get(model, version=version).artifacts:
        return None
    return Calibrator.from_json(registry.fetch(model, version, CALIBRATION_ARTIFACT))


def plan_drift(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    window_minutes: float | None = None,
    registry: ModelRegistry | None = None,
) -> DriftPlan:
    """The window, the versions to check (served ones by default) and each one's capture objects.

    A version without a drift baseline is skipped with a warning; if none is left, ``NotFound``.
    """
    settings.require("capture_bucket")
    start, end = resolve_window(window, now=now, minutes=window_minutes)
    registry = open_registry(settings, registry)
    plan = DriftPlan(model=model, start=start, end=end, versions=[])
    for version in choose_versions(settings, registry, model, versions, start, end):
        try:
            load_profile(registry, model, version)
        except NotFound as missing:  # e.g. a version registered without a baseline: check the others
            logger.warning("skipping drift check of %s v%s: %s", model, version, missing)
            plan.skipped.append(str(missing))
            continue
        objects = list_objects(settings.capture_bucket, model=model, version=version, start=start, end=end)
        plan.versions.append(VersionWindow(version, objects))
    if not plan.versions:
        raise NotFound(f"no drift check was possible for model {model!r}: {'; '.join(plan.skipped)}")
    return plan


def sketch_objects(
    profile: DriftProfile,
    bucket: str,
    objects: Sequence[CaptureObject],
    *,
    start: datetime,
    end: datetime,
    chunk_rows: int,
    calibrator: Calibrator | None = None,
) -> tuple[TargetSketch, PerformanceSketch | None]:
    """The profile's sketch of the captured features of ``objects`` in ``[start, end)``, chunk by chunk.

    With a ``calibrator``, also the :class:`~sluice.monitoring.estimation.PerformanceSketch` of the
    rows' served probabilities (a binary classifier predicts positive at probability 0.5 or more).
    The single-process job calls it on a version's objects, a fan-out child on its group's.
    """
    import numpy as np
    import pandas as pd

    from sluice.monitoring.estimation import PerformanceSketch

    total = profile.partial(pd.DataFrame())
    performance = PerformanceSketch() if calibrator is not None else None
    chunks = iter_feature_chunks(
        bucket,
        objects,
        columns=list(profile.features_),
        start=start,
        end=end,
        chunk_rows=chunk_rows,
    )
    for frame, probabilities in chunks:
        total = total.merge(profile.partial(frame))
        if performance is not None:
            scores = probabilities[~np.isnan(probabilities)]
            performance.add(scores, scores >= 0.5, calibrator=calibrator)
        # Drop this chunk before the reader builds the next one: one chunk in memory at a time.
        del frame, probabilities
    return total, performance


def sketch_capture(
    profile: DriftProfile,
    bucket: str,
    *,
    model: str,
    version: int,
    start: datetime,
    end: datetime,
    chunk_rows: int,
    calibrator: Calibrator | None = None,
) -> tuple[TargetSketch, PerformanceSketch | None]:
    """:func:`sketch_objects` of every capture object of the version in ``[start, end)``."""
    objects = list_objects(bucket, model=model, version=version, start=start, end=end)
    return sketch_objects(
        profile,
        bucket,
        objects,
        start=start,
        end=end,
        chunk_rows=chunk_rows,
        calibrator=calibrator,
    )


def _registered_metrics(registry: ModelRegistry, model: str, version: int) -> dict[str, float]:
    metrics = registry.get(model, version=version).metrics or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _publish(runs: Sequence[DriftRun], *, detailed: bool) -> None:
    data = drift_metric_data(runs, detailed=detailed)
    publish(DRIFT_NAMESPACE, data)
    for run in runs:
        run.metrics_published = sum(
            1 for d in data if {"Name": "Version", "Value": str(run.version)} in d["Dimensions"]
        )


def finish_runs(
    settings: Settings,
    plan: DriftPlan,
    sketches: Mapping[int, tuple[TargetSketch, PerformanceSketch | None]],
    *,
    registry: ModelRegistry | None = None,
    policy: DriftPolicy | None = None,
    publish_metrics: bool = True,
    detailed_metrics: bool = False,
    write_reports: bool = True,
    html: bool = True,
) -> list[DriftRun]:
    """Compare each version's window sketch with its baseline, publish the metrics, write the reports.

    The last step of both the single-process job and the fan-out's merge, so both decide alike.
    """
    registry = open_registry(settings, registry)
    model, start, end = plan.model, plan.start, plan.end
    runs: list[DriftRun] = []
    for version in sorted(sketches):
        sketch, performance = sketches[version]
        report = load_profile(registry, model, version).compare(
            sketch,
            policy=policy,
            label=f"{model} v{version} capture {format_ts(start)} to {format_ts(end)}",
            baseline_label=f"{model} v{version} training data",
        )
        estimate = performance.estimate() if performance is not None and performance.rows else None
        run = DriftRun(model=model, version=version, start=start, end=end, report=report, estimate=estimate)
        run.registered = _registered_metrics(registry, model, version)
        runs.append(run)
    if publish_metrics:
        _publish(runs, detailed=detailed_metrics)
    if write_reports:
        for run in runs:
            write_report(settings, run, html=html)
    return runs


def drift_runs(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    window_minutes: float | None = None,
    registry: ModelRegistry | None = None,
    chunk_rows: int = 50_000,
    plan: DriftPlan | None = None,
    **options: Any,
) -> list[DriftRun]:
    """Check every served (or given) version of ``model`` over the window in this process.

    ``plan`` (from :func:`plan_drift`) skips the planning; ``options`` are :func:`finish_runs`'s
    (``policy``, ``publish_metrics``, ``detailed_metrics``, ``write_reports``, ``html``). See
    :func:`run_drift_check`.
    """
    registry = open_registry(settings, registry)
    if plan is None:
        plan = plan_drift(
            settings,
            model=model,
            versions=versions,
            window=window,
            now=now,
            window_minutes=window_minutes,
            registry=registry,
        )
    sketches = {
        part.version: sketch_objects(
            load_profile(registry, plan.model, part.version),
            settings.capture_bucket,
            part.objects,
            start=plan.start,
            end=plan.end,
            chunk_rows=chunk_rows,
            calibrator=load_calibrator(registry, plan.model, part.version),
        )
        for part in plan.versions
    }
    return finish_runs(settings, plan, sketches, registry=registry, **options)


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
