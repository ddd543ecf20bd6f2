"""Shards of a batch run: how the valid rows are cut, where each shard lives, and its errors.

Layout of one run in the work bucket (``run_id`` is the Step Functions execution name)::

    s3://<work>/batch/<run_id>/shards/shard-00000.parquet   valid rows, with the input row number
    s3://<work>/batch/<run_id>/scored/shard-00000.parquet   the same rows + prediction, probability
    s3://<work>/batch/<run_id>/faults/...                    fault-drill markers (see ``faults``)
"""

from __future__ import annotations

import io
import itertools
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError

if TYPE_CHECKING:
    import pandas as pd

# Columns a shard carries besides the features.
ROW = "input_row"
PREDICTION = "prediction"
PROBABILITY = "probability"
# Distributed Map runs up to 10,000 children in parallel; more shards only queue.
MAX_SHARDS = 10_000
_SHARD = re.compile(r"shard-(\d{5,})\.parquet$")


class BatchTransientError(Exception):
    """A failure worth retrying (endpoint throttling or 5xx, a network error, a fault drill).

    The class name is the Lambda ``errorType`` the state machine's Retry matches.
    """


class ShardError(Exception):
    """A shard that cannot be scored however often it is retried (the endpoint refused its rows)."""


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


def shard_of(key: str) -> str:
    """The shard's name (``shard-00003``) from its key; a :class:`ShardError` for anything else."""
    match = _SHARD.search(key)
    if not match:
        raise ShardError(f"{key!r} is not a shard (expected .../shard-NNNNN.parquet)")
    return f"shard-{match.group(1)}"


def work_prefix(run_id: str) -> str:
    return f"batch/{run_id}/"


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_parquet(s3: Any, bucket: str, key: str) -> pd.DataFrame:
    """A shard (or scored shard) from the work bucket."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
