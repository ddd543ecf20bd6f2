"""Batch scoring: preprocess → score shards (Step Functions Distributed Map) → postprocess.

Each step is one function taking and returning small JSON-able state, so the same code runs as
the pipeline's Lambda tasks (``sluice.handlers.batch_*``), in-process (:func:`run_local`, the
CLI's ``--here`` and the bench) and in tests. Bulky data moves through S3.

Layout of one run (``run_id`` is the Step Functions execution name)::

    s3://<work>/batch/<run_id>/shards/shard-00000.parquet   valid rows, with the input row number
    s3://<work>/batch/<run_id>/scored/shard-00000.parquet   the same rows + prediction, probability
    s3://<work>/batch/<run_id>/faults/...                    fault-drill markers (see ``faults``)
    <output>/predictions.csv|parquet   input columns + prediction, probability, model, model_version
    <output>/rejects.csv               input_row, reason and the rejected row's values
    <output>/manifest.json             rows in/out, rejects, model version, duration, failed shards

``<output>`` defaults to ``s3://<work>/batch/output/<model>/<run_id>/``. Rows that do not match
the model version's registered schema go to the rejects file, each with its reasons; the run
still succeeds unless the rejects are more than ``max_reject_share`` of the input.

Two scorers produce identical columns: :class:`ModelShardScorer` loads the registered version
(sha256-verified) and predicts in the step; :class:`EndpointShardScorer` posts the rows to the
deployed endpoint's ``POST /predict`` with SigV4-signed requests (the endpoint captures them
itself, as ``source="endpoint"``). Rows scored by the model scorer are captured for monitoring
as ``source="batch"``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice import aws
from sluice.errors import SluiceError
from sluice.names import BATCH_RETRY_ATTEMPTS, FAILED, SUCCEEDED
from sluice.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

ROW = "input_row"
PREDICTION = "prediction"
PROBABILITY = "probability"
DEFAULT_SHARD_ROWS = 10_000
# Distributed Map runs up to 10,000 children in parallel; more shards only queue.
MAX_SHARDS = 10_000
DEFAULT_MAX_REJECT_SHARE = 0.05
OUTPUT_FORMATS = ("csv", "parquet")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_SHARD = re.compile(r"shard-(\d{5,})\.parquet$")


class BatchTransientError(Exception):
    """A failure worth retrying (endpoint throttling or 5xx, a network error, a fault drill).

    The class name is the Lambda ``errorType`` the state machine's Retry matches.
    """


class ShardError(Exception):
    """A shard that cannot be scored however often it is retried (the endpoint refused its rows)."""


# ---------------------------------------------------------------------------------------------
# Requests and shard planning
# ---------------------------------------------------------------------------------------------


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
        run_id = str(event.get("run_id") or run_id or "")
        if not _RUN_ID.match(run_id):
            raise SluiceError("run_id must be 1-80 characters of letters, digits, '-' or '_'")
        version = event.get("version")
        if version not in (None, ""):
            try:
                version = int(version)
            except (TypeError, ValueError):
                raise SluiceError(f"batch input field 'version' must be a number, got {version!r}") from None
            if version < 1:
                raise SluiceError(f"batch input field 'version' must be at least 1, got {version}")
        else:
            version = None
        output_format = str(event.get("output_format") or "")
        if output_format and output_format not in OUTPUT_FORMATS:
            raise SluiceError(
                f"batch input field 'output_format' must be csv or parquet, got {output_format!r}"
            )
        shard_rows = _number(event, "shard_rows", DEFAULT_SHARD_ROWS, int)
        if shard_rows < 1:
            raise SluiceError(f"batch input field 'shard_rows' must be at least 1, got {shard_rows}")
        share = _number(event, "max_reject_share", DEFAULT_MAX_REJECT_SHARE, float)
        if not 0.0 <= share <= 1.0:
            raise SluiceError(f"batch input field 'max_reject_share' must be between 0 and 1, got {share}")
        faults = event.get("faults") or {}
        if not isinstance(faults, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in faults.items()
        ):
            raise SluiceError("batch input field 'faults' must map shard names to attempt counts")
        return cls(
            model=event["model"],
            input_uri=event["input_uri"],
            run_id=run_id,
            version=version,
            output_uri=str(event.get("output_uri") or ""),
            output_format=output_format,
            shard_rows=shard_rows,
            max_reject_share=share,
            faults=dict(faults),
            endpoint_url=str(event.get("endpoint_url") or ""),
        )


def _number(event: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    value = event.get(key)
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SluiceError(f"batch input field {key!r} must be a number, got {value!r}") from None


def plan_shards(n_rows: int, shard_rows: int, *, max_shards: int = MAX_SHARDS) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_rows)`` in order, each at most ``shard_rows`` long.

    When ``n_rows / shard_rows`` would exceed ``max_shards``, shards grow so that there are
    exactly ``max_shards`` of them (sizes differ by at most one row).
    """
    if shard_rows < 1:
        raise SluiceError(f"shard_rows must be at least 1, got {shard_rows}")
    if n_rows <= 0:
        return []
    count = math.ceil(n_rows / shard_rows)
    if count <= max_shards:
        bounds = np.minimum(np.arange(count + 1) * shard_rows, n_rows)
    else:
        bounds = np.linspace(0, n_rows, max_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def work_prefix(run_id: str) -> str:
    return f"batch/{run_id}/"


def default_output(settings: Settings, model: str, run_id: str) -> str:
    return f"s3://{settings.work_bucket}/batch/output/{model}/{run_id}/"


# ---------------------------------------------------------------------------------------------
# Rejects
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Step 1: preprocess
# ---------------------------------------------------------------------------------------------


def preprocess(
    settings: Settings, request: BatchRequest, *, registry: Any = None, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Read the input, validate it against the version's schema, write rejects and shards.

    Returns the run's state: the context every shard needs under ``run`` (small, so it can be
    passed to each Distributed Map child) and the counts postprocess completes.

    Raises
    ------
    SluiceError
        If the input cannot be read, the model or version does not exist, or no row is valid.
    """
    from sluice.datasource import data_format, load_table
    from sluice.schema import FeatureSchema

    settings.require("work_bucket")
    started = now()
    registry = registry or _registry(settings)
    version = request.version or registry.resolve_alias(request.model, "champion")
    schema = FeatureSchema.from_dict(json.loads(registry.fetch(request.model, version, "schema.json")))
    frame, lineage = load_table(request.input_uri)
    output = request.output_uri or default_output(settings, request.model, request.run_id)
    if not output.endswith("/"):
        output += "/"
    output_format = request.output_format or data_format(request.input_uri)

    frame = numbers_from_text(frame, schema)
    _, errors = schema.validate(frame, as_frame=False)
    reasons = reject_reasons(errors, len(frame))
    rejects_uri = None
    if reasons:
        rejected = frame.iloc[list(reasons)].copy()
        rejected.insert(0, "reason", list(reasons.values()))
        rejected.insert(0, ROW, list(reasons))
        rejects_uri = output + "rejects.csv"
        _write(rejected, rejects_uri)
    valid = frame.drop(index=frame.index[list(reasons)]) if reasons else frame
    valid = valid.reset_index(drop=True).assign(**{ROW: np.setdiff1d(np.arange(len(frame)), list(reasons))})
    shards = plan_shards(len(valid), request.shard_rows)
    prefix = work_prefix(request.run_id)
    s3 = aws.client("s3")

    def put(item: tuple[int, tuple[int, int]]) -> None:
        index, (start, stop) = item
        key = f"{prefix}shards/{shard_name(index)}.parquet"
        s3.put_object(Bucket=settings.work_bucket, Key=key, Body=_parquet(valid.iloc[start:stop]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, enumerate(shards)))
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
        "rows_in": len(frame),
        "rejected": len(reasons),
        "rejects_uri": rejects_uri,
        "max_reject_share": request.max_reject_share,
        "shards": len(shards),
        "shard_prefix": f"{prefix}shards/",
        "started_at": started,
    }


# ---------------------------------------------------------------------------------------------
# Step 2: score one shard
# ---------------------------------------------------------------------------------------------


class ModelShardScorer:
    """Scores rows with the registered version itself (the pipeline's container step)."""

    via = "model"

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    @classmethod
    def load(cls, model: str, version: int, *, registry: Any = None) -> ModelShardScorer:
        from sluice.scoring import get_scorer

        return cls(get_scorer(model, version, "sklearn", registry=registry))

    @property
    def version(self) -> int:
        return self.scorer.version

    def predict(
        self, frame: pd.DataFrame, *, validated: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels and positive-class probabilities of ``frame``'s rows.

        ``validated``: the rows already passed this version's schema (a preprocess shard), so
        they are only converted to columns; anything that does not convert is validated again.
        """
        columns = _validated_columns(frame, self.scorer.schema) if validated else None
        if columns is None:
            columns, errors = self.scorer.schema.validate(frame, as_frame=False)
            if errors:
                raise ShardError("; ".join(str(e) for e in errors[:3]))
        labels, probabilities = self.scorer.predictor.predict(
            self.scorer.preprocessor.transform_columns(columns)
        )
        return labels, positive_probability(probabilities)


def _validated_columns(frame: pd.DataFrame, schema: Any) -> dict[str, np.ndarray] | None:
    """The columns :meth:`FeatureSchema.validate` would return for rows that already passed it.

    ``None`` when a column is absent or a numeric one does not convert to float: validate instead.
    """
    columns: dict[str, np.ndarray] = {}
    try:
        for feature in schema.features:
            column = frame[feature.name]
            if feature.kind == "numeric":
                columns[feature.name] = column.to_numpy(dtype=float, na_value=np.nan)
            else:
                values = column.to_numpy(dtype=object)
                values[column.isna().to_numpy()] = None
                columns[feature.name] = values
    except (KeyError, TypeError, ValueError):
        return None
    return columns


class EndpointShardScorer:
    """Scores rows by calling the endpoint's ``POST /predict`` with SigV4-signed requests.

    Parameters
    ----------
    url
        ``https://<api>.execute-api.<region>.amazonaws.com/prod/predict``.
    region
        Region of the API (the SigV4 scope).
    chunk_rows
        Instances per request (the endpoint allows 10,000 and 5 MB).
    concurrency
        Requests in flight per shard.
    """

    via = "endpoint"

    def __init__(
        self, url: str, *, region: str, chunk_rows: int = 2_000, concurrency: int = 4, timeout_s: float = 30.0
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise SluiceError(f"endpoint URL must be http(s)://..., got {url!r}")
        self.url = url
        self.region = region
        self.chunk_rows = chunk_rows
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.version: int | None = None

    def _signed(self, body: bytes) -> urllib.request.Request:
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise SluiceError("no AWS credentials to sign endpoint requests with")
        request = AWSRequest(
            method="POST", url=self.url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        return urllib.request.Request(
            self.url, data=body, headers=dict(request.headers.items()), method="POST"
        )

    def _post(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"instances": records}, separators=(",", ":"), allow_nan=False).encode()
        try:
            with urllib.request.urlopen(self._signed(body), timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code == 429 or err.code >= 500:
                raise BatchTransientError(f"endpoint returned {err.code}: {detail}") from None
            raise ShardError(f"endpoint refused the rows ({err.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise BatchTransientError(f"endpoint unreachable: {err}") from None

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        records = json_records(frame)
        chunks = [records[i : i + self.chunk_rows] for i in range(0, len(records), self.chunk_rows)]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            answers = list(pool.map(self._post, chunks))
        labels = np.concatenate([np.asarray(a["predictions"]) for a in answers]) if answers else np.array([])
        probabilities = None
        if answers and all(a.get("probabilities") is not None for a in answers):
            probabilities = np.concatenate([np.asarray(a["probabilities"], dtype=float) for a in answers])
        versions = {a.get("version") for a in answers}
        self.version = versions.pop() if len(versions) == 1 else None
        return labels, positive_probability(probabilities)


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts: numpy scalars as Python values, NaN/NA as ``None``."""
    columns = {}
    for name in frame.columns:
        values = frame[name].to_numpy(dtype=object)
        missing = frame[name].isna().to_numpy()
        columns[name] = [
            None if m else (v.item() if hasattr(v, "item") else v)
            for v, m in zip(values, missing, strict=True)
        ]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def positive_probability(probabilities: np.ndarray | None) -> np.ndarray | None:
    """P(second class) for binary classifiers, the top class's probability otherwise."""
    if probabilities is None or probabilities.ndim != 2 or not len(probabilities):
        return None
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(axis=1)


def score_shard(
    settings: Settings,
    item: Mapping[str, Any],
    *,
    scorer: ModelShardScorer | EndpointShardScorer | None = None,
    capture: Any = None,
) -> dict[str, Any]:
    """Score one shard ``{"key": <shard key>, "run": <preprocess state's run>}``.

    Writes the scored shard next to it and, for the model scorer, captures the rows as
    ``source="batch"``. Returns ``{"shard", "key", "scored_key", "rows", "version", "via"}``.

    Raises
    ------
    BatchTransientError
        For the fault drill and transient endpoint failures (the state machine retries).
    ShardError
        If the rows cannot be scored.
    """
    import pandas as pd

    run, key = item["run"], item["key"]
    name = _shard_of(key)
    _fault_drill(run, name)
    s3 = aws.client("s3")
    frame = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=run["bucket"], Key=key)["Body"].read()))
    if scorer is None:
        scorer = scorer_for(settings, run)
    features = frame.drop(columns=[ROW])
    # Shards hold only rows preprocess validated against this version's schema.
    labels, probabilities = (
        scorer.predict(features, validated=True) if scorer.via == "model" else scorer.predict(features)
    )
    if len(labels) != len(frame):
        raise ShardError(f"{name}: {len(frame)} rows but {len(labels)} predictions")
    scored = frame.assign(**{PREDICTION: labels})
    if probabilities is not None:
        scored[PROBABILITY] = probabilities
    scored_key = f"{run['prefix']}scored/{name}.parquet"
    s3.put_object(Bucket=run["bucket"], Key=scored_key, Body=_parquet(scored))
    version = int(scorer.version or run["version"])
    if scorer.via == "model":
        from sluice.capture import CaptureWriter, capture_records

        capture = capture if capture is not None else CaptureWriter(bucket_name=settings.capture_bucket)
    if scorer.via == "model" and capture.enabled:
        schema_names = (
            list(scorer.scorer.schema.names) if hasattr(scorer, "scorer") else list(features.columns)
        )
        capture.put(
            capture_records(
                request_id=f"{run['run_id']}/{name}",
                model=run["model"],
                version=version,
                rows=json_records(features[[c for c in schema_names if c in features.columns]]),
                predictions=labels,
                probabilities=probabilities,
                source="batch",
                plain_rows=True,
            )
        )
    return {
        "shard": name,
        "key": key,
        "scored_key": scored_key,
        "rows": len(frame),
        "version": version,
        "via": scorer.via,
    }


