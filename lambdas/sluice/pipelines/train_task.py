"""The retraining's train step outside Lambda: ``python -m sluice.pipelines.train_task``.

Trigger: an ECS task on Fargate or a SageMaker training job, which the retraining state machine
starts and waits for (``.sync``); the image's entry point, set at synth time, runs this module.
Env: SLUICE_RETRAIN_MODEL and SLUICE_RETRAIN_RUN_ID (which run: nothing that names code),
SLUICE_WORK_BUCKET, SLUICE_REGISTRY_TABLE, SLUICE_REGISTRY_BUCKET; SLUICE_PROJECT (set by a model
project's image: its ``train`` makes the candidate).

A container reports only an exit code, so state goes through the work bucket, under the run's
prefix ``retraining/<model>/<run_id>/``: preprocess stages its output state as
:data:`INPUT_FILE`, the task runs the same
:func:`~sluice.pipelines.retraining.train_candidate` as the Lambda step and writes the state it
returns as :data:`OUTPUT_FILE`, and the state machine's next Lambda step (``collect``,
:func:`collect`) takes from it only what the train step adds to the execution's state.

The output carries the candidate's sha256, which the evaluate and register steps check before
they load it; only the model's train role (``sluice-<stage>-<model>-train``) may write or delete
the output and the candidate, by the work bucket's policy
(:func:`infra.constructs.retraining.staged_candidate_guard`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import IntegrityError, SluiceError
from sluice.names import TRAIN_OUTPUT_FILE
from sluice.pipelines.retraining import TRAIN_INPUT, train_candidate
from sluice.pipelines.skeleton import check_run_id
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

MODEL_ENV = "SLUICE_RETRAIN_MODEL"
RUN_ID_ENV = "SLUICE_RETRAIN_RUN_ID"
#: The state preprocess returned, staged for a train step outside Lambda.
INPUT_FILE = TRAIN_INPUT
#: The state the train task returned, read by the ``collect`` step.
OUTPUT_FILE = TRAIN_OUTPUT_FILE
#: What the train step must add to the state (the candidate and its digest).
REQUIRED_OUTPUT = ("candidate_file", "candidate_sha256")
#: SageMaker's container contract: a failed job shows this file's text as its FailureReason.
SAGEMAKER_FAILURE = Path("/opt/ml/output/failure")
_MODEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def state_key(model: str, run_id: str, name: str) -> str:
    """``retraining/<model>/<run_id>/<name>``, after checking the model name and run id."""
    if not _MODEL.match(model):
        raise SluiceError(f"model name {model!r} must be 1-64 letters, digits, '-' or '_'")
    return f"retraining/{model}/{check_run_id(run_id)}/{name}"


def run_task(
    settings: Settings, *, model: str, run_id: str, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Train the run's candidate from its staged state; stage the resulting state; return it."""
    settings.require("work_bucket")
    state = _read_state(settings, model, run_id, INPUT_FILE)
    out = train_candidate(settings, state, registry=registry)
    key = state_key(model, run_id, OUTPUT_FILE)
    aws.client("s3").put_object(
        Bucket=settings.work_bucket, Key=key, Body=json.dumps(out).encode(), ContentType="application/json"
    )
    return out


def collect(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    """The execution's ``state`` plus what the train task added to it (the ``collect`` step).

    Only keys the input state lacks are taken, so the task cannot rewrite the run's lineage
    (data, parent, trigger) that the state machine carries.

    Raises
    ------
    IntegrityError
        If the task's output is for another run or lacks the candidate and its digest.
    """
    model, run_id = str(state["model"]), str(state["run_id"])
    out = _read_state(settings, model, run_id, OUTPUT_FILE)
    missing = [key for key in REQUIRED_OUTPUT if not isinstance(out.get(key), str)]
    if missing:
        raise IntegrityError(f"the train task's output for run {run_id} lacks {', '.join(missing)}")
    return {**state, **{key: value for key, value in out.items() if key not in state}}


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the train task named by the environment; 0 on success, 1 (and the reason) on failure."""
    env = os.environ if environ is None else environ
    model, run_id = env.get(MODEL_ENV, ""), env.get(RUN_ID_ENV, "")
    try:
        if not model or not run_id:
            raise SluiceError(f"the train task needs {MODEL_ENV} and {RUN_ID_ENV}")
        out = run_task(Settings.from_env(dict(env)), model=model, run_id=run_id)
    except Exception as err:  # the exit code and the reason are all a container can report
        reason = f"{type(err).__name__}: {err}"
        print(
            json.dumps({"level": "ERROR", "model": model, "run_id": run_id, "error": reason}), file=sys.stderr
        )
        if SAGEMAKER_FAILURE.parent.is_dir():
            SAGEMAKER_FAILURE.write_text(reason[:1024])
        return 1
    print(json.dumps({"level": "INFO", "model": model, "run_id": run_id, "candidate": out["candidate_file"]}))
    return 0


def _read_state(settings: Settings, model: str, run_id: str, name: str) -> dict[str, Any]:
    """A staged state of the run, checked to be a JSON object of this model and run."""
    key = state_key(model, run_id, name)
    body = aws.client("s3").get_object(Bucket=settings.work_bucket, Key=key)["Body"].read()
    state = json.loads(body)
    if not isinstance(state, dict) or state.get("model") != model or state.get("run_id") != run_id:
        raise IntegrityError(f"s3://{settings.work_bucket}/{key} is not the state of {model} run {run_id}")
    return state


if __name__ == "__main__":
    sys.exit(main())
