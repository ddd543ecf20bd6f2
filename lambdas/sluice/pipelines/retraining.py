"""Retraining: preprocess → train → evaluate → register as pending approval. It never deploys.

Each step is one function taking and returning a small JSON-able state, so the same code runs as
Step Functions Lambda tasks (``sluice.handlers.retrain``), from the CLI (``sluice retrain``) and in
the local demo. Bulky data moves through S3 under ``retraining/<model>/<run_id>/`` in the work
bucket; the registry is written only by the last step, in one transactional ``register`` call with
the run id as idempotency key, so a failed or retried run never leaves a partial record.

The functional form is the champion's: its registered ``spec.json`` (estimator class, features,
task) with its recorded ``get_params()`` as hyperparameters. No new feature engineering or tuning.
The champion/challenger comparison is :mod:`~sluice.pipelines.retraining_report`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import Conflict, IntegrityError, NotFound, SluiceError
from sluice.names import RETRAINING_STEPS
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
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.models.training import TrainingResult, TrainingSpec
    from sluice.registry.store import ModelRegistry

CHAMPION_ALIAS = "champion"
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
    def from_event(cls, event: dict[str, Any]) -> RetrainRequest:
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


def parent_version(registry: ModelRegistry, model: str) -> int:
    """The version a retrain starts from: the champion, else the newest Approved version."""
    try:
        return registry.get(model, alias=CHAMPION_ALIAS).version
    except NotFound:
        approved = [r.version for r in registry.list_versions(model) if r.status == "Approved"]
        if not approved:
            raise Conflict(
                f"model {model!r} has no champion alias and no Approved version to retrain"
            ) from None
        return max(approved)


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


# -- the steps --------------------------------------------------------------------------------


def preprocess(
    settings: Settings, request: RetrainRequest, *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Read the latest data, split it as the parent did, stage train and holdout in S3."""
    from sluice.models.training import TrainingSpec, split
    from sluice.pipelines.datasource import load_table, write_table

    settings.require("work_bucket")
    registry = load_registry(settings, registry)
    parent: int | None
    if request.spec is not None:
        parent, spec = None, TrainingSpec.from_dict(request.spec)
    else:
        parent = parent_version(registry, request.model)
        spec = TrainingSpec.from_dict(json.loads(registry.fetch(request.model, parent, "spec.json")))
    frame, lineage = load_table(request.data_uri)
    train_part, holdout = split(frame, spec)
    write_table(train_part, _work_uri(settings, request, "train.parquet"))
    write_table(holdout, _work_uri(settings, request, "holdout.parquet"))
    return {
        "model": request.model,
        "run_id": request.run_id,
        "trigger": request.trigger,
        "parent_version": parent,
        "spec": request.spec,
        "data": lineage.to_dict(),
        "rows": {"train": len(train_part), "holdout": len(holdout)},
    }


