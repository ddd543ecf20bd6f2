"""Batch step 1: read the input, validate it against the version's schema, write rejects and shards.

With a deployed model project whose ``[tool.sluice]`` declares ``preprocess``
(:func:`sluice.models.project.deployed_project`), its ``preprocess(frame)`` runs on the input first;
the rows it drops are counted (``dropped_by_preprocess`` in the manifest) and never scored, and
``input_row`` numbers the rows of its output.

Rows that do not match the model version's registered schema go to ``<output>/rejects.csv``
(``input_row``, ``reason`` and the rejected row's values); the valid rows are cut into shards
(:mod:`sluice.pipelines.batch_shards`), each scored by one Distributed Map child.

Before writing anything the step checks that the version is ``Approved`` and claims the run's work
prefix and output folder with conditional writes (``If-None-Match: *``), so a run can never write
over another run's files: not the stage's other pipeline under the same execution name, nor a run
pointed at a folder that already holds a manifest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice import aws
from sluice.errors import SluiceError
from sluice.pipelines.batch_request import BatchRequest, default_output
from sluice.pipelines.batch_shards import ROW, parquet_bytes, plan_shards, shard_name, work_prefix
from sluice.pipelines.skeleton import load_registry
from sluice.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from sluice.registry.store import ModelRegistry


def reject_reasons(errors: Sequence[Any], n_rows: int) -> dict[int, str]:
    """Row position → ``"age: type; region: unknown_category"`` from :class:`FeatureError` s."""
    reasons: dict[int, list[str]] = {}
    for error in errors:
        label = f"{error.feature or 'record'}: {error.code}"
        for row in error.rows:
            if 0 <= row < n_rows:
                reasons.setdefault(int(row), []).append(label)
    return {row: "; ".join(labels) for row, labels in sorted(reasons.items())}


def numbers_from_text(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """Parse numeric features that arrived as text (a CSV column with one bad cell reads as text).

    Cells that parse become floats; the others keep their text, so validation rejects only them.
    """
    import pandas as pd

    out = frame
    for feature in schema.features:
        if feature.kind != "numeric" or feature.name not in frame.columns:
            continue
        column = frame[feature.name]
        if column.dtype.kind in "fiub":
            continue
        parsed = pd.to_numeric(column, errors="coerce")
        keep_text = parsed.isna() & column.notna()
        if out is frame:
            out = frame.copy()
        out[feature.name] = column.astype(object).where(keep_text, parsed.astype(object))
    return out


def preprocess(
    settings: Settings,
    request: BatchRequest,
    *,
    registry: ModelRegistry | None = None,
    now: Callable[[], float] = time.time,
    owner: str = "",
) -> dict[str, Any]:
    """Read the input, validate it against the version's schema, write rejects and shards.

    Returns the run's state: the context every shard needs under ``run`` (small, so it can be
    passed to each Distributed Map child) and the counts postprocess completes. ``owner`` names
    the execution (ARN and start time), so a retried step re-enters its own claims (default: random).

    Raises
    ------
    SluiceError
        If the input cannot be read, the model or version does not exist or is not Approved, the
        run's prefixes belong to another run, or no row is valid.
    """
    from sluice.pipelines.datasource import data_format, load_table

    settings.require("work_bucket")
    started = now()
    registry = load_registry(settings, registry)
    version = request.version or registry.resolve_alias(request.model, "champion")
    schema = _approved_schema(registry, request.model, version)
    raw, lineage = load_table(request.input_uri)
    frame = _project_preprocess(raw)  # the raw input, when no project is deployed
    output = (request.output_uri or default_output(settings, request.model, request.run_id)).rstrip("/") + "/"
    output_format = request.output_format or data_format(request.input_uri)
    prefix = work_prefix(request.run_id)
    _claim_run(settings, request, prefix, output, owner or os.urandom(16).hex())
    frame = numbers_from_text(frame, schema)
    _, errors = schema.validate(frame, as_frame=False)
    reasons = reject_reasons(errors, len(frame))
    rejects_uri = _write_rejects(frame, reasons, output)
    shards = _write_shards(settings, _valid_rows(frame, reasons), request.shard_rows, prefix)
    return {
        "run": {
            "run_id": request.run_id,
            "model": request.model,
            "version": int(version),
            "bucket": settings.work_bucket,
            "prefix": prefix,
            "faults": request.faults,
            "endpoint_url": request.endpoint_url,
        },
        "input": lineage.to_dict(),
        "output": output,
        "output_format": output_format,
        "rows_in": len(raw),
        "dropped": len(raw) - len(frame),
        "rejected": len(reasons),
        "rejects_uri": rejects_uri,
        "max_reject_share": request.max_reject_share,
        "shards": shards,
        "shard_prefix": f"{prefix}shards/",
        "started_at": started,
    }


def _project_preprocess(frame: pd.DataFrame) -> pd.DataFrame:
    """The deployed project's ``preprocess(frame)``, its rows numbered from 0; ``frame`` without one."""
    from sluice.models.project import deployed_project

    project = deployed_project()
    if project is None or not project.has("preprocess"):
        return frame
    return project.run_preprocess(frame).reset_index(drop=True)


