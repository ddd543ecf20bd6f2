"""Batch step 2: score one shard (one Distributed Map child) and write the scored shard beside it.

Rows scored by the model scorer are captured for monitoring as ``source="batch"``; the endpoint
captures the rows it scores itself. A shard listed in the run's ``faults`` fails its first
attempts with a :class:`~sluice.pipelines.batch_shards.BatchTransientError` (a fault drill).

With a deployed model project whose ``[tool.sluice]`` declares ``postprocess``
(:func:`sluice.models.project.deployed_project`), each shard's rows and scores go through its
``postprocess(frame, scores)`` here, per shard, and the columns it returns (e.g. ``probability``,
``decision``) join the scored shard, so they reach the predictions file. ``scores`` is the
``probability`` column (P(second class) for a binary classifier), or the predictions of a model
without probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice import aws
from sluice.errors import SluiceError
from sluice.pipelines.batch_scorers import ModelShardScorer, ShardScorer, scorer_for
from sluice.pipelines.batch_shards import (
    PREDICTION,
    PROBABILITY,
    ROW,
    BatchTransientError,
    ShardError,
    parquet_bytes,
    read_parquet,
    shard_of,
)
from sluice.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from sluice.pipelines.batch_scorers import Array
    from sluice.serving.capture import CaptureWriter, FrameCapture


def score_shard(
    settings: Settings,
    item: Mapping[str, Any],
    *,
    scorer: ShardScorer | None = None,
    capture: CaptureWriter | None = None,
) -> dict[str, Any]:
    """Score one shard ``{"key": <shard key>, "run": <preprocess state's run>}``.

    Writes the scored shard next to it and, for the model scorer, captures the rows as
    ``source="batch"``. Returns ``{"shard", "key", "scored_key", "rows", "version", "via"}``.

    Raises
    ------
    BatchTransientError
        For the fault drill and transient endpoint failures (the state machine retries).
    ShardError
        If the rows cannot be scored.
    """
    run, key = item["run"], item["key"]
    name = shard_of(key)
    _fault_drill(run, name)
    s3 = aws.client("s3")
    frame = read_parquet(s3, run["bucket"], key)
    if scorer is None:
        scorer = scorer_for(settings, run)
    features = frame.drop(columns=[ROW])
    version = int(scorer.version or run["version"])
    request_id = f"{run['run_id']}/{name}"
    # The capture encodes on a worker while the shard is scored and stored; it is sent after.
    with _begin_capture(settings, scorer, capture, request_id, run["model"], version, features) as pending:
        labels, probabilities = _predict(scorer, features, name)
        pending.scored(labels, probabilities)
        scored = frame.assign(**{PREDICTION: labels})
        if probabilities is not None:
            scored[PROBABILITY] = probabilities
        scores = labels if probabilities is None else probabilities
        scored = _project_postprocess(scored, features, scores, name)
        scored_key = f"{run['prefix']}scored/{name}.parquet"
        s3.put_object(Bucket=run["bucket"], Key=scored_key, Body=parquet_bytes(scored))
        pending.send()
    return {
        "shard": name,
        "key": key,
        "scored_key": scored_key,
        "rows": len(frame),
        "version": version,
        "via": scorer.via,
    }


def _predict(scorer: ShardScorer, features: pd.DataFrame, name: str) -> tuple[Array, Array | None]:
    """Labels and probabilities of a shard's rows, one per row."""
    # Shards hold only rows preprocess validated against this version's schema.
    labels, probabilities = (
        scorer.predict(features, validated=True)
        if isinstance(scorer, ModelShardScorer)
        else scorer.predict(features)
    )
    if len(labels) != len(features):
        raise ShardError(f"{name}: {len(features)} rows but {len(labels)} predictions")
    return labels, probabilities


def _project_postprocess(
    scored: pd.DataFrame, features: pd.DataFrame, scores: Array, name: str
) -> pd.DataFrame:
    """``scored`` with the columns of the deployed project's ``postprocess`` (``scored`` without one)."""
    from sluice.models.project import deployed_project

    project = deployed_project()
    if project is None or not project.has("postprocess"):
        return scored
    try:
        added = project.run_postprocess(features.reset_index(drop=True), np.asarray(scores))
    except SluiceError as err:  # the same rows fail however often they are retried
        raise ShardError(f"{name}: {err}") from err
    if ROW in added.columns:
        raise ShardError(f"{name}: [tool.sluice] postprocess returned the {ROW!r} column, which batch keeps")
    out = scored.copy()
    for column in added.columns:
        out[str(column)] = added[column].to_numpy()
    return out


def _begin_capture(
    settings: Settings,
    scorer: ShardScorer,
    capture: CaptureWriter | None,
    request_id: str,
    model: str,
    version: int,
    features: pd.DataFrame,
) -> FrameCapture:
    """The capture of the rows the model scores, as ``source="batch"`` (endpoint rows are not).

    Column by column (:meth:`~sluice.serving.capture.CaptureWriter.begin_frame`): one Parquet
    object per shard, no dict per row. Disabled for the endpoint scorer or without a bucket.
    """
    from sluice.serving.capture import CaptureWriter

    if capture is None:
        capture = CaptureWriter(bucket_name=settings.capture_bucket)
    if scorer.via != "model":
        capture = CaptureWriter()
    inner = getattr(scorer, "scorer", None)
    schema_names = list(inner.schema.names) if inner is not None else list(features.columns)
    return capture.begin_frame(
        request_id=request_id,
        model=model,
        version=version,
        features=features[[c for c in schema_names if c in features.columns]],
        source="batch",
    )


def _fault_drill(run: Mapping[str, Any], name: str) -> None:
    """Fail the first ``faults[name]`` attempts of a shard; attempts are counted in S3 markers."""
    wanted = int((run.get("faults") or {}).get(name, 0))
    if wanted <= 0:
        return
    s3 = aws.client("s3")
    prefix = f"{run['prefix']}faults/{name}/"
    done = s3.list_objects_v2(Bucket=run["bucket"], Prefix=prefix).get("KeyCount", 0)
    if done < wanted:
        s3.put_object(Bucket=run["bucket"], Key=f"{prefix}{done + 1:04d}", Body=b"")
        raise BatchTransientError(f"fault drill: {name} attempt {done + 1} of {wanted} failing")
