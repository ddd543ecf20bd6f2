"""Read and write tabular training or scoring data at a local path or S3, and record its lineage.

Lineage is what a registry record needs to say exactly which bytes a model saw: the URI, the
S3 VersionId (or ETag when the bucket is unversioned), the sha256 of the bytes and the row count.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import NotFound, SluiceError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class DataLineage:
    """Which bytes were read: enough to find and verify them again."""

    uri: str
    sha256: str
    rows: int
    format: str
    version_id: str | None = None
    etag: str | None = None

    @classmethod
    def of(
        cls, uri: str, body: bytes, *, rows: int, fmt: str, version_id: str | None, etag: str | None
    ) -> DataLineage:
        """The lineage of ``body``, the bytes read from or written to ``uri``."""
        return cls(uri, hashlib.sha256(body).hexdigest(), rows, fmt, version_id, etag)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``, with a clear error for anything else."""
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise SluiceError(f"expected an S3 object URI like s3://bucket/key; got {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def data_format(uri: str) -> str:
    suffix = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    if suffix not in FORMATS:
        raise SluiceError(f"data file {uri!r} must end in .csv or .parquet")
    return suffix


def read_bytes(uri: str) -> tuple[bytes, str | None, str | None]:
    """The bytes at ``uri`` (local path or s3://) with the S3 VersionId and ETag where known."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        s3 = aws.client("s3")
        try:
            response = s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            raise NotFound(f"data file {uri} does not exist") from None
        except s3.exceptions.NoSuchBucket:
            raise NotFound(f"bucket of {uri} does not exist") from None
        etag = response.get("ETag", "").strip('"') or None
        return response["Body"].read(), response.get("VersionId"), etag
    path = Path(uri)
    if not path.is_file():
        raise NotFound(f"data file {uri} does not exist")
    return path.read_bytes(), None, None


def load_table(uri: str) -> tuple[pd.DataFrame, DataLineage]:
    """Read a CSV or Parquet file and describe exactly what was read."""
    import pandas as pd

    fmt = data_format(uri)
    body, version_id, etag = read_bytes(uri)
    try:
        frame = pd.read_csv(io.BytesIO(body)) if fmt == "csv" else pd.read_parquet(io.BytesIO(body))
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise SluiceError(f"data file {uri} cannot be read as {fmt}: {err}") from None
    return frame, DataLineage.of(uri, body, rows=len(frame), fmt=fmt, version_id=version_id, etag=etag)


def write_table(frame: pd.DataFrame, uri: str) -> DataLineage:
    """Write ``frame`` as CSV or Parquet (by suffix) to a local path or S3; return its lineage."""
    fmt = data_format(uri)
    buffer = io.BytesIO()
    if fmt == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    body = buffer.getvalue()
    version_id = etag = None
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        response = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
        version_id, etag = response.get("VersionId"), response.get("ETag", "").strip('"') or None
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(body)
    return DataLineage.of(uri, body, rows=len(frame), fmt=fmt, version_id=version_id, etag=etag)


def write_text(uri: str, text: str, *, content_type: str = "application/json") -> None:
    """Write a small text file (a manifest, a report) to a local path or S3."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        aws.client("s3").put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType=content_type)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(text)
