"""Retraining: preprocess → train → evaluate → register as pending approval. It never deploys.

Each step is one function taking and returning a small JSON-able state, so the same code runs as
Step Functions Lambda tasks (``sluice.handlers.retrain``), from the CLI (``sluice retrain``) and in
the local demo. Bulky data moves through S3 under ``retraining/<model>/<run_id>/`` in the work
bucket; the registry is written only by the last step, in one transactional ``register`` call with
the run id as idempotency key, so a failed or retried run never leaves a partial record.

The functional form is the champion's: its registered ``spec.json`` (estimator class, features,
task) with its recorded ``get_params()`` as hyperparameters. No new feature engineering or tuning.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sluice import aws
from sluice.errors import Conflict, NotFound, SluiceError
from sluice.names import RETRAINING_STEPS
from sluice.settings import Settings

CHAMPION_ALIAS = "champion"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# How much worse (absolute) the candidate's primary metric may be before the notification says so.
PRIMARY_METRIC = {"classification": "f1", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse", "mae"}


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
        A :class:`sluice.training.TrainingSpec` as a dict, for a model's first version (the
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
        if not _RUN_ID.match(event["run_id"]):
            raise SluiceError("run_id must be 1-80 characters of letters, digits, '-' or '_'")
        spec = event.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise SluiceError("retraining input field 'spec' must be an object (a training spec)")
        return cls(
            event["model"], event["data_uri"], event["run_id"], str(event.get("trigger", "manual")), spec
        )


def parent_version(registry, model: str) -> int:
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


def preprocess(settings: Settings, request: RetrainRequest, *, registry=None) -> dict[str, Any]:
    """Read the latest data, split it as the parent did, stage train and holdout in S3."""
    from sluice.datasource import load_table, write_table
    from sluice.training import TrainingSpec, split

    settings.require("work_bucket")
    registry = registry or _registry(settings)
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


def train_candidate(settings: Settings, state: dict[str, Any], *, registry=None) -> dict[str, Any]:
    """Fit the parent's form (class, features, ``get_params()``) on the staged train partition."""
    import joblib

    registry = registry or _registry(settings)
    result = _fit_parent_form(settings, state, registry)
    buffer = io.BytesIO()
    joblib.dump({"estimator": result.estimator, "preprocessor": result.preprocessor.to_artifacts()}, buffer)
    aws.client("s3").put_object(
        Bucket=settings.work_bucket, Key=_work_key(state, "candidate.joblib"), Body=buffer.getvalue()
    )
    return {**state, "candidate_metrics": result.metrics, "hyperparameters": result.hyperparameters}


def evaluate(settings: Settings, state: dict[str, Any], *, registry=None) -> dict[str, Any]:
    """Score the candidate and the parent on the same holdout; write the JSON + HTML comparison."""
    from sluice.datasource import load_table
    from sluice.training import evaluate as evaluate_model

    registry = registry or _registry(settings)
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
    s3 = aws.client("s3")
    s3.put_object(
        Bucket=settings.work_bucket,
        Key=_work_key(state, "comparison.json"),
        Body=json.dumps(comparison, indent=2).encode(),
        ContentType="application/json",
    )
    s3.put_object(
        Bucket=settings.work_bucket,
        Key=_work_key(state, "comparison.html"),
        Body=render_comparison_html(comparison).encode(),
        ContentType="text/html",
    )
    return {**state, "comparison": comparison, "report_uri": _work_uri(settings, state, "comparison.html")}


def register(settings: Settings, state: dict[str, Any], *, registry=None) -> dict[str, Any]:
    """Register the candidate as PendingManualApproval with lineage, then notify. Never deploys."""
    from sluice.registry import Lineage, ModelBundle, code_version

    registry = registry or _registry(settings)
    result = _fit_parent_form(settings, state, registry, candidate=_load_candidate(settings, state, registry))
    bundle = ModelBundle.from_training(result)
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
        f"sluice models approve {state['model']} {record.version} && "
        f"sluice endpoint deploy {state['model']} {record.version} --weight 0.1"
    )
    if settings.notify_topic_arn:
        aws.client("sns").publish(
            TopicArn=settings.notify_topic_arn,
            Subject=f"Sluice: {state['model']} v{record.version} retrained, pending approval"[:100],
            Message=json.dumps(
                {k: out[k] for k in ("model", "version", "parent_version", "comparison", "deploy_command")},
                indent=2,
                default=str,
            ),
        )
    return out