def train_candidate(
    settings: Settings, state: dict[str, Any], *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Fit the parent's form (class, features, ``get_params()``) on the staged train partition."""
    import joblib

    registry = load_registry(settings, registry)
    result = _fit_parent_form(settings, state, registry)
    buffer = io.BytesIO()
    joblib.dump({"estimator": result.estimator, "preprocessor": result.preprocessor.to_artifacts()}, buffer)
    body = buffer.getvalue()
    aws.client("s3").put_object(Bucket=settings.work_bucket, Key=_work_key(state, "candidate.joblib"), Body=body)
    # The digest travels in the execution's state, which only the state machine writes: a later
    # step unpickles the staged candidate only if the work bucket still holds these exact bytes.
    return {
        **state,
        "candidate_metrics": result.metrics,
        "hyperparameters": result.hyperparameters,
        "candidate_sha256": hashlib.sha256(body).hexdigest(),
    }


def evaluate(
    settings: Settings, state: dict[str, Any], *, registry: ModelRegistry | None = None
) -> dict[str, Any]:
    """Score the candidate and the parent on the same holdout; write the JSON + HTML comparison."""
    from sluice.models.training import evaluate as evaluate_model
    from sluice.pipelines.datasource import load_table, write_text

    registry = load_registry(settings, registry)
    holdout, _ = load_table(_work_uri(settings, state, "holdout.parquet"))
    candidate = _load_candidate(settings, state, registry)
    parent_metrics: dict[str, float] = {}
    if state["parent_version"] is not None:
        champion = registry.load(state["model"], version=state["parent_version"])
        parent_metrics = evaluate_model(_as_result(champion, candidate.spec), holdout)
    comparison = compare(parent_metrics, candidate.metrics, task=candidate.spec.task)
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
    from sluice.models.packaging import bundle_from_training
    from sluice.registry.lineage import Lineage, code_version

    registry = load_registry(settings, registry)
    result = _fit_parent_form(settings, state, registry, candidate=_load_candidate(settings, state, registry))
    bundle = bundle_from_training(result)
    s3 = aws.client("s3")
    for name in ("comparison.json", "comparison.html"):
        body = s3.get_object(Bucket=settings.work_bucket, Key=_work_key(state, name))["Body"]
        bundle.artifacts[f"reports/{name}"] = body.read()
    bundle.notes.update(trigger=state["trigger"], run_id=state["run_id"])
    data = state["data"]
    lineage = Lineage(
        data_uri=data["uri"],
        data_version=data.get("version_id") or data.get("etag") or "",
        data_sha256=data["sha256"],
        data_rows=int(data["rows"]),
        code_version=code_version(),
        hyperparameters=result.hyperparameters,
        parent_version=state["parent_version"],
    )
    record = registry.register(
        state["model"], bundle, lineage=lineage, idempotency_key=f"retrain-{state['run_id']}"
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


@dataclass
class _Candidate:
    spec: TrainingSpec
    estimator: Any
    preprocessor: Any
    metrics: dict[str, float]


def _parent_spec(registry: ModelRegistry, state: dict[str, Any]) -> TrainingSpec:
    from sluice.models.training import TrainingSpec

    if state.get("spec"):
        return TrainingSpec.from_dict(state["spec"])
    spec = TrainingSpec.from_dict(
        json.loads(registry.fetch(state["model"], state["parent_version"], "spec.json"))
    )
    params = (
        registry.get(state["model"], version=state["parent_version"]).hyperparameters or spec.hyperparameters
    )
    return replace(spec, hyperparameters=dict(params))


def _fit_parent_form(
    settings: Settings, state: dict[str, Any], registry: ModelRegistry, candidate: _Candidate | None = None
) -> TrainingResult:
    """Fit (or, with ``candidate``, rebuild) the TrainingResult of this run on the staged split."""
    from sluice.models.training import TrainingResult, fit
    from sluice.pipelines.datasource import load_table

    train_part, _ = load_table(_work_uri(settings, state, "train.parquet"))
    holdout, _ = load_table(_work_uri(settings, state, "holdout.parquet"))
    spec = _parent_spec(registry, state)
    if candidate is None:
        return fit(train_part, holdout, spec)
    # The train step already scored this candidate on this holdout.
    return TrainingResult(
        spec, candidate.preprocessor, candidate.estimator, candidate.metrics, train_part, holdout
    )


def _load_candidate(settings: Settings, state: dict[str, Any], registry: ModelRegistry) -> _Candidate:
    import joblib

    from sluice.models.features import Preprocessor

    key = _work_key(state, "candidate.joblib")
    body = aws.client("s3").get_object(Bucket=settings.work_bucket, Key=key)["Body"].read()
    expected = state.get("candidate_sha256")
    if not isinstance(expected, str) or hashlib.sha256(body).hexdigest() != expected:
        raise IntegrityError(
            f"s3://{settings.work_bucket}/{key} does not match the digest the train step recorded; "
            "it is not loaded"
        )
    staged = joblib.load(io.BytesIO(body))
    spec = _parent_spec(registry, state)
    return _Candidate(
        spec,
        staged["estimator"],
        Preprocessor.from_artifacts(staged["preprocessor"]),
        state["candidate_metrics"],
    )


def _as_result(loaded: Any, spec: TrainingSpec) -> TrainingResult:
    """A registered version as a TrainingResult-like object for :func:`sluice.models.training.evaluate`."""
    from sluice.models.training import TrainingResult

    return TrainingResult(spec, loaded.preprocessor, loaded.estimator, {}, None, None)
