"""Lineage: where a version came from (data, code, image, parent version, role).

:meth:`Lineage.from_data` hashes the training data (streamed) and, for S3, records the object's
VersionId or ETag; :func:`code_version` names the training code.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from sluice import __version__
from sluice import aws as sluice_aws
from sluice.errors import NotFound, SluiceError
from sluice.registry.table import error_code


@dataclass(frozen=True)
class Lineage:
    """Where a version came from.

    Parameters
    ----------
    data_uri
        Training data location (``s3://bucket/key`` or ``file:///path``).
    data_version
        S3 ``VersionId`` of the data object, else its ETag (empty for local files).
    data_sha256, data_rows
        Content hash and row count of the training data.
    code_version
        Version of the training code (package version and git commit where known).
    image_digest
        Container image digest of the training job, where known.
    hyperparameters
        The estimator's parameters (defaults to the bundle's when empty).
    parent_version
        The version this one retrains, if any.
    role
        ARN of the principal that registered the version (filled from STS when empty).
    libraries
        ``{library: version}`` of the libraries that produced the model file (a fitted model
        registered from a file; its ``model.json`` records the same, signed, for deploy's check).
    """

    data_uri: str = ""
    data_version: str = ""
    data_sha256: str = ""
    data_rows: int = 0
    code_version: str = ""
    image_digest: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    role: str = ""
    libraries: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_data(
        cls,
        location: str | Path,
        *,
        rows: int,
        parent_version: int | None = None,
        image_digest: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> Lineage:
        """Lineage of training data at ``location``: a local path or an ``s3://`` URI.

        Hashes the data (streamed) and, for S3, records the object's VersionId or ETag.
        """
        text = str(location)
        if text.startswith("s3://"):
            uri, version, digest = _describe_s3(text)
        else:
            path = Path(text).expanduser().resolve()
            if not path.is_file():
                raise NotFound(f"training data {text!r} not found")
            uri, version = path.as_uri(), ""
            with path.open("rb") as handle:
                digest = _sha256_stream(handle)
        return cls(
            data_uri=uri,
            data_version=version,
            data_sha256=digest,
            data_rows=int(rows),
            code_version=code_version(),
            image_digest=image_digest
            if image_digest is not None
            else os.environ.get("SLUICE_IMAGE_DIGEST", ""),
            hyperparameters=dict(hyperparameters or {}),
            parent_version=parent_version,
        )


def code_version() -> str:
    """``SLUICE_CODE_VERSION`` if set, else the package version and, in a git checkout, the commit."""
    configured = os.environ.get("SLUICE_CODE_VERSION")
    if configured:
        return configured
    version = f"sluice {__version__}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {commit})" if commit else version


def _describe_s3(uri: str) -> tuple[str, str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise SluiceError(f"training data URI {uri!r} must look like s3://bucket/key")
    s3 = sluice_aws.client("s3")
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in ("NoSuchKey", "NoSuchBucket", "404"):
            raise NotFound(f"training data {uri!r} not found") from None
        raise
    version = obj.get("VersionId") or ""
    if not version or version == "null":
        version = obj.get("ETag", "").strip('"')
    body = obj["Body"]
    try:
        return uri, str(version), _sha256_stream(body)
    finally:
        body.close()


def _sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()
