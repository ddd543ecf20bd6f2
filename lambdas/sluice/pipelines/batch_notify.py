"""Batch failure notification: publish which run and shards failed and why, with a manifest.

Runs on the batch state machine's failure path, with the run state and either the caught
``error`` or postprocess's ``summary`` (failed shards, too many rejects).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sluice.names import FAILED
from sluice.pipelines.skeleton import error_cause, notify
from sluice.settings import Settings


def notify_failure(settings: Settings, state: Mapping[str, Any]) -> dict[str, Any]:
    """Publish what failed to the notification topic; write a manifest if postprocess did not."""
    summary = state.get("summary") or {}
    manifest = summary.get("manifest")
    manifest_uri = summary.get("manifest_uri")
    if manifest is None:
        manifest, manifest_uri = _failure_manifest(state, manifest_uri)
    message = {
        "event": "batch_failed",
        "run_id": manifest.get("run_id"),
        "model": manifest.get("model"),
        "reasons": manifest.get("reasons"),
        # The execution's own failure cause (the state machine's Fail state reads it).
        "cause": _cause(manifest),
        "failed_shards": [s["shard"] for s in manifest.get("failed_shards") or []],
        "manifest_uri": manifest_uri,
    }
    notify(settings, f"Sluice batch run failed: {message['model']}", message)
    return message


def _failure_manifest(
    state: Mapping[str, Any], manifest_uri: str | None
) -> tuple[dict[str, Any], str | None]:
    """The manifest of a run that failed before postprocess wrote one, and where it was written
    (``manifest_uri`` when the run has no output prefix yet)."""
    from sluice.pipelines.datasource import write_text

    error = state.get("error") or {}
    run = state.get("run") or {}
    # Before preprocess finished, the state is the run's input itself.
    request = state.get("request") or (state if "run" not in state else {})
    manifest = {
        "run_id": run.get("run_id") or state.get("execution"),
        "status": FAILED,
        "reasons": [f"{error.get('Error', 'error')}: {error_cause(error.get('Cause'))}"],
        "model": run.get("model") or request.get("model"),
        "input": state.get("input") or request.get("input_uri"),
        "failed_shards": [],
    }
    output = state.get("output")
    if not output:
        return manifest, manifest_uri
    try:
        write_text(f"{output}manifest.json", json.dumps(manifest, indent=2))
    except Exception:  # the notification matters more than this manifest
        return manifest, None
    return manifest, f"{output}manifest.json"


def _cause(manifest: Mapping[str, Any]) -> str:
    """The reasons, and what the first failed shard failed with (not a pointer elsewhere)."""
    parts = [str(r) for r in manifest.get("reasons") or []]
    failed = manifest.get("failed_shards") or []
    if failed:
        first = failed[0]
        parts.append(f"{first.get('shard')}: {first.get('error')}: {error_cause(first.get('cause'))}")
    return "; ".join(parts) or "unknown"
