"""Batch step 3: join the scored shards in input order, write the predictions and the manifest.

Output of one run (``<output>`` defaults to ``s3://<work>/batch/output/<model>/<run_id>/``)::

    <output>/predictions.csv|parquet   input columns + prediction, probability, the columns of the
                                       project's postprocess (if deployed), model, model_version
    <output>/rejects.csv               input_row, reason and the rejected row's values
    <output>/manifest.json             rows in/out, rejects, model version, duration, failed shards

The run fails (``status: FAILED``, and no predictions file) when a shard failed or the rejects
are more than ``max_reject_share`` of the input; the manifest says why either way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sluice import aws
from sluice.errors import SluiceError
from sluice.names import FAILED, SUCCEEDED
from sluice.pipelines.batch_shards import ROW, ShardError, read_parquet, shard_of
from sluice.settings import Settings


def shard_results(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The score step's output per shard, from the Distributed Map's ResultWriter files.

    Children that failed (listed in the FAILED files, or caught and marked ``failed`` in
    the iterator) come back as ``{"shard", "failed": True, "error"}``.
    """
    inline = state.get("results")
    if isinstance(inline, list):
        return [_named(r) for r in inline]
    details = (state.get("map") or {}).get("ResultWriterDetails") or {}
    if not details:
        raise SluiceError("batch state has neither 'results' nor the Distributed Map's ResultWriterDetails")
    s3 = aws.client("s3")
    bucket = details["Bucket"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=details["Key"])["Body"].read())
    out: list[dict[str, Any]] = []
    for status, files in (manifest.get("ResultFiles") or {}).items():
        for entry in files:
            for record in json.loads(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()):
                if status == "SUCCEEDED":
                    out.append(_named(json.loads(record.get("Output") or "{}")))
                else:
                    shard = _shard_from_input(record.get("Input"))
                    out.append(
                        {
                            "shard": shard,
                            "failed": True,
                            "error": record.get("Error"),
                            "cause": record.get("Cause"),
                        }
                    )
    return out


def _named(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result with ``shard`` as the shard's name (the iterator's catch names it by key)."""
    out = dict(result)
    if "/" in str(out.get("shard", "")):
        with contextlib.suppress(ShardError):
            out["shard"] = shard_of(str(out["shard"]))
    return out


def _shard_from_input(text: Any) -> str:
    try:
        return shard_of(json.loads(text or "{}").get("key", ""))
    except (ValueError, ShardError, AttributeError):
        return "unknown"


def postprocess(
    settings: Settings, state: Mapping[str, Any], *, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Join the scored shards in input order, enrich, write the output and the manifest.

    The run fails (``status: FAILED``, and no predictions file) when a shard failed or the
    rejects exceed ``max_reject_share``; the manifest says why either way.
    """
    from sluice.pipelines.datasource import write_text

    run = state["run"]
    results = sorted(shard_results(state), key=lambda r: str(r.get("shard")))
    failed = [r for r in results if r.get("failed")]
    done = [r for r in results if not r.get("failed")]
    reasons = _failure_reasons(state, failed, done)
    versions = sorted({int(r["version"]) for r in done if r.get("version") is not None})
    model_version = versions[0] if len(versions) == 1 else run["version"]
    predictions_uri, rows_out = None, 0
    if not reasons:
        predictions_uri = f"{state['output']}predictions.{state['output_format']}"
        rows_out = _write_predictions(run, done, model_version, predictions_uri)
    finished = now()
    rows_in, rejected = int(state["rows_in"]), int(state["rejected"])
    manifest = {
        "run_id": run["run_id"],
        "status": FAILED if reasons else SUCCEEDED,
        "reasons": reasons,
        "model": run["model"],
        "model_version": model_version,
        "scored_by": sorted({r.get("via", "model") for r in done}) or None,
        "input": state["input"],
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped_by_preprocess": int(state.get("dropped", 0)),
        "rejects": rejected,
        "reject_share": round(_reject_share(state), 6),
        "max_reject_share": float(state["max_reject_share"]),
        "rejects_uri": state.get("rejects_uri"),
        "predictions_uri": predictions_uri,
        "format": state["output_format"],
        "shards": int(state["shards"]),
        "failed_shards": [
            {"shard": r["shard"], "error": r.get("error"), "cause": r.get("cause")} for r in failed
        ],
        "started_at": _iso(float(state["started_at"])),
        "finished_at": _iso(finished),
        "duration_s": round(finished - float(state["started_at"]), 3),
    }
    manifest_uri = f"{state['output']}manifest.json"
    write_text(manifest_uri, json.dumps(manifest, indent=2))
    return {"status": manifest["status"], "manifest_uri": manifest_uri, "manifest": manifest}


def _reject_share(state: Mapping[str, Any]) -> float:
    rows_in, rejected = int(state["rows_in"]), int(state["rejected"])
    return rejected / rows_in if rows_in else 0.0


def _failure_reasons(
    state: Mapping[str, Any], failed: Sequence[Mapping[str, Any]], done: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Why the run fails: failed shards, too many rejects, shards that never reported; or nothing."""
    rows_in, rejected = int(state["rows_in"]), int(state["rejected"])
    share = _reject_share(state)
    reasons = []
    if failed:
        reasons.append(f"{len(failed)} shard(s) failed: {', '.join(str(r['shard']) for r in failed)}")
    if share > float(state["max_reject_share"]):
        reasons.append(
            f"{rejected} of {rows_in} rows rejected ({share:.2%}), more than the allowed "
            f"{float(state['max_reject_share']):.2%}"
        )
    if len(done) + len(failed) != int(state["shards"]):
        reasons.append(f"{int(state['shards'])} shards planned but {len(done) + len(failed)} reported")
    return reasons


def _write_predictions(
    run: Mapping[str, Any], done: Sequence[Mapping[str, Any]], model_version: int, uri: str
) -> int:
    """Join the scored shards in input order, add the model and its version, write them; the row count."""
    import pandas as pd

    from sluice.pipelines.datasource import write_table

    s3 = aws.client("s3")
    frames = [read_parquet(s3, run["bucket"], r["scored_key"]) for r in done]
    scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(scored):
        scored = scored.sort_values(ROW, kind="stable").reset_index(drop=True)
    scored["model"] = run["model"]
    scored["model_version"] = model_version
    write_table(scored, uri)
    return len(scored)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
