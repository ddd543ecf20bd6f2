"""Batch step 2: score one shard, by loading the model or by calling the endpoint.

Trigger: a Distributed Map child of the batch state machine, payload ``{"key": <shard key>, "run": {...}}``.
Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_CAPTURE_BUCKET (model variant);
SLUICE_BATCH_ENDPOINT_URL (endpoint variant); SLUICE_PROJECT (set by a model project's image: its
``postprocess`` adds its columns to each scored shard). The model stays loaded while the function is warm.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.batch_score import score_shard
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(run_id=(event.get("run") or {}).get("run_id"), shard=event.get("key"))
    return score_shard(Settings.from_env(), event)
