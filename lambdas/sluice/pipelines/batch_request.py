"""A batch scoring request: what to score, with which model version, and where the results go.

It is the batch state machine's input, parsed once by the first step (and by ``sluice batch run``
before anything starts), so a mistake is reported with the field it is in.

An input cannot widen its pipeline's scope (:class:`BatchScope`, fixed per state machine by the
construct): it names the pipeline's own model, writes only under the stage's output prefix, never
chooses the run id (the pipeline's execution name) and stays within these bounds:

``shard_rows``
    ``MIN_SHARD_ROWS`` (1,000) to ``MAX_SHARD_ROWS`` (1,000,000), so an input cannot fan out one
    Lambda per row (and ``MAX_SHARDS`` caps the children whatever the input).
``max_reject_share``
    0 to ``MAX_REJECT_SHARE`` (0.5): a run that rejects most of its input fails.
``faults``
    The failure drill, only where the stage enables it (``cdk.json`` ``<stage>:batchFaultDrill``,
    the functions' ``SLUICE_BATCH_FAULT_DRILL``).

Nor can it choose code: a field beyond :data:`REQUEST_FIELDS` (``preprocess``, ``postprocess``,
``entry_point``...) is refused. The model project's steps come only from the deployed image
(:func:`sluice.models.project.deployed_project`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sluice.errors import SluiceError
from sluice.models.project import refuse_unknown_fields
from sluice.pipelines.skeleton import check_run_id
from sluice.settings import Settings

DEFAULT_SHARD_ROWS = 10_000
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 1_000, 1_000_000
DEFAULT_MAX_REJECT_SHARE = 0.05
MAX_REJECT_SHARE = 0.5
OUTPUT_ROOT = "batch/output/"
# One or more folder names of letters, digits, '.', '_' or '-' (no '.' or '..' folder): a key
# that stays inside the prefix it is appended to.
_SUBPATH = re.compile(r"^(?!.*(^|/)\.{1,2}(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$")
OUTPUT_FORMATS = ("csv", "parquet")
#: What a batch input may hold (``trigger`` says what started it: the CLI, an S3 drop, a schedule).
REQUEST_FIELDS = (
    "model", "input_uri", "run_id", "version", "output_uri", "output_format", "shard_rows",
    "max_reject_share", "faults", "endpoint_url", "trigger",
)  # fmt: skip
_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class BatchScope:
    """What a batch pipeline's inputs may reach, fixed by its construct (never by an input).

    Parameters
    ----------
    model
        The one model the pipeline scores (``SLUICE_MODEL_NAME``).
    work_bucket
        The stage's work bucket (``SLUICE_WORK_BUCKET``); outputs stay under its
        ``batch/output/<model>/`` prefix.
    fault_drill
        Whether inputs may carry ``faults`` (``SLUICE_BATCH_FAULT_DRILL``, from ``cdk.json``).
    """

    model: str
    work_bucket: str
    fault_drill: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchScope:
        """The scope the construct set on the pipeline's functions; a missing one is an error."""
        env = os.environ if environ is None else environ
        model, work = env.get("SLUICE_MODEL_NAME", ""), env.get("SLUICE_WORK_BUCKET", "")
        if not model or not work:
            raise SluiceError(
                "missing setting(s): SLUICE_MODEL_NAME and SLUICE_WORK_BUCKET fix a batch pipeline's scope"
            )
        drill = env.get("SLUICE_BATCH_FAULT_DRILL", "").strip().lower() in ("1", "true", "yes")
        return cls(model=model, work_bucket=work, fault_drill=drill)

    @property
    def output_prefix(self) -> str:
        """``s3://<work bucket>/batch/output/<model>/``: every output of the pipeline is under it."""
        return f"s3://{self.work_bucket}/{OUTPUT_ROOT}{self.model}/"


