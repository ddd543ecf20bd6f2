"""The drift job's fan-out: a large window sketched by many Lambdas, merged and decided by one.

The scheduled job plans the window (:func:`~sluice.monitoring.drift_job.plan_drift`) and counts
children: each version's capture objects are cut into groups of about ``bytes_per_child`` bytes
(:func:`~sluice.monitoring.window.split_objects`). A window that makes one child is checked in
the job itself, as before. A larger one is written under ``reports/drift-work/<model>/<run>/``
in the reports bucket and handed to the stage's drift state machine:

* ``groups/<n>.json``: the objects of child ``n``; ``items.json``: one item per child, which the
  state machine's Distributed Map reads (ItemReader) and gives each child;
* ``sketch`` (:func:`sketch_group`, per child): the group's ``TargetSketch`` and
  ``PerformanceSketch``, written as JSON to ``sketches/<n>.json``;
* ``merge`` (:func:`merge_groups`): the sketches of each version merged, then
  :func:`~sluice.monitoring.drift_job.finish_runs`, the single-process job's last step: the
  same comparison, metrics and reports. Once they are published, the run's work files are
  deleted; a run that fails keeps them for a look (the bucket's retention rule ends them).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.monitoring.drift_job import (
    DriftRun,
    drift_runs,
    finish_runs,
    load_calibrator,
    load_profile,
    plan_drift,
    sketch_objects,
)
from sluice.monitoring.report_store import reports_bucket
from sluice.monitoring.served import open_registry
from sluice.monitoring.window import CaptureObject, DriftPlan, VersionWindow, split_objects
from sluice.serving.capture import parse_ts
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.monitoring.estimation import PerformanceSketch
    from sluice.monitoring.sketch import TargetSketch
    from sluice.registry.store import ModelRegistry

WORK_PREFIX = "reports/drift-work/"
#: The drift state machine the job hands large windows to; unset: every window runs in the job.
STATE_MACHINE_ENV = "SLUICE_DRIFT_STATE_MACHINE_ARN"
#: Capture bytes per child (gzip JSON lines: ~1.5 M rows; a child sketches ~100 k rows a second).
BYTES_PER_CHILD_ENV = "SLUICE_DRIFT_BYTES_PER_CHILD"
DEFAULT_BYTES_PER_CHILD = 128 * 2**20
#: Children per version at most: 64 GiB of capture at the default size, and the children's
#: results (~200 bytes each, discarded) stay within the Map's 256 KiB state limit.
MAX_CHILDREN = 500
CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class Fanout:
    """Where a handed-over window is: its plan and items in the reports bucket, its execution."""

    model: str
    run: str
    plan_key: str
    items_key: str
    children: int
    execution_arn: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "plan_key": self.plan_key,
            "items_key": self.items_key,
            "children": self.children,
            "execution_arn": self.execution_arn,
        }


@dataclass
class DriftOutcome:
    """A drift run's result: its runs when checked in process, else the fan-out it started."""

    runs: list[DriftRun] = field(default_factory=list)
    fanout: Fanout | None = None


def child_groups(
    plan: DriftPlan, *, bytes_per_child: int, max_children: int = MAX_CHILDREN
) -> list[tuple[int, list[CaptureObject]]]:
    """``(version, objects)`` per fan-out child: each version's objects cut into groups of about
    ``bytes_per_child`` bytes (each version at least one group, so each publishes its ``Rows``)."""
    return [
        (part.version, group)
        for part in plan.versions
        for group in split_objects(part.objects, bytes_per_child=bytes_per_child, max_groups=max_children)
    ]


def children(plan: DriftPlan, *, bytes_per_child: int, max_children: int = MAX_CHILDREN) -> int:
    """How many Lambdas sketch the window: one (the job itself) when it holds at most
    ``bytes_per_child`` bytes, else one per :func:`child_groups` group."""
    if plan.bytes <= bytes_per_child:
        return 1
    return len(child_groups(plan, bytes_per_child=bytes_per_child, max_children=max_children))


def run_drift(
    settings: Settings,
    *,
    model: str,
    versions: Sequence[int] | None = None,
    window_minutes: float | None = None,
    now: datetime | None = None,
    state_machine_arn: str = "",
    bytes_per_child: int = DEFAULT_BYTES_PER_CHILD,
    registry: ModelRegistry | None = None,
) -> DriftOutcome:
    """The scheduled drift check: in this process when the window is one child's, else fanned out.

    Without ``state_machine_arn`` (the CLI, tests) every window is checked in this process.
    """
    registry = open_registry(settings, registry)
    plan = plan_drift(
        settings, model=model, versions=versions, now=now, window_minutes=window_minutes, registry=registry
    )
    if not state_machine_arn or children(plan, bytes_per_child=bytes_per_child) == 1:
        return DriftOutcome(runs=_in_process(settings, plan, registry=registry))
    fanout = write_fanout(settings, plan, child_groups(plan, bytes_per_child=bytes_per_child))
    return DriftOutcome(fanout=start_fanout(fanout, state_machine_arn))


def _in_process(settings: Settings, plan: DriftPlan, *, registry: ModelRegistry) -> list[DriftRun]:
    return drift_runs(settings, model=plan.model, plan=plan, registry=registry, chunk_rows=CHUNK_ROWS)


