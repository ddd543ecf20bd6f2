"""Batch failure notification: publish which run and shards failed, and why.

Trigger: the batch state machine's failure path, payload: the run state with ``error`` (caught)
or ``summary`` (postprocess found failed shards or too many rejects). Env: SLUICE_NOTIFY_TOPIC_ARN.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.batch_notify import notify_failure
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return notify_failure(Settings.from_env(), event)
