"""Retraining: preprocess → train → evaluate → register as pending approval. It never deploys.

Each step is one function taking and returning a small JSON-able state, so the same code runs as
Step Functions Lambda tasks (``sluice.handlers.retrain``), from the CLI (``sluice retrain``) and in
the local demo. Bulky data moves through S3 under ``retraining/<model>/<run_id>/`` in the work
bucket; the registry is written only by the last step, in one transactional ``register`` call with
the run id as idempotency key, so a failed or retried run never leaves a partial record.

Which code makes the candidate is the image's :class:`~sluice.pipelines.trainers.Trainer`
(:func:`deployed_trainer`): the built-in recipe, the champion's
registered form with its recorded ``get_params()``, or the deployed model project's own
``preprocess`` and ``train`` (:mod:`~sluice.pipelines.project_training`). The input names the model
and the data, never code: fields beyond :data:`REQUEST_FIELDS` are refused. The
champion/challenger comparison is :mod:`~sluice.pipelines.retraining_report`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import IntegrityError, SluiceError
from sluice.models.project import refuse_unknown_fields
from sluice.names import CANDIDATE_FILES, RETRAINING_STEPS
from sluice.pipelines.retraining_report import compare, render_comparison_html
from sluice.pipelines.skeleton import (
    State,
    check_run_id,
    error_cause,
    load_registry,
    notify,
    run_steps,
    start_execution,
    timestamped_run_id,
)
from sluice.pipelines.trainers import (
    JOBLIB_CANDIDATE,
    BuiltinTrainer,
    Candidate,
    Trainer,
)
from sluice.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from sluice.registry.store import ModelRegistry

#: What a retraining input may hold: which model, which data, the run and what started it, and
#: for a built-in model's first version its training spec. Never which code runs.
REQUEST_FIELDS = ("model", "data_uri", "run_id", "trigger", "spec")

#: The state preprocess returns, staged for a train step outside Lambda (:mod:`~sluice.pipelines.train_task`).
TRAIN_INPUT = "train-input.json"

# A step after preprocess: (settings, state, registry=) → the next state.
StateStep = Callable[..., State]


@dataclass(frozen=True)
class RetrainRequest:
    """What to retrain and on which data.

    Parameters
    ----------
    model
        Registered model name; its ``champion`` alias (or newest Approved version) is the parent.
    data_uri
        CSV or Parquet file with features and the label (s3:// or a local path).
    run_id
        Unique per run (the Step Functions execution name); the registry idempotency key.
    trigger
        What started the run: ``manual`` or the alarm name.
    spec
        A :class:`sluice.models.training.TrainingSpec` as a dict, for a model's first version (the
        initial training runs through the same pipeline). Without it, the parent's form is used.
    """

    model: str
    data_uri: str
    run_id: str
    trigger: str = "manual"
    spec: dict[str, Any] | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> RetrainRequest:
        """From a state machine input; a :class:`SluiceError` names the first wrong or unknown field."""
        if not isinstance(event, Mapping):
            raise SluiceError("retraining input must be a JSON object")
        refuse_unknown_fields(event, REQUEST_FIELDS, what="retraining input")
        for key in ("model", "data_uri", "run_id"):
            if not isinstance(event.get(key), str) or not event[key]:
                raise SluiceError(f"retraining input needs a non-empty string field {key!r}")
        check_run_id(event["run_id"])
        spec = event.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise SluiceError("retraining input field 'spec' must be an object (a training spec)")
        return cls(
            event["model"], event["data_uri"], event["run_id"], str(event.get("trigger", "manual")), spec
        )


def _work_key(state: dict[str, Any] | RetrainRequest, name: str) -> str:
    """Key of a run's staged file in the work bucket: ``retraining/<model>/<run_id>/<name>``."""
    model, run_id = (
        (state.model, state.run_id)
        if isinstance(state, RetrainRequest)
        else (state["model"], state["run_id"])
    )
    return f"retraining/{model}/{run_id}/{name}"


def _work_uri(settings: Settings, state: dict[str, Any] | RetrainRequest, name: str) -> str:
    return f"s3://{settings.work_bucket}/{_work_key(state, name)}"


def deployed_trainer() -> Trainer:
    """The project's trainer if the image's ``[tool.sluice]`` declares ``train``, else the built-in."""
    from sluice.models.project import deployed_project

    project = deployed_project()
    if project is not None and project.has("train"):
        from sluice.pipelines.project_training import ProjectTrainer

        return ProjectTrainer(project)
    return BuiltinTrainer()


# -- the steps --------------------------------------------------------------------------------