def _approved_schema(registry: ModelRegistry, model: str, version: int) -> Any:
    """The version's schema, if it is ``Approved``: batch scores no other (a champion included)."""
    from sluice.registry.records import APPROVED

    status = registry.get(model, version=int(version)).status
    if status != APPROVED:
        raise SluiceError(f"batch input field 'version': {model} v{version} is {status}, not {APPROVED}")
    return _schema(registry, model, version)


def _claim_run(settings: Settings, request: BatchRequest, prefix: str, output: str, owner: str) -> None:
    """Claim the run's work prefix and output folder, each once, before anything is written there.

    S3 conditional writes (``If-None-Match: *``) make each claim atomic: the second run to name
    the same work prefix (the stage's other pipeline under the same execution name) or the same
    output folder is refused, and the first run's files are untouched. The output's claim is a
    ``RUNNING`` manifest, which postprocess replaces. A claim made by the same ``owner`` (this
    step retried by the state machine) is this run's own.
    """
    marker = {"run_id": request.run_id, "model": request.model, "status": "RUNNING", "owner": owner}
    _claim(settings.work_bucket, f"{prefix}run.json", marker, "run_id", request.run_id)
    if output.startswith("s3://"):
        bucket, _, key = output[5:].partition("/")
        _claim(bucket, f"{key}manifest.json", marker, "output_uri", output)


def _claim(bucket: str, key: str, marker: dict[str, str], field: str, value: str) -> None:
    from botocore.exceptions import ClientError

    s3 = aws.client("s3")
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(marker).encode(), IfNoneMatch="*")
        return
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in (
            "PreconditionFailed",
            "412",
            "ConditionalRequestConflict",
        ):
            raise
    try:
        held = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, ValueError):
        held = {}
    if not (isinstance(held, dict) and held.get("owner") == marker["owner"]):
        raise SluiceError(f"batch run field {field!r}: {value} belongs to another run already")


def _schema(registry: ModelRegistry, model: str, version: int) -> Any:
    from sluice.models.schema import FeatureSchema

    return FeatureSchema.from_dict(json.loads(registry.fetch(model, version, "schema.json")))


def _write_rejects(frame: pd.DataFrame, reasons: dict[int, str], output: str) -> str | None:
    """Write the rejected rows, each with its input row number and reasons; their URI, if any."""
    from sluice.pipelines.datasource import write_table

    if not reasons:
        return None
    rejected = frame.iloc[list(reasons)].copy()
    rejected.insert(0, "reason", list(reasons.values()))
    rejected.insert(0, ROW, list(reasons))
    rejects_uri = output + "rejects.csv"
    write_table(rejected, rejects_uri)
    return rejects_uri


def _valid_rows(frame: pd.DataFrame, reasons: dict[int, str]) -> pd.DataFrame:
    """The rows without reasons, numbered by their position in the input (the ``input_row``)."""
    valid = frame.drop(index=frame.index[list(reasons)]) if reasons else frame
    return valid.reset_index(drop=True).assign(**{ROW: np.setdiff1d(np.arange(len(frame)), list(reasons))})


def _write_shards(settings: Settings, valid: pd.DataFrame, shard_rows: int, prefix: str) -> int:
    """Cut ``valid`` into shards under ``<prefix>shards/``; how many there are."""
    shards = plan_shards(len(valid), shard_rows)
    s3 = aws.client("s3")

    def put(item: tuple[int, tuple[int, int]]) -> None:
        index, (start, stop) = item
        key = f"{prefix}shards/{shard_name(index)}.parquet"
        s3.put_object(Bucket=settings.work_bucket, Key=key, Body=parquet_bytes(valid.iloc[start:stop]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, enumerate(shards)))
    return len(shards)
