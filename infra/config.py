"""Stage settings, read once from CDK context and validated with one-line errors.

Context keys (``cdk.json``, each overridable with ``-c key=value``):

``stage``
    ``dev``, ``prod`` or ``all`` (default): which stages to synthesize.
``<stage>:account`` / ``<stage>:region``
    The 12-digit AWS account id and the region of each stage.
``<stage>:retainData``
    Keep buckets and tables when the stack is deleted, and turn on termination
    protection. Defaults to true for ``prod`` and false otherwise.
``sluice:alarmEmail``
    Optional address subscribed to the alarm and notification topics.
``<stage>:auditRetentionDays``
    Object Lock retention (compliance mode) of the registry's audit events: nobody can delete
    or rewrite an event before it ends. Defaults to 30 days for ``dev`` and 3650 for ``prod``.
``<stage>:batchFaultDrill``
    Accept the batch failure drill (``faults`` in a batch input). Defaults to false; ``cdk.json``
    turns it on for ``dev`` only, so prod refuses such inputs.
``sluice:models``
    The models every stage serves: a list of objects, or the path (relative to ``cdk.json``) of
    a JSON file holding that list. Each stage builds, per model, an endpoint, two batch
    pipelines, a retraining pipeline and monitoring whose per-feature alarms come from the
    model's committed schema ``infra/schemas/<name>.json`` (:mod:`infra.model_schemas`).
    Each object has a ``name`` and, optionally, the fields of :data:`MODEL_FIELDS`, e.g.
    ``{"name": "credit-risk", "memoryMb": 2048, "batchSchedule": "none"}``. A model with its own
    code gives ``"project": "<folder>"`` (relative to ``cdk.json``; :mod:`infra.model_projects`)
    and ``"flavour": "container"``: its endpoint, batch and retraining steps run an image
    built from that project (``containers/model/Dockerfile``). The first model is
    the stage's default (``ModelName``, ``EndpointUrl``, ... outputs) and keeps the stack's
    original logical ids: keep it first, since moving another model first replaces resources
    whose physical names are fixed.
``sluice:model``
    Shorthand for one model, ``sluice:models`` = ``[{"name": <value>}]``; ignored when
    ``sluice:models`` is set. Default ``credit-risk``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from infra.model_fields import MODEL_FIELDS
from infra.model_projects import APP_DIR, read_project
from infra.model_schemas import feature_names, feature_schema_path, request_schema_path
from sluice.names import approver_role_name, deployer_role_name, promotion_role_name, role_arn

STAGE_NAMES = ("dev", "prod")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: A model name: ``sluice-prod-<name>-endpoint`` (function) and ``sluice-prod-<name>-quality``
#: (schedule) must fit AWS's 64 characters.
_MODEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,42}$")
#: Reserved concurrency of each function unless ``<stage>:reservedConcurrency`` says otherwise.
#: The entry points anyone with access can drive (endpoint, labels, registry API) are capped, so a
#: flood of calls can neither exhaust the account's concurrency nor run up an unbounded bill;
#: ``batch`` applies to each step function of each batch pipeline, ``drift_fanout`` to the drift
#: fan-out's steps; each one's Distributed Map runs as many children at once (10 where unreserved). Each model's functions (endpoint, retrain, retrain_trigger, batch)
#: get theirs once per model: 134 per model with these defaults, plus 22 for the stage (23 in prod),
#: and Lambda keeps 100 of an account's concurrency (1,000 by default) unreserved.
DEFAULT_RESERVED_CONCURRENCY: Mapping[str, int | None] = MappingProxyType(
    {
        "endpoint": 50,
        "labels": 5,
        "registry_api": 5,
        "drift": 2,
        "drift_fanout": 10,
        "retrain": 2,
        "retrain_trigger": 2,
        "batch": 10,
        "promotion": 1,
    }
)
_MAX_RESERVED_CONCURRENCY = 1000


class ConfigError(ValueError):
    """A context value is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    """One model of a stage. The defaults are those of the constructs that take each setting.

    Attributes
    ----------
    name
        The registered model name (``sluice-<stage>-<name>-...`` physical names).
    project
        The model project's folder relative to the app directory (``cdk.json``), checked by
        :func:`infra.model_projects.read_project`; ``None``: Sluice's own images serve the model.
    flavour, memory_mb, error_threshold, latency_p99_ms, quality_bounds, rate_limit, burst_limit
        The endpoint's (:class:`infra.constructs.endpoint.Endpoint`).
    batch_schedule_days
        Days between scheduled batch runs of the in-pipeline batch pipeline; ``None``: no schedule.
    drift_rate_minutes, drift_window_minutes, psi_tolerance, feature_psi_tolerance,
    share_tolerance, quality_rate_minutes, quality_window_minutes
        The monitoring's (:class:`infra.constructs.monitoring.MonitoredModel` ``rate_minutes``,
        ``window_minutes``, ...).
    """

    name: str
    project: str | None = None
    flavour: Literal["zip", "container"] = "zip"
    memory_mb: int = 1024
    error_threshold: int = 1
    latency_p99_ms: int = 1000
    quality_bounds: tuple[float, float] = (0.01, 0.99)
    rate_limit: int = 50
    burst_limit: int = 100
    batch_schedule_days: int | None = 1
    drift_rate_minutes: int = 60
    drift_window_minutes: int | None = None
    psi_tolerance: float = 0.2
    feature_psi_tolerance: tuple[tuple[str, float], ...] = ()
    share_tolerance: float = 0.0
    quality_rate_minutes: int = 60
    quality_window_minutes: int = 1440
    quality_min_effect: float = 0.01
    """The smallest worsening of a quality metric worth an alarm (``QualityPolicy.min_effect``)."""
    feature_alarm_datapoints: tuple[int, int] = (2, 3)
    """Per-feature drift alarms fire when M of the last N drift windows drifted: ``(M, N)``."""
    training_compute: Literal["lambda", "fargate", "sagemaker"] = "lambda"
    """Where the retraining train step runs: a Lambda container, an ECS task on Fargate, or a
    SageMaker training job (the last two through Step Functions' ``.sync`` integrations)."""