def preprocess(
    settings: Settings, request: RetrainRequest, *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Read the latest data, split it as the trainer does, stage train and holdout in S3."""
    from sluice.pipelines.datasource import load_table, write_table, write_text

    settings.require("work_bucket")
    registry = load_registry(settings, registry)
    trainer = deployed_trainer()
    state: dict[str, Any] = {
        "model": request.model,
        "run_id": request.run_id,
        "trigger": request.trigger,
        "parent_version": trainer.parent(registry, request),
        "spec": request.spec,
    }
    frame, lineage = load_table(request.data_uri)
    train_part, holdout = trainer.split(registry, state, frame)
    write_table(train_part, _work_uri(settings, request, "train.parquet"))
    write_table(holdout, _work_uri(settings, request, "holdout.parquet"))
    out = {**state, "data": lineage.to_dict(), "rows": {"train": len(train_part), "holdout": len(holdout)}}
    # A train step outside Lambda (ECS task, SageMaker job) reads the state from here.
    write_text(_work_uri(settings, request, TRAIN_INPUT), json.dumps(out))
    return out


def train_candidate(
    settings: Settings, state: dict[str, Any], *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Train the candidate on the staged train partition and stage it in the work bucket."""
    registry = load_registry(settings, registry)
    train_part, holdout = _staged_data(settings, state)
    staged = deployed_trainer().fit(registry, state, train_part, holdout)
    if staged.file not in CANDIDATE_FILES:  # a trainer's bug, not user input
        raise ValueError(f"a trainer staged {staged.file!r}, not one of {CANDIDATE_FILES}")
    aws.client("s3").put_object(
        Bucket=settings.work_bucket, Key=_work_key(state, staged.file), Body=staged.body
    )
    # The digest travels in the execution's state, which only the state machine writes: a later
    # step deserialises the staged candidate only if the work bucket still holds these exact bytes.
    return {
        **state,
        **staged.recorded,
        "candidate_file": staged.file,
        "candidate_sha256": hashlib.sha256(staged.body).hexdigest(),
    }


def evaluate(
    settings: Settings, state: dict[str, Any], *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Score the candidate and the parent on the same holdout; write the JSON + HTML comparison."""
    from sluice.pipelines.datasource import load_table, write_text

    registry = load_registry(settings, registry)
    trainer = deployed_trainer()
    candidate = _load_candidate(settings, state, registry, trainer)
    holdout, _ = load_table(_work_uri(settings, state, "holdout.parquet"))
    parent_metrics: dict[str, float] = {}
    if state["parent_version"] is not None:
        parent_metrics = trainer.parent_metrics(registry, state, candidate, holdout)
    comparison = compare(parent_metrics, candidate.metrics, task=candidate.task)
    comparison.update(
        model=state["model"],
        parent_version=state["parent_version"],
        run_id=state["run_id"],
        holdout_rows=len(holdout),
    )
    write_text(_work_uri(settings, state, "comparison.json"), json.dumps(comparison, indent=2))
    report_uri = _work_uri(settings, state, "comparison.html")
    write_text(report_uri, render_comparison_html(comparison), content_type="text/html")
    return {**state, "comparison": comparison, "report_uri": report_uri}


def register(
    settings: Settings, state: dict[str, Any], *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Register the candidate as PendingManualApproval with lineage, then notify. Never deploys."""
    from sluice.registry.lineage import Lineage, code_version

    registry = load_registry(settings, registry)
    trainer = deployed_trainer()
    candidate = _load_candidate(settings, state, registry, trainer)
    bundle, lineage_fields = trainer.bundle(registry, state, candidate, *_staged_data(settings, state))
    s3 = aws.client("s3")
    for name in ("comparison.json", "comparison.html"):
        body = s3.get_object(Bucket=settings.work_bucket, Key=_work_key(state, name))["Body"]
        bundle.artifacts[f"reports/{name}"] = body.read()
    bundle.notes.update(trigger=state["trigger"], run_id=state["run_id"])
    data = state["data"]
    fields: dict[str, Any] = {
        "data_uri": data["uri"],
        "data_version": data.get("version_id") or data.get("etag") or "",
        "data_sha256": data["sha256"],
        "data_rows": int(data["rows"]),
        "code_version": code_version(),
        "hyperparameters": bundle.hyperparameters,
        "parent_version": state["parent_version"],
        **lineage_fields,
    }
    record = registry.register(
        state["model"], bundle, lineage=Lineage(**fields), idempotency_key=f"retrain-{state['run_id']}"
    )
    out = {**state, "version": record.version, "status": record.status}
    out["deploy_command"] = (
        f"sluice models approve {state['model']}:{record.version} && "
        f"sluice endpoint deploy {state['model']}:{record.version} --weight 0.1"
    )
    notify(
        settings,
        f"Sluice: {state['model']} v{record.version} retrained, pending approval",
        {k: out[k] for k in ("model", "version", "parent_version", "comparison", "deploy_command")},
        indent=2,
    )
    return out


# The steps after preprocess, by the name the state machine gives them (``sluice.names``).
STEPS: dict[str, StateStep] = {"train": train_candidate, "evaluate": evaluate, "register": register}


def notify_failure(settings: Settings, event: dict[str, Any]) -> dict[str, Any]:
    """The state machine's Catch: tell people the run failed and that nothing was registered."""
    error = event.get("error") or {}
    step = event.get("failed_step") or "a step"
    # The cause itself (e.g. the data URI that does not exist), not a pointer to another message;
    # the state machine's Fail state ends the execution with it too.
    reason = error_cause(error.get("Cause", ""), limit=2000) or str(error.get("Error") or "unknown error")
    message = {
        "model": event.get("model"),
        "run_id": event.get("run_id"),
        "step": event.get("failed_step"),
        "data_uri": event.get("data_uri"),
        "error": error.get("Error"),
        "cause": f"{step} failed: {reason}",
        "registry": "unchanged: nothing is registered before the last step",
    }
    notify(settings, f"Sluice: retraining of {event.get('model')} failed in {step}", message, indent=2)
    return message


# -- running ----------------------------------------------------------------------------------


def run_all(
    settings: Settings,
    request: RetrainRequest,
    *,
    registry: ModelRegistry | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run the four steps in-process (CLI and tests); ``progress(step, seconds)`` after each."""

    def step(name: str) -> Callable[[State], State]:
        if name == "preprocess":
            return lambda _: preprocess(settings, request, registry=registry)
        return lambda state: STEPS[name](settings, state, registry=registry)

    return run_steps([(name, step(name)) for name in RETRAINING_STEPS], on_step=progress)


def run_id_for(model: str, *, now: datetime | None = None, window_s: int = 900) -> str:
    """Deterministic execution name per model and debounce window: one run per window."""
    now = now or datetime.now(UTC)
    bucket = int(now.timestamp()) // window_s * window_s
    return timestamped_run_id(model, datetime.fromtimestamp(bucket, UTC))


def start_run(
    settings: Settings,
    *,
    model: str,
    data_uri: str,
    trigger: str = "manual",
    now: datetime | None = None,
    debounce_s: int = 900,
) -> dict[str, Any]:
    """Start one retraining execution, unless one started for this model within ``debounce_s``.

    Single flight has two guards: a lock item in the lock table, taken with a conditional
    write that only succeeds when no unexpired lock exists, and a deterministic execution name
    per debounce window (Step Functions refuses a second execution of the same name).
    """
    settings.require("retrain_lock_table", "retrain_state_machine_arn")
    now = now or datetime.now(UTC)
    run_id = run_id_for(model, now=now, window_s=debounce_s)
    if not _take_lock(settings, model, run_id, trigger, now, debounce_s):
        return {"started": False, "reason": f"a retraining of {model} started less than {debounce_s} s ago"}
    request = {"model": model, "data_uri": data_uri, "run_id": run_id, "trigger": trigger}
    arn = start_execution(settings.retrain_state_machine_arn, run_id, request, exists_ok=True)
    if arn is None:
        return {"started": False, "reason": f"execution {run_id} already exists", "run_id": run_id}
    return {"started": True, "run_id": run_id, "execution_arn": arn}


def _take_lock(
    settings: Settings, model: str, run_id: str, trigger: str, now: datetime, debounce_s: int
) -> bool:
    """Take the model's retraining lock for ``debounce_s``; ``False`` if an unexpired one exists."""
    ddb = aws.client("dynamodb")
    try:
        ddb.put_item(
            TableName=settings.retrain_lock_table,
            Item={
                "pk": {"S": f"RETRAIN#{model}"},
                "run_id": {"S": run_id},
                "trigger": {"S": trigger},
                "expires_at": {"N": str(int(now.timestamp()) + debounce_s)},
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(int(now.timestamp()))}},
        )
    except ddb.exceptions.ConditionalCheckFailedException:
        return False
    return True


# -- internals --------------------------------------------------------------------------------


def _staged_data(settings: Settings, state: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's staged train and holdout partitions."""
    from sluice.pipelines.datasource import load_table

    train_part, _ = load_table(_work_uri(settings, state, "train.parquet"))
    holdout, _ = load_table(_work_uri(settings, state, "holdout.parquet"))
    return train_part, holdout


def _load_candidate(
    settings: Settings, state: dict[str, Any], registry: ModelRegistry, trainer: Trainer
) -> Candidate:
    """The staged candidate, deserialised only if its bytes match the digest the train step recorded."""
    name = state.get("candidate_file", JOBLIB_CANDIDATE)
    if name not in CANDIDATE_FILES:
        raise IntegrityError(f"retraining state names candidate file {name!r}, not one of {CANDIDATE_FILES}")
    key = _work_key(state, name)
    body = aws.client("s3").get_object(Bucket=settings.work_bucket, Key=key)["Body"].read()
    expected = state.get("candidate_sha256")
    if not isinstance(expected, str) or hashlib.sha256(body).hexdigest() != expected:
        raise IntegrityError(
            f"s3://{settings.work_bucket}/{key} does not match the digest the train step recorded; "
            "it is not loaded"
        )
    return trainer.load(registry, state, body)
