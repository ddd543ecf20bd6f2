"""The capture table: one Parquet schema for every model of a stage, and its conversions.

Firehose converts each capture line to a row of the stage's Glue table (record format
conversion, OpenX JSON deserializer, Parquet serializer); the direct-S3 writer, the local
Firehose and the batch step write the same rows with pyarrow. Columns (:data:`COLUMNS`)::

    request_id string, row int, ts string, source string, features string,
    prediction string, probability double, dropped_fields int

partitioned by ``model string, version int, dt string, hour int`` (the object's key, never
the file: ``capture/model=<m>/version=<v>/dt=YYYY-MM-DD/hour=HH/``).

Why ``features`` is a JSON object as text, not ``map<string,string>`` or a struct: each model
has its own features, so a struct would need a table per model, and a map of strings loses the
types the drift job needs (``41`` and ``"41"`` read back alike). The JSON text keeps numbers
numbers, Athena reads a feature with ``json_extract_scalar(features, '$.age')`` and pyarrow
parses a whole column of them at C speed (:func:`features_frame`). ``prediction`` is text for
the same reason (a label may be ``1`` or ``"approve"``); the reader turns ``"1"`` back into
``1`` and ``"0.25"`` into ``0.25``, as the labels join compares them anyway.

The writer sends Firehose the line :func:`wire_record` makes: the columns above as their
column types (so the deserializer has no conversion to guess) plus ``model`` and ``version``
for dynamic partitioning. Importing this module needs only the standard library; pyarrow (and
pandas for :func:`features_frame`) are imported by the functions that use them.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: Data columns of the capture table, in order, with their Glue (Hive) types.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "string"),
    ("row", "int"),
    ("ts", "string"),
    ("source", "string"),
    ("features", "string"),
    ("prediction", "string"),
    ("probability", "double"),
    ("dropped_fields", "int"),
)
#: Partition keys of the capture table, from the object key.
PARTITION_KEYS: tuple[tuple[str, str], ...] = (
    ("model", "string"),
    ("version", "int"),
    ("dt", "string"),
    ("hour", "int"),
)
PARQUET_SUFFIX = ".parquet"
_INTEGER = re.compile(r"-?\d+")


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default)
    except ValueError:  # a stray NaN or infinity: null, as the JSON lines had it
        return json.dumps(_finite(value), separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays as their Python values, anything else as its text."""
    tolist = getattr(value, "tolist", None)
    return _finite(tolist()) if tolist is not None else str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def prediction_text(value: Any) -> str | None:
    """A prediction as the ``prediction`` column holds it (``True`` → ``"true"``, ``1`` → ``"1"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def prediction_value(text: str | None) -> Any:
    """Inverse of :func:`prediction_text` for numbers: ``"1"`` → ``1``, ``"0.5"`` → ``0.5``."""
    if text is None:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def wire_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A capture record (:func:`~sluice.serving.capture.capture_records`) as a table row.

    Keeps ``model`` and ``version`` (Firehose partitions by them; the table does not store them).
    """
    return {
        "request_id": record.get("request_id"),
        "row": record.get("row"),
        "ts": record.get("ts"),
        "model": record.get("model"),
        "version": record.get("version"),
        "source": record.get("source"),
        "features": _json_text(record.get("features") or {}),
        "prediction": prediction_text(record.get("prediction")),
        "probability": record.get("probability"),
        "dropped_fields": record.get("dropped_fields"),
    }


def from_row(row: Mapping[str, Any], *, model: str, version: int) -> dict[str, Any]:
    """A table row (or a legacy JSON line) back to the record shape callers know."""
    features = row.get("features")
    if isinstance(features, str):
        features = json.loads(features) if features else {}
    prediction = row.get("prediction")
    record = {
        "request_id": row.get("request_id"),
        "row": row.get("row"),
        "ts": row.get("ts"),
        "model": row.get("model") or model,
        "version": int(row.get("version") or version),
        "source": row.get("source"),
        "features": features or {},
        "prediction": prediction_value(prediction) if isinstance(prediction, str) else prediction,
        "probability": row.get("probability"),
    }
    if row.get("dropped_fields"):
        record["dropped_fields"] = row["dropped_fields"]
    return record


# ---------------------------------------------------------------------------------------------
# pyarrow (the direct-S3 writer, the batch step, the local Firehose and the readers)
# ---------------------------------------------------------------------------------------------


def arrow_schema() -> pa.Schema:
    """The Parquet schema of :data:`COLUMNS` (every column nullable, as Firehose writes them)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int32(), "double": pa.float64()}
    return pa.schema([pa.field(name, types[hive]) for name, hive in COLUMNS])


def rows_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Table rows (:func:`wire_record` dicts; other keys are ignored) as an Arrow table."""
    import pyarrow as pa

    schema = arrow_schema()
    rows = list(rows)
    return pa.table(
        {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema}, schema=schema
    )