@dataclass(frozen=True)
class BatchRequest:
    """What to score, with what, and where the results go.

    Parameters
    ----------
    model
        Registered model name.
    input_uri
        CSV or Parquet file (``s3://bucket/key`` or a local path).
    run_id
        Unique per run, chosen by the pipeline (its execution name), never by the input: names
        the work prefix and the default output.
    version
        Model version; ``None`` scores with the ``champion`` alias's version.
    output_uri
        Output folder under the scope's ``batch/output/<model>/``; default ``<that>/<run_id>/``.
    output_format
        ``"csv"`` or ``"parquet"``; default the input's format.
    shard_rows
        Rows per shard (one Distributed Map child each), 1,000 to 1,000,000. Default 10,000.
    max_reject_share
        The run fails if more than this share of input rows is rejected, at most 0.5.
        Default 0.05.
    faults
        Fault drill: ``{"shard-00002": n}`` makes that shard's first ``n`` score attempts fail
        with a transient error (retried by the state machine). For game days and tests, in a
        stage whose scope allows the drill.
    endpoint_url
        Endpoint to call instead of the configured one; honoured only on the embedded local AWS
        (``SLUICE_LOCAL=1``), where the deployed URL names no reachable host.
    """

    model: str
    input_uri: str
    run_id: str
    version: int | None = None
    output_uri: str = ""
    output_format: str = ""
    shard_rows: int = DEFAULT_SHARD_ROWS
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    faults: dict[str, int] = field(default_factory=dict)
    endpoint_url: str = ""

    @classmethod
    def from_event(cls, event: Mapping[str, Any], *, scope: BatchScope, run_id: str) -> BatchRequest:
        """From a state machine input, within ``scope``; ``run_id`` is the pipeline's (its execution name).

        Raises
        ------
        SluiceError
            Naming the first field that is wrong or outside the scope.
        """
        if not isinstance(event, Mapping):
            raise SluiceError("batch input must be a JSON object")
        refuse_unknown_fields(event, REQUEST_FIELDS, what="batch input")
        for key in ("model", "input_uri"):
            if not isinstance(event.get(key), str) or not event[key]:
                raise SluiceError(f"batch input needs a non-empty string field {key!r}")
        if event["model"] != scope.model:
            raise SluiceError(
                f"batch input field 'model' must be this pipeline's model {scope.model!r}, got {event['model']!r}"
            )
        if event.get("run_id") not in (None, ""):
            # Refused, not ignored: a caller expecting its id in the output path would look in
            # the wrong place, and an id of its choosing could name another run's files.
            raise SluiceError(
                "batch input field 'run_id' is not accepted: the pipeline names each run itself"
            )
        # Fields are checked in this order, so the first wrong one is the one reported.
        return cls(
            model=event["model"],
            input_uri=event["input_uri"],
            run_id=check_run_id(str(run_id or "")),
            version=_version(event.get("version")),
            output_uri=_output_uri(event, scope),
            output_format=_output_format(event),
            shard_rows=_shard_rows(event),
            max_reject_share=_reject_share(event),
            faults=_faults(event, scope),
            endpoint_url=str(event.get("endpoint_url") or ""),
        )


def default_output(settings: Settings, model: str, run_id: str) -> str:
    return f"s3://{settings.work_bucket}/batch/output/{model}/{run_id}/"


def _version(version: Any) -> int | None:
    if version in (None, ""):
        return None
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise SluiceError(f"batch input field 'version' must be a number, got {version!r}") from None
    if number < 1:
        raise SluiceError(f"batch input field 'version' must be at least 1, got {number}")
    return number


def _output_uri(event: Mapping[str, Any], scope: BatchScope) -> str:
    """``output_uri`` if it names a folder under the scope's output prefix ('' for the default)."""
    uri = event.get("output_uri")
    if uri in (None, ""):
        return ""
    prefix = scope.output_prefix
    if not isinstance(uri, str) or not uri.startswith(prefix) or not _SUBPATH.match(uri[len(prefix) :]):
        raise SluiceError(f"batch input field 'output_uri' must be a folder under {prefix}, got {uri!r}")
    return uri if uri.endswith("/") else uri + "/"


def _output_format(event: Mapping[str, Any]) -> str:
    output_format = str(event.get("output_format") or "")
    if output_format and output_format not in OUTPUT_FORMATS:
        raise SluiceError(f"batch input field 'output_format' must be csv or parquet, got {output_format!r}")
    return output_format


def _shard_rows(event: Mapping[str, Any]) -> int:
    shard_rows = _number(event, "shard_rows", DEFAULT_SHARD_ROWS, int)
    if not MIN_SHARD_ROWS <= shard_rows <= MAX_SHARD_ROWS:
        raise SluiceError(
            f"batch input field 'shard_rows' must be {MIN_SHARD_ROWS:,} to {MAX_SHARD_ROWS:,}, got {shard_rows}"
        )
    return shard_rows


def _reject_share(event: Mapping[str, Any]) -> float:
    share = _number(event, "max_reject_share", DEFAULT_MAX_REJECT_SHARE, float)
    if not 0.0 <= share <= MAX_REJECT_SHARE:
        raise SluiceError(
            f"batch input field 'max_reject_share' must be between 0 and {MAX_REJECT_SHARE}, got {share}"
        )
    return share


def _faults(event: Mapping[str, Any], scope: BatchScope) -> dict[str, int]:
    faults = event.get("faults") or {}
    if faults and not scope.fault_drill:
        raise SluiceError(
            "batch input field 'faults' is refused: the failure drill is off in this stage "
            "(cdk.json <stage>:batchFaultDrill)"
        )
    if not isinstance(faults, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in faults.items()
    ):
        raise SluiceError("batch input field 'faults' must map shard names to attempt counts")
    return dict(faults)


def _number(event: Mapping[str, Any], key: str, default: _Number, kind: Callable[[Any], _Number]) -> _Number:
    value = event.get(key)
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SluiceError(f"batch input field {key!r} must be a number, got {value!r}") from None