@dataclass(frozen=True)
class StageConfig:
    """Settings of one account's stage."""

    name: str
    account: str
    region: str
    retain_data: bool
    alarm_email: str | None = None
    models: tuple[ModelConfig, ...] = field(default_factory=lambda: (ModelConfig("credit-risk"),))
    """The models this stage serves, monitors and retrains; the first is the stage's default
    (context keys ``sluice:models`` and ``sluice:model``)."""
    promotion_source: PromotionSource | None = None
    """For prod: the stage whose Approved versions prod's promotion function pulls (dev)."""
    registry_readers: tuple[str, ...] = ()
    """For dev: role ARNs of other accounts that may read the registry (prod's promotion role)."""
    audit_retention_days: int = 30
    """Object Lock retention of audit events (context key ``<stage>:auditRetentionDays``)."""
    reserved_concurrency: Mapping[str, int | None] = field(
        default_factory=lambda: DEFAULT_RESERVED_CONCURRENCY
    )
    """``{function: reserved concurrency}``; ``None`` leaves a function unreserved."""
    capture_retention_days: int = 90
    """Days captured rows, labels and reports are kept (context key ``<stage>:captureRetentionDays``)."""
    artifact_lock_days: int = 30
    """Object Lock retention, governance mode, of registry artifacts (``<stage>:artifactLockDays``)."""
    artifact_noncurrent_days: int = 365
    """Days a replaced or deleted artifact version is kept (``<stage>:artifactNoncurrentDays``)."""
    log_execution_data: bool = False
    """Whether Step Functions logs include execution data (inputs, outputs): dev only."""
    batch_fault_drill: bool = False
    """Batch inputs may carry ``faults`` (context key ``<stage>:batchFaultDrill``)."""

    @property
    def model_name(self) -> str:
        """The stage's default model: the first listed (``ModelName`` and the single-model outputs)."""
        return self.models[0].name

    @property
    def construct_id(self) -> str:
        return self.name.capitalize()

    @property
    def deployer_role_name(self) -> str:
        """Fixed name of the stage's deployer role, so another account can trust it."""
        return deployer_role_name(self.name)

    @property
    def approver_role_name(self) -> str:
        """Fixed name of the stage's approver role, which the registry API's policy names."""
        return approver_role_name(self.name)


@dataclass(frozen=True)
class PromotionSource:
    """Where a stage pulls promotions from: the source stage's name, account and region."""

    stage: str
    account: str
    region: str


