"""Retraining steps. Trigger: the retraining state machine, payload ``{"step": ..., "state": ...}``.

Env: SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET, SLUICE_WORK_BUCKET, SLUICE_NOTIFY_TOPIC_ARN;
SLUICE_PROJECT (set by a model project's image: its ``train`` makes the candidate).
Runs in the training image (scikit-learn, pandas); every step is a function of
``sluice.pipelines.retraining``, and ``collect`` (after a train step outside Lambda) of
``sluice.pipelines.train_task``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sluice.pipelines import retraining, train_task
from sluice.settings import Settings

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    step, state = event.get("step"), event.get("state") or {}
    logger.append_keys(step=step, model=state.get("model"), run_id=state.get("run_id"))
    if step == "preprocess":
        return retraining.preprocess(settings, retraining.RetrainRequest.from_event(state))
    if step == "notify_failure":
        return retraining.notify_failure(settings, state)
    if step == "collect":  # after a train step outside Lambda (ECS task, SageMaker job)
        return train_task.collect(settings, state)
    if step not in retraining.STEPS:
        # A wiring bug in the state machine, not user input.
        raise ValueError(f"unknown retraining step {step!r}")
    return retraining.STEPS[step](settings, state)
