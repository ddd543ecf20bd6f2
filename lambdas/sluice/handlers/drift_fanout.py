"""Drift fan-out steps. Trigger: the stage's drift state machine (Step Functions).

``{"step": "sketch", "model", "version", "start", "end", "objects_key", "sketch_key"}``: one
Distributed Map child (an item of the fan-out's ``items.json``) sketches its group of capture
objects and writes the sketches to ``sketch_key``. ``{"step": "merge", "plan_key"}``: merge the
children's sketches per version, publish the drift metrics and write the reports, as the
single-process job does (``sluice.monitoring.fanout``).

Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_CAPTURE_BUCKET, SLUICE_REPORTS_BUCKET.
Errors are raised: the state machine retries transient ones and fails the run on the rest.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.errors import SluiceError
from sluice.monitoring.fanout import merge_groups, sketch_group
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = event.get("step") if isinstance(event, dict) else None
    settings = Settings.from_env()
    if step == "sketch":
        return sketch_group(settings, event)
    if step == "merge":
        plan_key = event.get("plan_key")
        if not isinstance(plan_key, str) or not plan_key:
            raise SluiceError("drift merge step: 'plan_key' must name the fan-out's plan")
        runs = merge_groups(settings, plan_key)
        result = {"model": runs[0].model if runs else "", "drift": [run.summary() for run in runs]}
        logger.info("drift fan-out merged", extra={"drift": result["drift"]})
        return result
    raise SluiceError(f"drift fan-out step must be 'sketch' or 'merge', got {step!r}")