def notify_failure(settings: Settings, event: dict[str, Any]) -> dict[str, Any]:
    """The state machine's Catch: tell people the run failed and that nothing was registered."""
    message = {
        "model": event.get("model"),
        "run_id": event.get("run_id"),
        "step": event.get("failed_step"),
        "error": (event.get("error") or {}).get("Error"),
        "cause": str((event.get("error") or {}).get("Cause", ""))[:2000],
        "registry": "unchanged: nothing is registered before the last step",
    }
    if settings.notify_topic_arn:
        aws.client("sns").publish(
            TopicArn=settings.notify_topic_arn,
            Subject=f"Sluice: retraining of {event.get('model')} failed"[:100],
            Message=json.dumps(message, indent=2),
        )
    return message


def compare(parent: dict[str, float], candidate: dict[str, float], *, task: str) -> dict[str, Any]:
    """Champion/challenger figures on one holdout, and which one the primary metric favours."""
    primary = PRIMARY_METRIC[task]
    better = None
    if primary in parent and primary in candidate:
        delta = candidate[primary] - parent[primary]
        better = delta < 0 if primary in LOWER_IS_BETTER else delta > 0
    return {
        "primary_metric": primary,
        "champion": parent,
        "challenger": candidate,
        "delta": {k: candidate[k] - parent[k] for k in parent if k in candidate},
        "challenger_better": better,
    }


def render_comparison_html(comparison: dict[str, Any]) -> str:
    """A self-contained champion/challenger report: a metric table and a grouped bar chart."""
    import base64
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(comparison["challenger"])
    champion = [comparison["champion"].get(n, float("nan")) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], champion, 0.4, label="champion")
    ax.bar(
        [p + 0.2 for p in positions], [comparison["challenger"][n] for n in names], 0.4, label="challenger"
    )
    ax.set_xticks(list(positions), names)
    ax.set_title("Holdout metrics, same rows")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)

    def cell(value: float | None, fmt: str = ".4f") -> str:
        return "n/a" if value is None else format(value, fmt)

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{cell(comparison['champion'].get(n))}</td>"
        f"<td>{cell(comparison['challenger'][n])}</td><td>{cell(comparison['delta'].get(n), '+.4f')}</td></tr>"
        for n in names
    )
    parent = comparison.get("parent_version")
    title = (
        f"{comparison.get('model', '')}: champion v{parent} vs challenger"
        if parent is not None
        else f"{comparison.get('model', '')}: first version (no champion yet)"
    )
    verdict = {True: "better", False: "not better", None: "not comparable"}[comparison["challenger_better"]]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Run {html.escape(str(comparison.get('run_id', '')))}, "
        f"{comparison.get('holdout_rows', '?')} holdout rows. On {html.escape(comparison['primary_metric'])} "
        f"the challenger is <b>{verdict}</b>. It is registered as PendingManualApproval: nothing is deployed.</p>"
        "<table border='1' cellpadding='4'><tr><th>metric</th><th>champion</th><th>challenger</th>"
        f"<th>delta</th></tr>{rows}</table>"
        f"<img alt='metrics' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
        "</body></html>"
    )


def run_all(settings: Settings, request: RetrainRequest, *, registry=None, progress=None) -> dict[str, Any]:
    """Run the four steps in-process (CLI and tests); ``progress(step, seconds)`` after each."""
    steps = {"train": train_candidate, "evaluate": evaluate, "register": register}
    state: dict[str, Any] = {}
    for name in RETRAINING_STEPS:
        started = time.perf_counter()
        if name == "preprocess":
            state = preprocess(settings, request, registry=registry)
        else:
            state = steps[name](settings, state, registry=registry)
        if progress:
            progress(name, time.perf_counter() - started)
    return state


