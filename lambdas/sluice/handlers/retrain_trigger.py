"""Start a debounced retraining run. Trigger: EventBridge rule on a drift alarm entering ALARM.

The rule's input is ``{"model": ..., "data_uri": ..., "alarm": <alarm name>, "debounce_s": ...}``.
Env: SLUICE_RETRAIN_LOCK_TABLE (the single-flight lock), SLUICE_RETRAIN_STATE_MACHINE_ARN.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines.retraining import start_run
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = start_run(
        Settings.from_env(),
        model=event["model"],
        data_uri=event["data_uri"],
        trigger=event.get("alarm") or "eventbridge",
        debounce_s=int(event.get("debounce_s", 900)),
    )
    logger.info("retraining trigger", extra=result)
    return result
