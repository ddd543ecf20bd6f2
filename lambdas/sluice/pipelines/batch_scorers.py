"""The two ways a batch shard is scored; both produce the same columns.

:class:`ModelShardScorer` loads the registered version (sha256-verified) and predicts in the step;
:class:`EndpointShardScorer` posts the rows to the deployed endpoint's ``POST /predict`` with
SigV4-signed requests (the endpoint captures them itself, as ``source="endpoint"``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sluice import aws as sluice_aws
from sluice.errors import SluiceError
from sluice.pipelines.batch_shards import BatchTransientError, ShardError
from sluice.pipelines.skeleton import load_registry
from sluice.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from sluice.registry.store import ModelRegistry
    from sluice.serving.scoring import Scorer

Array = npt.NDArray[Any]


class ModelShardScorer:
    """Scores rows with the registered version itself (the pipeline's container step)."""

    via = "model"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    @classmethod
    def load(cls, model: str, version: int, *, registry: ModelRegistry | None = None) -> ModelShardScorer:
        """The version's scorer in the flavour it has (its scikit-learn model, its own class or its graph)."""
        from sluice.registry.store import ModelRegistry
        from sluice.serving.scoring import get_scorer
        from sluice.settings import Settings

        registry = registry or ModelRegistry.from_settings(Settings.from_env())
        flavours = registry.get(model, version=version).flavours or ("sklearn",)
        flavour = "sklearn" if "sklearn" in flavours else flavours[0]
        return cls(get_scorer(model, version, flavour, registry=registry))

    @property
    def version(self) -> int:
        return self.scorer.version

    def predict(self, frame: pd.DataFrame, *, validated: bool = False) -> tuple[Array, Array | None]:
        """Labels and positive-class probabilities of ``frame``'s rows.

        ``validated``: the rows already passed this version's schema (a preprocess shard), so
        they are only converted to columns; anything that does not convert is validated again.
        """
        columns = _validated_columns(frame, self.scorer.schema) if validated else None
        if columns is None:
            columns, errors = self.scorer.schema.validate(frame, as_frame=False)
            if errors:
                raise ShardError("; ".join(str(e) for e in errors[:3]))
        labels, probabilities = self.scorer.model.predict(columns)
        return labels, positive_probability(probabilities)


def _validated_columns(frame: pd.DataFrame, schema: Any) -> dict[str, Array] | None:
    """The columns :meth:`FeatureSchema.validate` would return for rows that already passed it.

    ``None`` when a column is absent or a numeric one does not convert to float: validate instead.
    """
    columns: dict[str, Array] = {}
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
        return sluice_aws.signed_request("POST", self.url, body=body, region=self.region)

    def _post(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"instances": records}, separators=(",", ":"), allow_nan=False).encode()
        try:
            with urllib.request.urlopen(self._signed(body), timeout=self.timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code == 429 or err.code >= 500:
                raise BatchTransientError(f"endpoint returned {err.code}: {detail}") from None
            raise ShardError(f"endpoint refused the rows ({err.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise BatchTransientError(f"endpoint unreachable: {err}") from None

    def predict(self, frame: pd.DataFrame) -> tuple[Array, Array | None]:
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


ShardScorer = ModelShardScorer | EndpointShardScorer


def scorer_for(
    settings: Settings, run: Mapping[str, Any], *, registry: ModelRegistry | None = None
) -> ShardScorer:
    """The endpoint scorer when ``SLUICE_BATCH_ENDPOINT_URL`` is set, else the model scorer (cached)."""
    url = settings.batch_endpoint_url
    if url:
        if run.get("endpoint_url") and os.environ.get("SLUICE_LOCAL") == "1":
            url = run["endpoint_url"]
        return EndpointShardScorer(url, region=settings.region or "us-east-1")
    return ModelShardScorer.load(
        run["model"], int(run["version"]), registry=load_registry(settings, registry)
    )


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


def positive_probability(probabilities: Array | None) -> Array | None:
    """P(second class) for binary classifiers, the top class's probability otherwise."""
    if probabilities is None or probabilities.ndim != 2 or not len(probabilities):
        return None
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(axis=1)