def frame_table(
    *,
    request_id: str,
    ts: str,
    source: str,
    features: pd.DataFrame | pa.Array,
    predictions: Sequence[Any] | Any,
    probabilities: Sequence[float] | Any | None = None,
) -> pa.Table:
    """The table rows of one scored frame, built column by column (no dict per row).

    ``features`` become JSON text in Arrow's kernels (:func:`features_json`; an Arrow array is
    taken as those texts already made), predictions text through Arrow's cast; an order of
    magnitude faster than one record dict per row.
    """
    import numpy as np
    import pyarrow as pa

    n = len(features)
    predicted = pa.array(np.asarray(predictions))
    if pa.types.is_boolean(predicted.type):
        predicted = pa.array(["true" if v else "false" for v in predicted.to_pylist()])
    probability = (
        pa.nulls(n, pa.float64())
        if probabilities is None
        else pa.array(np.asarray(probabilities, dtype=float), from_pandas=True)
    )
    columns = {
        "request_id": pa.repeat(pa.scalar(request_id, pa.string()), n),
        "row": pa.array(np.arange(n, dtype=np.int32)),
        "ts": pa.repeat(pa.scalar(ts, pa.string()), n),
        "source": pa.repeat(pa.scalar(source, pa.string()), n),
        "features": features if isinstance(features, pa.Array) else features_json(features),
        "prediction": predicted.cast(pa.string()),
        "probability": probability,
        "dropped_fields": pa.nulls(n, pa.int32()),
    }
    return pa.table(columns, schema=arrow_schema())


def features_json(frame: pd.DataFrame) -> pa.Array:
    """Each row of ``frame`` as a JSON object text, assembled by Arrow's string kernels.

    Numbers are written in their shortest round-trip form (a whole float keeps its ``.0``),
    NaN, infinities and missing values as ``null``, text quoted and escaped. A column Arrow
    cannot convert sends the frame through pandas' JSON encoder instead (15 significant digits).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(frame.columns):
        return pa.array(["{}"] * len(frame), pa.string())
    try:
        batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)  # plain arrays, no chunks
        parts: list[Any] = []
        literal = "{"
        for i, name in enumerate(batch.schema.names):
            text, quote = _json_values(batch.column(i))
            parts += [literal + ("," if i else "") + json.dumps(str(name)) + ":" + quote, text]
            literal = quote
        # One join for the whole object; a missing value (never in a quoted column) is null.
        options = pc.JoinOptions(null_handling="replace", null_replacement="null")
        return pc.binary_join_element_wise(*parts, literal + "}", "", options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, _NeedsPython):
        text = frame.to_json(orient="records", lines=True, double_precision=15)
        return pa.array(text.split("\n")[: len(frame)], pa.string())


class _NeedsPython(Exception):
    """A text value holds a control character, which only a full JSON encoder escapes."""


def _json_values(column: Any) -> tuple[Any, str]:
    """One column's values as JSON texts (null where missing), and the quote to put around them.

    A text column without missing values is returned bare with ``'"'``, so the quotes go in the
    object's single join rather than in a join of their own.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        if not pc.all(finite).as_py():  # NaN and infinities are null in JSON
            column = pc.if_else(finite, column, pa.scalar(None, kind))
        text = column.cast(pa.string())
        whole = pc.equal(pc.floor(column), column)
        if pc.any(whole).as_py():  # Arrow writes 3.0 as "3" (1e300 as "1e+300"): keep it a float
            # Whole values below 1e9 never take an exponent, so the text search is only needed
            # when a larger one is present.
            if pc.any(pc.and_(whole, pc.greater_equal(pc.abs(column), 1e9))).as_py():
                whole = pc.and_(whole, pc.invert(pc.match_substring(text, "e")))
            text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        return text, ""
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return column.cast(pa.string()), ""
    column = column.cast(pa.string())
    if pc.any(pc.match_substring_regex(column, '[\\x00-\\x1f"\\\\]')).as_py():
        if pc.any(pc.match_substring_regex(column, "[\\x00-\\x1f]")).as_py():
            raise _NeedsPython
        column = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"')
    if column.null_count:
        return pc.binary_join_element_wise('"', column, '"', ""), ""  # null stays null
    return column, '"'


def parquet_bytes(table: pa.Table, *, compression: str = "zstd") -> bytes:
    """``table`` as one Parquet object.

    Zstandard: as fast to write as Firehose's Snappy here and about half the bytes (Athena,
    DuckDB and pyarrow read both). Dictionary encoding and statistics only where they pay: not
    on ``features`` (one long, distinct JSON text per row), which makes the write about a third
    faster.
    """
    import pyarrow.parquet as pq

    out = io.BytesIO()
    small = [name for name in table.column_names if name != "features"]
    pq.write_table(
        table,
        out,
        compression=compression,
        use_dictionary=small,
        write_statistics=small,
        data_page_size=8 << 20,  # a few large pages: less per-page work on the long features texts
    )
    return out.getvalue()


def table_records(table: pa.Table, *, model: str, version: int) -> list[dict[str, Any]]:
    """The rows of a capture table as record dicts (features parsed, prediction typed)."""
    return [from_row(row, model=model, version=version) for row in table.to_pylist()]


def features_frame(table: pa.Table, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``features`` column of ``table`` as a DataFrame, one column per feature.

    The JSON texts are parsed together by pyarrow's JSON reader (types inferred per column);
    a column whose rows disagree on a type falls back to ``json.loads`` row by row.
    ``columns`` selects and orders the features (absent ones are all missing).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pj

    texts = table.column("features").fill_null("{}").to_pylist() if table.num_rows else []
    if not texts:
        frame = pd.DataFrame(index=range(0))
    else:
        body = "\n".join(t or "{}" for t in texts).encode()
        try:
            frame = pj.read_json(
                io.BytesIO(body), read_options=pj.ReadOptions(block_size=len(body) + 1)
            ).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            frame = pd.DataFrame.from_records([json.loads(t or "{}") for t in texts])
        if len(frame) != len(texts):  # rows that are all "{}": no columns inferred
            frame = pd.DataFrame.from_records([json.loads(t or "{}") for t in texts])
    return frame if columns is None else frame.reindex(columns=list(columns))