def write_fanout(
    settings: Settings, plan: DriftPlan, groups: Sequence[tuple[int, Sequence[CaptureObject]]]
) -> Fanout:
    """Write the plan, each child's objects and the Map's items under a new run's work prefix."""
    bucket = reports_bucket(settings)
    run = f"{plan.model}-{plan.end:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    work = f"{WORK_PREFIX}{plan.model}/{run}/"
    client = aws.client("s3")
    items, parts = [], []
    for n, (version, objects) in enumerate(groups):
        objects_key, sketch_key = f"{work}groups/{n}.json", f"{work}sketches/{n}.json"
        _put_json(client, bucket, objects_key, {"version": version, "objects": [list(o) for o in objects]})
        parts.append({"version": version, "sketch_key": sketch_key})
        items.append(
            {
                "step": "sketch",
                "model": plan.model,
                "version": version,
                "start": plan.start.isoformat(),
                "end": plan.end.isoformat(),
                "objects_key": objects_key,
                "sketch_key": sketch_key,
            }
        )
    plan_key, items_key = f"{work}plan.json", f"{work}items.json"
    _put_json(
        client,
        bucket,
        plan_key,
        {
            "model": plan.model,
            "start": plan.start.isoformat(),
            "end": plan.end.isoformat(),
            "children": parts,
        },
    )
    _put_json(client, bucket, items_key, items)
    return Fanout(plan.model, run, plan_key, items_key, len(items))


def start_fanout(fanout: Fanout, state_machine_arn: str) -> Fanout:
    """Start the drift state machine on a written fan-out (execution named after the run)."""
    execution = aws.client("stepfunctions").start_execution(
        stateMachineArn=state_machine_arn,
        name=fanout.run[-80:],
        input=json.dumps({"model": fanout.model, "plan_key": fanout.plan_key, "items_key": fanout.items_key}),
    )
    return Fanout(**{**fanout.__dict__, "execution_arn": execution["executionArn"]})


def sketch_group(
    settings: Settings,
    item: Mapping[str, Any],
    *,
    registry: ModelRegistry | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    """One child: sketch its group's objects and write the sketches to the item's ``sketch_key``."""
    try:
        model, version = str(item["model"]), int(item["version"])
        start, end = parse_ts(str(item["start"])), parse_ts(str(item["end"]))
        objects_key, sketch_key = str(item["objects_key"]), str(item["sketch_key"])
    except (KeyError, TypeError, ValueError):
        raise SluiceError(
            "a drift sketch step needs model, version, start, end, objects_key, sketch_key"
        ) from None
    registry = open_registry(settings, registry)
    bucket, client = reports_bucket(settings), aws.client("s3")
    objects = [(str(k), int(s)) for k, s in _get_json(client, bucket, objects_key)["objects"]]
    target, performance = sketch_objects(
        load_profile(registry, model, version),
        settings.capture_bucket,
        objects,
        start=start,
        end=end,
        chunk_rows=chunk_rows,
        calibrator=load_calibrator(registry, model, version),
    )
    body = {"target": target.to_dict(), "performance": None if performance is None else performance.to_dict()}
    _put_json(client, bucket, sketch_key, body)
    return {"sketch_key": sketch_key, "version": version, "rows": target.n_rows, "objects": len(objects)}


def merge_groups(
    settings: Settings, plan_key: str, *, registry: ModelRegistry | None = None, **options: Any
) -> list[DriftRun]:
    """The last step: merge each version's child sketches, then compare, publish and report.

    ``options`` are :func:`~sluice.monitoring.drift_job.finish_runs`'s.
    """
    if not plan_key.startswith(WORK_PREFIX) or not plan_key.endswith("/plan.json"):
        raise SluiceError(
            f"a drift merge step's plan_key must be a plan under {WORK_PREFIX}, got {plan_key!r}"
        )
    registry = open_registry(settings, registry)
    bucket, client = reports_bucket(settings), aws.client("s3")
    document = _get_json(client, bucket, plan_key)
    model = str(document["model"])
    merged: dict[int, tuple[TargetSketch, PerformanceSketch | None]] = {}
    for child in document["children"]:
        version = int(child["version"])
        part = _read_sketch(
            _get_json(client, bucket, child["sketch_key"]), load_profile(registry, model, version)
        )
        merged[version] = part if version not in merged else _merge(merged[version], part)
    plan = DriftPlan(
        model=model,
        start=parse_ts(document["start"]),
        end=parse_ts(document["end"]),
        versions=[VersionWindow(v) for v in sorted(merged)],
    )
    runs = finish_runs(settings, plan, merged, registry=registry, **options)
    _delete_prefix(client, bucket, plan_key.removesuffix("plan.json"))
    return runs


def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    """Delete every object under ``prefix`` (a fan-out run's work files)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def _read_sketch(body: Mapping[str, Any], profile: Any) -> tuple[TargetSketch, PerformanceSketch | None]:
    from sluice.monitoring.estimation import PerformanceSketch
    from sluice.monitoring.sketch import TargetSketch

    performance = body.get("performance")
    return (
        TargetSketch.from_dict(body["target"], profile),
        None if performance is None else PerformanceSketch.from_dict(performance),
    )


def _merge(
    a: tuple[TargetSketch, PerformanceSketch | None], b: tuple[TargetSketch, PerformanceSketch | None]
) -> tuple[TargetSketch, PerformanceSketch | None]:
    performance = a[1].merge(b[1]) if a[1] is not None and b[1] is not None else (a[1] or b[1])
    return a[0].merge(b[0]), performance


def bytes_per_child_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``SLUICE_DRIFT_BYTES_PER_CHILD``, default :data:`DEFAULT_BYTES_PER_CHILD`."""
    value = (os.environ if environ is None else environ).get(BYTES_PER_CHILD_ENV, "")
    try:
        return max(1, int(value)) if value else DEFAULT_BYTES_PER_CHILD
    except ValueError:
        raise SluiceError(f"{BYTES_PER_CHILD_ENV} must be a number of bytes, got {value!r}") from None


def _put_json(client: Any, bucket: str, key: str, body: Any) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json")


def _get_json(client: Any, bucket: str, key: str) -> Any:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
