"""A drift window's capture objects: listed with their sizes, split into groups, read back in chunks.

The drift job plans a window before reading it (:func:`sluice.monitoring.drift_job.plan_drift`):
each checked version's capture objects, listed with their sizes. :func:`split_objects` cuts a
version's objects into contiguous groups of about ``bytes_per_child`` bytes, one per fan-out child
(:mod:`sluice.monitoring.fanout`); a window that fits one child is one group, and stays in one
Lambda. :func:`iter_feature_chunks` reads given objects back as feature frames through
:mod:`sluice.serving.capture_reader` (Parquet, or JSON lines written before it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sluice.errors import SluiceError
from sluice.serving import capture_reader

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: A capture object: its key and its size in bytes, as listed.
CaptureObject = tuple[str, int]


@dataclass
class VersionWindow:
    """One checked version's capture objects in the window."""

    version: int
    objects: list[CaptureObject] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.objects)


@dataclass
class DriftPlan:
    """What a drift run reads: the model, the window and each checkable version's objects.

    ``skipped`` names the versions left out (no drift baseline), with the reason.
    """

    model: str
    start: datetime
    end: datetime
    versions: list[VersionWindow]
    skipped: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)


def list_objects(
    bucket: str, *, model: str, version: int, start: datetime, end: datetime
) -> list[CaptureObject]:
    """The version's capture objects whose partition overlaps ``[start, end)``, with their sizes."""
    return list(capture_reader.capture_objects(bucket, model=model, version=version, start=start, end=end))


def split_objects(
    objects: Sequence[CaptureObject], *, bytes_per_child: int, max_groups: int
) -> list[list[CaptureObject]]:
    """Contiguous groups of ``objects`` of about ``bytes_per_child`` bytes each.

    Parameters
    ----------
    objects
        One version's capture objects, in listing order.
    bytes_per_child
        Target bytes per group: ``ceil(total / bytes_per_child)`` groups, at most ``max_groups``
        and at most one per object; an empty listing is one empty group (the version still
        publishes ``Rows = 0``).

    Returns
    -------
    Groups whose byte totals differ by at most the largest object.
    """
    if bytes_per_child < 1 or max_groups < 1:
        raise SluiceError("bytes_per_child and max_groups must be at least 1")
    total = sum(size for _, size in objects)
    count = max(1, min(math.ceil(total / bytes_per_child), max_groups, len(objects)))
    groups: list[list[CaptureObject]] = [[] for _ in range(count)]
    running = 0
    for item in objects:
        # The group whose share of the total this object's first byte falls in.
        index = min(count - 1, running * count // total) if total else 0
        groups[index].append(item)
        running += item[1]
    return [g for g in groups if g] or [[]]


def iter_feature_chunks(
    bucket: str,
    objects: Sequence[CaptureObject],
    *,
    columns: Sequence[str],
    start: datetime,
    end: datetime,
    chunk_rows: int,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """``(features, probabilities)`` of the rows of ``objects`` scored in ``[start, end)``, in chunks.

    ``features`` has ``columns`` in order; ``probabilities`` is NaN where a row has none. Read by
    :func:`sluice.serving.capture_reader.iter_object_tables` (Parquet, and JSON lines written
    before it) and :func:`~sluice.serving.capture_reader.frames_of`: no dict per row, and memory
    holds a chunk and a few objects in flight.
    """
    tables = capture_reader.iter_object_tables(bucket, objects, start=start, end=end, chunk_rows=chunk_rows)
    for frame in capture_reader.frames_of(tables, columns):
        yield frame.features, frame.probability
