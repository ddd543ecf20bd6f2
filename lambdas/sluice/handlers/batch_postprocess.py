"""Batch step 3: join the scored shards, write predictions (CSV or Parquet) and the manifest.

Trigger: the batch state machine, payload: the run state with the Distributed Map's ResultWriter
details under ``map``. Env: SLUICE_WORK_BUCKET.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.batch_postprocess import postprocess
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(run_id=(event.get("run") or {}).get("run_id"))
    return postprocess(Settings.from_env(), event)