def run_id_for(model: str, *, now: datetime | None = None, window_s: int = 900) -> str:
    """Deterministic execution name per model and debounce window: one run per window."""
    now = now or datetime.now(UTC)
    bucket = int(now.timestamp()) // window_s * window_s
    return f"{model}-{datetime.fromtimestamp(bucket, UTC):%Y%m%dT%H%M%S}"[:80]


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

    Single flight has two guards: a lock item in the registry table, taken with a conditional
    write that only succeeds when no unexpired lock exists, and a deterministic execution name
    per debounce window (Step Functions refuses a second execution of the same name).
    """
    settings.require("registry_table", "retrain_state_machine_arn")
    now = now or datetime.now(UTC)
    run_id = run_id_for(model, now=now, window_s=debounce_s)
    ddb = aws.client("dynamodb")
    try:
        ddb.put_item(
            TableName=settings.registry_table,
            Item={
                "pk": {"S": f"MODEL#{model}"},
                "sk": {"S": "RETRAIN#LOCK"},
                "run_id": {"S": run_id},
                "trigger": {"S": trigger},
                "expires_at": {"N": str(int(now.timestamp()) + debounce_s)},
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(int(now.timestamp()))}},
        )
    except ddb.exceptions.ConditionalCheckFailedException:
        return {"started": False, "reason": f"a retraining of {model} started less than {debounce_s} s ago"}
    request = {"model": model, "data_uri": data_uri, "run_id": run_id, "trigger": trigger}
    sfn = aws.client("stepfunctions")
    try:
        execution = sfn.start_execution(
            stateMachineArn=settings.retrain_state_machine_arn, name=run_id, input=json.dumps(request)
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return {"started": False, "reason": f"execution {run_id} already exists", "run_id": run_id}
    return {"started": True, "run_id": run_id, "execution_arn": execution["executionArn"]}


# -- internals --------------------------------------------------------------------------------


@dataclass
class _Candidate:
    spec: Any
    estimator: Any
    preprocessor: Any
    metrics: dict[str, float]


def _registry(settings: Settings):
    from sluice.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def _parent_spec(registry, state: dict[str, Any]):
    from sluice.training import TrainingSpec

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
    settings: Settings, state: dict[str, Any], registry, candidate: _Candidate | None = None
):
    """Fit (or, with ``candidate``, rebuild) the TrainingResult of this run on the staged split."""
    from sluice.datasource import load_table
    from sluice.training import TrainingResult, fit

    train_part, _ = load_table(_work_uri(settings, state, "train.parquet"))
    holdout, _ = load_table(_work_uri(settings, state, "holdout.parquet"))
    spec = _parent_spec(registry, state)
    if candidate is None:
        return fit(train_part, holdout, spec)
    # The train step already scored this candidate on this holdout.
    return TrainingResult(
        spec, candidate.preprocessor, candidate.estimator, candidate.metrics, train_part, holdout
    )


def _load_candidate(settings: Settings, state: dict[str, Any], registry) -> _Candidate:
    import joblib

    from sluice.features import Preprocessor

    body = (
        aws.client("s3")
        .get_object(Bucket=settings.work_bucket, Key=_work_key(state, "candidate.joblib"))["Body"]
        .read()
    )
    staged = joblib.load(io.BytesIO(body))
    spec = _parent_spec(registry, state)
    return _Candidate(
        spec,
        staged["estimator"],
        Preprocessor.from_artifacts(staged["preprocessor"]),
        state["candidate_metrics"],
    )


def _as_result(loaded, spec):
    """A registered version as a TrainingResult-like object for :func:`sluice.training.evaluate`."""
    from sluice.training import TrainingResult

    return TrainingResult(spec, loaded.preprocessor, loaded.estimator, {}, None, None)