@dataclass(frozen=True)
class AppConfig:
    stages: tuple[StageConfig, ...]

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> AppConfig:
        """Build the settings from a context getter such as ``app.node.try_get_context``."""
        selected = _text(get, "stage", default="all")
        if selected not in (*STAGE_NAMES, "all"):
            raise ConfigError(f"context key 'stage' must be one of dev, prod, all; got {selected!r}")
        email = _text(get, "sluice:alarmEmail", default="") or None
        if email is not None and not _EMAIL.match(email):
            raise ConfigError(f"context key 'sluice:alarmEmail' must be an e-mail address; got {email!r}")
        models = _models(get)
        dev_account = _matching(get, "dev:account", _ACCOUNT, "a 12-digit AWS account id")
        dev_region = _matching(get, "dev:region", _REGION, "an AWS region such as eu-west-1")
        prod_account = _matching(get, "prod:account", _ACCOUNT, "a 12-digit AWS account id")
        stages = []
        for name in STAGE_NAMES:
            account = _matching(get, f"{name}:account", _ACCOUNT, "a 12-digit AWS account id")
            region = _matching(get, f"{name}:region", _REGION, "an AWS region such as eu-west-1")
            retain = _flag(get, f"{name}:retainData", default=(name == "prod"))
            reserved = _reserved_concurrency(get, f"{name}:reservedConcurrency")
            log_execution_data = _flag(get, f"{name}:logExecutionData", default=False)
            stages.append(
                StageConfig(
                    name=name,
                    account=account,
                    region=region,
                    retain_data=retain,
                    reserved_concurrency=reserved,
                    log_execution_data=log_execution_data,
                    batch_fault_drill=_flag(get, f"{name}:batchFaultDrill", default=False),
                    alarm_email=email,
                    models=models,
                    capture_retention_days=_days(
                        get, f"{name}:captureRetentionDays", default=365 if name == "prod" else 90
                    ),
                    artifact_lock_days=_days(
                        get, f"{name}:artifactLockDays", default=365 if name == "prod" else 30
                    ),
                    artifact_noncurrent_days=_days(
                        get, f"{name}:artifactNoncurrentDays", default=730 if name == "prod" else 365
                    ),
                    audit_retention_days=_days(
                        get, f"{name}:auditRetentionDays", default=3650 if name == "prod" else 30
                    ),
                    promotion_source=(
                        PromotionSource("dev", dev_account, dev_region) if name == "prod" else None
                    ),
                    registry_readers=(
                        (role_arn(prod_account, promotion_role_name("prod")),) if name == "dev" else ()
                    ),
                )
            )
        chosen = tuple(s for s in stages if selected in ("all", s.name))
        return cls(stages=chosen)

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"stage {name!r} is not selected (context key 'stage')")


def _text(get: Callable[[str], Any], key: str, *, default: str | None = None) -> str:
    value = get(key)
    if value is None:
        if default is None:
            raise ConfigError(f"context key {key!r} is missing (set it in cdk.json or with -c {key}=...)")
        return default
    if not isinstance(value, str | int):
        raise ConfigError(f"context key {key!r} must be a string; got {type(value).__name__}")
    return str(value).strip()


def _matching(get: Callable[[str], Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = _text(get, key)
    if not pattern.match(value):
        raise ConfigError(f"context key {key!r} must be {what}; got {value!r}")
    return value


def _flag(get: Callable[[str], Any], key: str, *, default: bool) -> bool:
    value = get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"context key {key!r} must be true or false; got {value!r}")


def _days(get: Callable[[str], Any], key: str, *, default: int) -> int:
    value = get(key)
    if value is None:
        return default
    try:
        days = int(str(value))
    except ValueError:
        days = 0
    if not 1 <= days <= 36500:
        raise ConfigError(f"context key {key!r} must be a number of days from 1 to 36500; got {value!r}")
    return days


def _reserved_concurrency(get: Callable[[str], Any], key: str) -> Mapping[str, int | None]:
    """:data:`DEFAULT_RESERVED_CONCURRENCY` updated with the ``{function: limit}`` object at ``key``."""
    value = get(key)
    if value is None:
        return DEFAULT_RESERVED_CONCURRENCY
    if isinstance(value, str):  # -c key='{"endpoint": 20}' on the command line
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if not isinstance(value, dict):
        raise ConfigError(f"context key {key!r} must be an object of function: limit; got {value!r}")
    merged = dict(DEFAULT_RESERVED_CONCURRENCY)
    for function, limit in value.items():
        if function not in DEFAULT_RESERVED_CONCURRENCY:
            known = ", ".join(DEFAULT_RESERVED_CONCURRENCY)
            raise ConfigError(f"context key {key!r} names unknown function {function!r} (known: {known})")
        valid = (
            isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= _MAX_RESERVED_CONCURRENCY
        )
        if limit is not None and not valid:
            raise ConfigError(
                f"context key {key!r}: {function!r} must be an integer from 1 to "
                f"{_MAX_RESERVED_CONCURRENCY}, or null for no reservation; got {limit!r}"
            )
        merged[function] = limit
    return MappingProxyType(merged)


# --- models (``sluice:models``, ``sluice:model``) ---------------------------------------------------

# APP_DIR: where ``cdk.json`` lives; a models file or a project named in ``sluice:models`` is
# relative to it.
_MODELS_KEY = "sluice:models"


def _models(get: Callable[[str], Any]) -> tuple[ModelConfig, ...]:
    """The models of ``sluice:models`` (a list, or a JSON file holding one), else ``sluice:model``."""
    value, where = get(_MODELS_KEY), f"context key {_MODELS_KEY!r}"
    if value is None:
        name = _text(get, "sluice:model", default="credit-risk")
        return (_model({"name": name}, where="context key 'sluice:model'", single=True),)
    if isinstance(value, str) and value.strip().startswith("["):  # -c sluice:models='[{...}]'
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, str):
        value, where = _models_file(value.strip())
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where} must be a non-empty list of model objects, or the path of a JSON file holding "
            f"one; got {value!r}"
        )
    models = tuple(_model(entry, where=f"{where}[{i}]") for i, entry in enumerate(value))
    names = [m.name for m in models]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: model {name!r} is listed twice")
    return models