def scorer_for(settings: Settings, run: Mapping[str, Any]) -> ModelShardScorer | EndpointShardScorer:
    """The endpoint scorer when ``SLUICE_BATCH_ENDPOINT_URL`` is set, else the model scorer (cached)."""
    url = settings.batch_endpoint_url
    if url:
        if run.get("endpoint_url") and os.environ.get("SLUICE_LOCAL") == "1":
            url = run["endpoint_url"]
        return EndpointShardScorer(url, region=settings.region or "us-east-1")
    return ModelShardScorer.load(run["model"], int(run["version"]), registry=_registry(settings))


def _shard_of(key: str) -> str:
    match = _SHARD.search(key)
    if not match:
        raise ShardError(f"{key!r} is not a shard (expected .../shard-NNNNN.parquet)")
    return f"shard-{match.group(1)}"


def _fault_drill(run: Mapping[str, Any], name: str) -> None:
    """Fail the first ``faults[name]`` attempts of a shard; attempts are counted in S3 markers."""
    wanted = int((run.get("faults") or {}).get(name, 0))
    if wanted <= 0:
        return
    s3 = aws.client("s3")
    prefix = f"{run['prefix']}faults/{name}/"
    done = s3.list_objects_v2(Bucket=run["bucket"], Prefix=prefix).get("KeyCount", 0)
    if done < wanted:
        s3.put_object(Bucket=run["bucket"], Key=f"{prefix}{done + 1:04d}", Body=b"")
        raise BatchTransientError(f"fault drill: {name} attempt {done + 1} of {wanted} failing")


