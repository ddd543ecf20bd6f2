"""Prod-side promotion: pull an Approved version of the source stage into this stage's registry.

Trigger: ``lambda:InvokeFunction`` by the stage's deployer (``sluice --stage prod promote``),
with ``{"model": NAME, "version": N}``. The copy is registered ``PendingManualApproval``; a
prod approver approves it. Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET,
SLUICE_AUDIT_BUCKET, SLUICE_MANIFEST_KEY, SLUICE_APPROVAL_KEY, SLUICE_SOURCE_STAGE,
SLUICE_SOURCE_ACCOUNT, SLUICE_SOURCE_REGION.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.errors import SluiceError
from sluice.registry.promotion import StageRegistry, pull
from sluice.registry.store import ModelRegistry
from sluice.registry.validation import check_model_name
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        model, version = event["model"], event["version"]
        check_model_name(model)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise SluiceError(f"'version' must be a positive integer; got {version!r}")
    except (KeyError, TypeError):
        return {"error": 'the event must be {"model": NAME, "version": N}'}
    except SluiceError as err:
        return {"error": str(err)}
    source = StageRegistry(
        os.environ["SLUICE_SOURCE_STAGE"],
        os.environ["SLUICE_SOURCE_ACCOUNT"],
        os.environ["SLUICE_SOURCE_REGION"],
    )
    target = ModelRegistry.from_settings(Settings.from_env())
    try:
        result = pull(model, version, source=source, target=target, actor=target.caller()).to_dict()
    except SluiceError as err:
        logger.warning("promotion refused", extra={"reason": str(err)})
        return {"error": str(err)}
    logger.info("promoted", extra=result)
    return result
