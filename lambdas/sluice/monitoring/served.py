"""What a monitoring run looks at: its window, the registry, and the model versions served in it.

Served versions come from the registry's audit trail (deploy, traffic, promotion and rollback
events, and aliases) and from the capture bucket (versions with captured rows in the window).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import NotFound, SluiceError
from sluice.serving.capture import parse_ts, partition_prefix
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

SERVED_EVENTS = ("deployed", "traffic", "promoted", "rolled_back")
DEFAULT_WINDOW = timedelta(minutes=60)


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


def open_registry(settings: Settings, registry: ModelRegistry | None) -> ModelRegistry:
    """``registry``, or the registry the settings name."""
    if registry is not None:
        return registry
    from sluice.registry.store import ModelRegistry

    return ModelRegistry.from_settings(settings)


def _route_versions(routes: Any, *, weighted_only: bool) -> set[int]:
    """Versions a routing list (``detail.to`` or ``detail.from``) names, or only those with weight."""
    if not isinstance(routes, list):
        return set()
    return {
        int(r["model_version"])
        for r in routes
        if isinstance(r, Mapping)
        and r.get("model_version") is not None
        and (not weighted_only or float(r.get("weight", 0)) > 0)
    }


def served_versions(registry: ModelRegistry, model: str, *, since: datetime | None = None) -> list[int]:
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
            routed = _route_versions(routes, weighted_only=True)
            named |= _route_versions(routes, weighted_only=False)
            deployed -= named
        named |= _route_versions(detail.get("from"), weighted_only=True)  # served until this change
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


def choose_versions(
    settings: Settings,
    registry: ModelRegistry,
    model: str,
    versions: Sequence[int] | None,
    start: datetime,
    end: datetime,
) -> list[int]:
    """``versions``, or the versions served or captured in ``[start, end)``; ``NotFound`` if none."""
    if versions:
        return sorted({int(v) for v in versions})
    chosen = set(served_versions(registry, model, since=start))
    chosen |= set(captured_versions(settings.capture_bucket, model=model, start=start, end=end))
    if not chosen:
        raise NotFound(
            f"model {model!r} has no served version (no deploy or traffic event, no alias, no captured data)"
        )
    return sorted(chosen)