# ---------------------------------------------------------------------------------------------
# Step 3: postprocess
# ---------------------------------------------------------------------------------------------


def shard_results(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The score step's output per shard, from the Distributed Map's ResultWriter files.

    Children that failed (listed in the FAILED files, or caught and marked ``failed`` in
    the iterator) come back as ``{"shard", "failed": True, "error"}``.
    """
    inline = state.get("results")
    if isinstance(inline, list):
        return [_named(r) for r in inline]
    details = (state.get("map") or {}).get("ResultWriterDetails") or {}
    if not details:
        raise SluiceError("batch state has neither 'results' nor the Distributed Map's ResultWriterDetails")
    s3 = aws.client("s3")
    bucket = details["Bucket"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=details["Key"])["Body"].read())
    out: list[dict[str, Any]] = []
    for status, files in (manifest.get("ResultFiles") or {}).items():
        for entry in files:
            for record in json.loads(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()):
                if status == "SUCCEEDED":
                    out.append(_named(json.loads(record.get("Output") or "{}")))
                else:
                    shard = _shard_from_input(record.get("Input"))
                    out.append(
                        {
                            "shard": shard,
                            "failed": True,
                            "error": record.get("Error"),
                            "cause": record.get("Cause"),
                        }
                    )
    return out


def _named(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result with ``shard`` as the shard's name (the iterator's catch names it by key)."""
    out = dict(result)
    if "/" in str(out.get("shard", "")):
        with contextlib.suppress(ShardError):
            out["shard"] = _shard_of(str(out["shard"]))
    return out


def _shard_from_input(text: Any) -> str:
    try:
        return _shard_of(json.loads(text or "{}").get("key", ""))
    except (ValueError, ShardError, AttributeError):
        return "unknown"


def postprocess(
    settings: Settings, state: Mapping[str, Any], *, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Join the scored shards in input order, enrich, write the output and the manifest.

    The run fails (``status: FAILED``, and no predictions file) when a shard failed or the
    rejects exceed ``max_reject_share``; the manifest says why either way.
    """
    import pandas as pd

    run = state["run"]
    results = sorted(shard_results(state), key=lambda r: str(r.get("shard")))
    failed = [r for r in results if r.get("failed")]
    done = [r for r in results if not r.get("failed")]
    rows_in, rejected = int(state["rows_in"]), int(state["rejected"])
    share = rejected / rows_in if rows_in else 0.0
    reasons = []
    if failed:
        reasons.append(f"{len(failed)} shard(s) failed: {', '.join(str(r['shard']) for r in failed)}")
    if share > float(state["max_reject_share"]):
        reasons.append(
            f"{rejected} of {rows_in} rows rejected ({share:.2%}), more than the allowed "
            f"{float(state['max_reject_share']):.2%}"
        )
    if len(done) + len(failed) != int(state["shards"]):
        reasons.append(f"{int(state['shards'])} shards planned but {len(done) + len(failed)} reported")
    output = state["output"]
    predictions_uri = None
    rows_out = 0
    versions = sorted({int(r["version"]) for r in done if r.get("version") is not None})
    if not reasons:
        s3 = aws.client("s3")
        frames = [
            pd.read_parquet(
                io.BytesIO(s3.get_object(Bucket=run["bucket"], Key=r["scored_key"])["Body"].read())
            )
            for r in done
        ]
        scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(scored):
            scored = scored.sort_values(ROW, kind="stable").reset_index(drop=True)
        scored["model"] = run["model"]
        scored["model_version"] = versions[0] if len(versions) == 1 else run["version"]
        predictions_uri = f"{output}predictions.{state['output_format']}"
        _write(scored, predictions_uri)
        rows_out = len(scored)
    finished = now()
    manifest = {
        "run_id": run["run_id"],
        "status": FAILED if reasons else SUCCEEDED,
        "reasons": reasons,
        "model": run["model"],
        "model_version": versions[0] if len(versions) == 1 else run["version"],
        "scored_by": sorted({r.get("via", "model") for r in done}) or None,
        "input": state["input"],
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rejects": rejected,
        "reject_share": round(share, 6),
        "max_reject_share": float(state["max_reject_share"]),
        "rejects_uri": state.get("rejects_uri"),
        "predictions_uri": predictions_uri,
        "format": state["output_format"],
        "shards": int(state["shards"]),
        "failed_shards": [
            {"shard": r["shard"], "error": r.get("error"), "cause": r.get("cause")} for r in failed
        ],
        "started_at": _iso(float(state["started_at"])),
        "finished_at": _iso(finished),
        "duration_s": round(finished - float(state["started_at"]), 3),
    }
    manifest_uri = f"{output}manifest.json"
    _put_text(manifest_uri, json.dumps(manifest, indent=2))
    return {"status": manifest["status"], "manifest_uri": manifest_uri, "manifest": manifest}


# ---------------------------------------------------------------------------------------------
# Failure notification
# ---------------------------------------------------------------------------------------------


def notify_failure(settings: Settings, state: Mapping[str, Any]) -> dict[str, Any]:
    """Publish what failed to the notification topic; write a manifest if postprocess did not."""
    error = state.get("error") or {}
    summary = state.get("summary") or {}
    manifest = summary.get("manifest")
    manifest_uri = summary.get("manifest_uri")
    run = state.get("run") or {}
    # Before preprocess finished, the state is the run's input itself.
    request = state.get("request") or (state if "run" not in state else {})
    if manifest is None:
        manifest = {
            "run_id": run.get("run_id") or state.get("execution"),
            "status": FAILED,
            "reasons": [f"{error.get('Error', 'error')}: {_cause(error.get('Cause'))}"],
            "model": run.get("model") or request.get("model"),
            "input": state.get("input") or request.get("input_uri"),
            "failed_shards": [],
        }
        output = state.get("output")
        if output:
            manifest_uri = f"{output}manifest.json"
            try:
                _put_text(manifest_uri, json.dumps(manifest, indent=2))
            except Exception:  # the notification matters more than this manifest
                manifest_uri = None
    message = {
        "event": "batch_failed",
        "run_id": manifest.get("run_id"),
        "model": manifest.get("model"),
        "reasons": manifest.get("reasons"),
        "failed_shards": [s["shard"] for s in manifest.get("failed_shards") or []],
        "manifest_uri": manifest_uri,
    }
    if settings.notify_topic_arn:
        aws.client("sns").publish(
            TopicArn=settings.notify_topic_arn,
            Subject=f"Sluice batch run failed: {message['model']}"[:100],
            Message=json.dumps(message),
        )
    return message


def _cause(cause: Any) -> str:
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
            return str(parsed.get("errorMessage", cause))[:500]
        except (ValueError, AttributeError):
            return cause[:500]
    return str(cause)[:500]


# ---------------------------------------------------------------------------------------------
# In-process run (CLI --here, bench, tests)
# ---------------------------------------------------------------------------------------------


def run_local(
    settings: Settings,
    request: BatchRequest,
    *,
    registry: Any = None,
    scorer: ModelShardScorer | EndpointShardScorer | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """All steps in this process, shards in sequence; ``progress(step, done, total)`` as it goes."""
    registry = registry or _registry(settings)
    state = preprocess(settings, request, registry=registry)
    if progress:
        progress("preprocess", 1, 1)
    run = state["run"]
    if scorer is None:
        scorer = (
            scorer_for(settings, run)
            if settings.batch_endpoint_url
            else ModelShardScorer.load(run["model"], run["version"], registry=registry)
        )
    s3 = aws.client("s3")
    keys = sorted(
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=run["bucket"], Prefix=state["shard_prefix"]
        )
        for item in page.get("Contents", [])
    )
    results = []
    for index, key in enumerate(keys):
        try:
            results.append(
                _with_retries(lambda k=key: score_shard(settings, {"key": k, "run": run}, scorer=scorer))
            )
        except (BatchTransientError, ShardError) as err:
            results.append(
                {"shard": _shard_of(key), "failed": True, "error": type(err).__name__, "cause": str(err)}
            )
        if progress:
            progress("score", index + 1, len(keys))
    summary = postprocess(settings, {**state, "results": results})
    if progress:
        progress("postprocess", 1, 1)
    return summary


# ---------------------------------------------------------------------------------------------
# Starting and following runs on Step Functions
# ---------------------------------------------------------------------------------------------


def _with_retries(step: Callable[[], dict[str, Any]], *, attempts: int = BATCH_RETRY_ATTEMPTS) -> dict[str, Any]:
    """Retry transient errors as the state machine does (without its backoff: this is local)."""
    for attempt in range(attempts):
        try:
            return step()
        except BatchTransientError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def new_run_id(model: str, *, now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return f"{model}-{moment:%Y%m%dT%H%M%S}-{os.urandom(3).hex()}"[:80]


def start_run(state_machine_arn: str, event: Mapping[str, Any]) -> str:
    """Start one execution named after the run id; return its ARN."""
    request = BatchRequest.from_event(
        event, run_id=event.get("run_id") or new_run_id(str(event.get("model")))
    )
    body = {k: v for k, v in event.items() if v not in (None, "", {})}
    body["run_id"] = request.run_id
    return aws.client("stepfunctions").start_execution(
        stateMachineArn=state_machine_arn, name=request.run_id, input=json.dumps(body)
    )["executionArn"]


def map_progress(execution_arn: str) -> tuple[int, int] | None:
    """``(finished, total)`` shards of an execution's Distributed Map, once its map run exists."""
    sfn = aws.client("stepfunctions")
    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if not runs:
            return None
        counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts", {})
    except Exception:  # not every backend (nor moto) implements map runs: progress is optional
        return None
    total = int(counts.get("total", 0))
    finished = sum(int(counts.get(k, 0)) for k in ("succeeded", "failed", "timedOut", "aborted"))
    return finished, total


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _registry(settings: Settings) -> Any:
    from sluice.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _write(frame: pd.DataFrame, uri: str) -> None:
    from sluice.datasource import write_table

    write_table(frame, uri)


def _put_text(uri: str, text: str) -> None:
    if uri.startswith("s3://"):
        from sluice.datasource import split_s3_uri

        bucket, key = split_s3_uri(uri)
        aws.client("s3").put_object(
            Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json"
        )
    else:
        from pathlib import Path

        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(text)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
