"""Batch step 1: read the input, validate it against the model's schema, write rejects and shards.

Trigger: the batch state machine, payload ``{"request": <run input>, "execution": <execution name>,
"execution_id": <execution ARN>, "started": <start time>}``.
Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_WORK_BUCKET; the pipeline's scope:
SLUICE_MODEL_NAME (the one model it scores) and SLUICE_BATCH_FAULT_DRILL (``faults`` accepted);
SLUICE_PROJECT (set by a model project's image: its ``preprocess`` runs on the input first).
The run id is the execution name; an input's own ``run_id`` is refused.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.batch_preprocess import preprocess
from sluice.pipelines.batch_request import BatchRequest, BatchScope
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = BatchRequest.from_event(
        event.get("request") or {}, scope=BatchScope.from_env(), run_id=str(event.get("execution") or "")
    )
    logger.append_keys(model=request.model, run_id=request.run_id)
    # The execution's ARN and start time: unique to this run, and the same when the step is retried.
    owner = (
        f"{event.get('execution_id') or ''}@{event.get('started') or ''}" if event.get("execution_id") else ""
    )
    return preprocess(Settings.from_env(), request, owner=owner)
