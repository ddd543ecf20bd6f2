"""Batch scoring: preprocess → score shards (Step Functions Distributed Map) → postprocess.

Each step is one function taking and returning small JSON-able state, so the same code runs as
the pipeline's Lambda tasks (``sluice.handlers.batch_*``), in-process (:func:`run_local`, the
CLI's ``--here`` and the bench) and in tests. Bulky data moves through S3.

The steps live in :mod:`~sluice.pipelines.batch_preprocess`, :mod:`~sluice.pipelines.batch_score`
and :mod:`~sluice.pipelines.batch_postprocess`, the failure notification in
:mod:`~sluice.pipelines.batch_notify`. This module runs them: in this process, or by starting
a run on Step Functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.names import BATCH_RETRY_ATTEMPTS
from sluice.pipelines.batch_postprocess import postprocess
from sluice.pipelines.batch_preprocess import preprocess
from sluice.pipelines.batch_request import BatchRequest, BatchScope
from sluice.pipelines.batch_score import score_shard
from sluice.pipelines.batch_scorers import ShardScorer, scorer_for
from sluice.pipelines.batch_shards import BatchTransientError, ShardError, shard_of
from sluice.pipelines.skeleton import (
    State,
    load_registry,
    run_steps,
    start_execution,
    timestamped_run_id,
    with_retries,
)
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

Progress = Callable[[str, int, int], None]


def run_local(
    settings: Settings,
    request: BatchRequest,
    *,
    registry: ModelRegistry | None = None,
    scorer: ShardScorer | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """All steps in this process, shards in sequence; ``progress(step, done, total)`` as it goes."""
    registry = load_registry(settings, registry)

    def score(state: State) -> State:
        return {**state, "results": _score_all(settings, state, registry, scorer, progress)}

    def step_done(step: str, seconds: float) -> None:
        if progress and step != "score":  # the score step reports each shard itself
            progress(step, 1, 1)

    steps = [
        ("preprocess", lambda _: preprocess(settings, request, registry=registry)),
        ("score", score),
        ("postprocess", lambda state: postprocess(settings, state)),
    ]
    return run_steps(steps, on_step=step_done)


def _score_all(
    settings: Settings,
    state: State,
    registry: ModelRegistry,
    scorer: ShardScorer | None,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """Score every shard in turn, retried as the state machine would; failures become results."""
    run = state["run"]
    if scorer is None:
        scorer = scorer_for(settings, run, registry=registry)
    s3 = aws.client("s3")
    keys = sorted(
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=run["bucket"], Prefix=state["shard_prefix"]
        )
        for item in page.get("Contents", [])
    )
    results = []
    for index, key in enumerate(keys):
        try:
            results.append(
                with_retries(
                    partial(score_shard, settings, {"key": key, "run": run}, scorer=scorer),
                    retry_on=BatchTransientError,
                    attempts=BATCH_RETRY_ATTEMPTS,
                )
            )
        except (BatchTransientError, ShardError) as err:
            results.append(
                {"shard": shard_of(key), "failed": True, "error": type(err).__name__, "cause": str(err)}
            )
        if progress:
            progress("score", index + 1, len(keys))
    return results


def new_run_id(model: str, *, now: datetime | None = None) -> str:
    return timestamped_run_id(model, now or datetime.now(UTC), suffix=os.urandom(3).hex())


def start_run(state_machine_arn: str, event: Mapping[str, Any], *, scope: BatchScope, run_id: str) -> str:
    """Start one execution named ``run_id`` (checked first, within ``scope``); return its ARN.

    The input carries no run id: the pipeline's first step takes it from the execution name.
    """
    request = BatchRequest.from_event(event, scope=scope, run_id=run_id)
    body = {k: v for k, v in event.items() if v not in (None, "", {})}
    return str(start_execution(state_machine_arn, request.run_id, body))


def map_progress(execution_arn: str) -> tuple[int, int] | None:
    """``(finished, total)`` shards of an execution's Distributed Map, once its map run exists."""
    sfn = aws.client("stepfunctions")
    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if not runs:
            return None
        counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts", {})
    except Exception:  # not every backend (nor moto) implements map runs: progress is optional
        return None
    total = int(counts.get("total", 0))
    finished = sum(int(counts.get(k, 0)) for k in ("succeeded", "failed", "timedOut", "aborted"))
    return finished, total
