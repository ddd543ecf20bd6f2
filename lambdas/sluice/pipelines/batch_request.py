"""A batch scoring request: what to score, with which model version, and where the results go.

It is the batch state machine's input, parsed once by the first step (and by ``sluice batch run``
before anything starts), so a mistake is reported with the field it is in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sluice.errors import SluiceError
from sluice.pipelines.skeleton import check_run_id
from sluice.settings import Settings

DEFAULT_SHARD_ROWS = 10_000
DEFAULT_MAX_REJECT_SHARE = 0.05
OUTPUT_FORMATS = ("csv", "parquet")
_Number = TypeVar("_Number", int, float)


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
        Unique per run (the execution name): names the work prefix and the default output.
    version
        Model version; ``None`` scores with the ``champion`` alias's version.
    output_uri
        Output prefix (``s3://bucket/prefix/`` or a local folder); default under the work bucket.
    output_format
        ``"csv"`` or ``"parquet"``; default the input's format.
    shard_rows
        Rows per shard (one Distributed Map child each). Default 10,000.
    max_reject_share
        The run fails if more than this share of input rows is rejected. Default 0.05.
    faults
        Fault drill: ``{"shard-00002": n}`` makes that shard's first ``n`` score attempts fail
        with a transient error (retried by the state machine). For game days and tests.
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
    def from_event(cls, event: Mapping[str, Any], *, run_id: str | None = None) -> BatchRequest:
        """From a state machine input (``run_id`` defaults to the event's, else the execution name)."""
        if not isinstance(event, Mapping):
            raise SluiceError("batch input must be a JSON object")
        for key in ("model", "input_uri"):
            if not isinstance(event.get(key), str) or not event[key]:
                raise SluiceError(f"batch input needs a non-empty string field {key!r}")
        # Fields are checked in this order, so the first wrong one is the one reported.
        return cls(
            model=event["model"],
            input_uri=event["input_uri"],
            run_id=check_run_id(str(event.get("run_id") or run_id or "")),
            version=_version(event.get("version")),
            output_uri=str(event.get("output_uri") or ""),
            output_format=_output_format(event),
            shard_rows=_shard_rows(event),
            max_reject_share=_reject_share(event),
            faults=_faults(event),
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


def _output_format(event: Mapping[str, Any]) -> str:
    output_format = str(event.get("output_format") or "")
    if output_format and output_format not in OUTPUT_FORMATS:
        raise SluiceError(f"batch input field 'output_format' must be csv or parquet, got {output_format!r}")
    return output_format


def _shard_rows(event: Mapping[str, Any]) -> int:
    shard_rows = _number(event, "shard_rows", DEFAULT_SHARD_ROWS, int)
    if shard_rows < 1:
        raise SluiceError(f"batch input field 'shard_rows' must be at least 1, got {shard_rows}")
    return shard_rows


def _reject_share(event: Mapping[str, Any]) -> float:
    share = _number(event, "max_reject_share", DEFAULT_MAX_REJECT_SHARE, float)
    if not 0.0 <= share <= 1.0:
        raise SluiceError(f"batch input field 'max_reject_share' must be between 0 and 1, got {share}")
    return share


def _faults(event: Mapping[str, Any]) -> dict[str, int]:
    faults = event.get("faults") or {}
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
