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
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sluice.names import approver_role_name, deployer_role_name, promotion_role_name, role_arn

STAGE_NAMES = ("dev", "prod")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MODEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
#: Reserved concurrency of each function unless ``<stage>:reservedConcurrency`` says otherwise.
#: The entry points anyone with access can drive (endpoint, labels, registry API) are capped, so a
#: flood of calls can neither exhaust the account's concurrency nor run up an unbounded bill;
#: ``batch`` applies to each step function of each batch pipeline (the Distributed Map runs at
#: most 10 children at a time).
DEFAULT_RESERVED_CONCURRENCY: Mapping[str, int | None] = MappingProxyType(
    {
        "endpoint": 50,
        "labels": 5,
        "registry_api": 5,
        "drift": 2,
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
class StageConfig:
    """Settings of one account's stage."""

    name: str
    account: str
    region: str
    retain_data: bool
    alarm_email: str | None = None
    model_name: str = "credit-risk"
    """The model this stage serves, monitors and retrains (context key ``sluice:model``)."""
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
    """Batch inputs may carry ``faults`` (context key ``<stage>:auditRetentionDays``
    Object Lock retention (compliance mode) of the registry's audit events: nobody can delete
    or rewrite an event before it ends. Defaults to 30 days for ``dev`` and 3650 for ``prod``.
``<stage>:batchFaultDrill``)."""

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
        model_name = _text(get, "sluice:model", default="credit-risk")
        if not _MODEL.match(model_name):
            raise ConfigError(
                f"context key 'sluice:model' must be 1-48 lower-case letters, digits or '-'; got {model_name!r}"
            )
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
                    model_name=model_name,
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
