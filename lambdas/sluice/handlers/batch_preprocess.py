"""Batch step 1: read the input, validate it against the model's schema, write rejects and shards.

Trigger: the batch state machine, payload ``{"request": <run input>, "execution": <execution name>}``.
Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_WORK_BUCKET.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.batch_preprocess import preprocess
from sluice.pipelines.batch_request import BatchRequest
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = BatchRequest.from_event(event.get("request") or {}, run_id=event.get("execution"))
    logger.append_keys(model=request.model, run_id=request.run_id)
    return preprocess(Settings.from_env(), request)