def _models_file(path_text: str) -> tuple[Any, str]:
    path = Path(path_text)
    path = path if path.is_absolute() else APP_DIR / path
    where = f"models file {path_text} (context key {_MODELS_KEY!r})"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        return json.loads(path.read_text()), where
    except ValueError as err:
        raise ConfigError(f"{where} is not valid JSON: {err}") from None


def _model(entry: Any, *, where: str, single: bool = False) -> ModelConfig:
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{where} must be an object with at least a 'name'; got {entry!r}")
    name = entry["name"]
    if not isinstance(name, str) or not _MODEL.match(name):
        what = where if single else f"{where}.name"
        raise ConfigError(f"{what} must be 1-43 lower-case letters, digits or '-'; got {name!r}")
    where = where if single else f"{where} ({name})"
    settings: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "name":
            continue
        if key not in MODEL_FIELDS:
            raise ConfigError(f"{where}: unknown field {key!r} (known: name, {', '.join(MODEL_FIELDS)})")
        attribute, parse = MODEL_FIELDS[key]
        try:
            settings[attribute] = parse(value)
        except ValueError as err:
            raise ConfigError(f"{where}: {key!r} must be {err}; got {value!r}") from None
    if "project" in settings:
        settings["project"] = _project(settings["project"], settings.get("flavour", "zip"), where=where)
    features = _schema_features(name, where=where)
    unknown = [f for f, _ in settings.get("feature_psi_tolerance", ()) if f not in features]
    if unknown:
        raise ConfigError(
            f"{where}: 'featurePsiTolerance' names {unknown[0]!r}, not a feature of "
            f"infra/schemas/{name}.json ({', '.join(features)})"
        )
    return ModelConfig(name=name, **settings)


def _schema_features(name: str, *, where: str) -> tuple[str, ...]:
    """The features of the model's committed schema; a one-line error if it is not committed."""
    if not feature_schema_path(name).is_file():
        raise ConfigError(
            f"{where}: infra/schemas/{name}.json not found: commit the model's feature schema there "
            f"(a registered version's schema.json: sluice models download {name} --artifact "
            "schema.json --out DIR)"
        )
    if not request_schema_path(name).is_file():
        raise ConfigError(
            f"{where}: infra/schemas/{name}.request.json not found: generate it with "
            "SLUICE_REGENERATE_SCHEMAS=1 .venv/bin/pytest tests/infra/test_model_schemas.py"
        )
    return feature_names(name)


def _project(path: str, flavour: str, *, where: str) -> str:
    """The project's folder relative to the app directory, once checked (one-line errors)."""
    if flavour != "container":
        raise ConfigError(
            f"{where}: 'project' needs 'flavour': 'container' (the project's code runs in the model's "
            "image; the zip flavour serves ONNX without it)"
        )
    try:
        return read_project(path).path
    except ValueError as err:
        raise ConfigError(f"{where}: 'project' {err}") from None
