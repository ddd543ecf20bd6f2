"""The artifact bucket: content-addressed writes and sha256-verified reads.

Every artifact is stored under its sha256 (:func:`~sluice.registry.records.artifact_key`), and
every read is checked against the digest the version recorded, so tampered or missing bytes
raise :class:`~sluice.errors.IntegrityError` instead of being served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from sluice import aws as sluice_aws
from sluice.errors import IntegrityError, NotFound
from sluice.registry.records import VersionRecord, artifact_key
from sluice.registry.table import error_code

_MISSING = ("404", "NoSuchKey", "NotFound")


class ArtifactStore:
    """The registry bucket's artifacts.

    Parameters
    ----------
    bucket_name
        The artifact bucket (``SLUICE_REGISTRY_BUCKET``).
    """

    def __init__(self, bucket_name: str) -> None:
        self.bucket_name = bucket_name

    @property
    def s3(self) -> Any:
        return sluice_aws.client("s3")

    def put_all(self, model: str, artifacts: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
        """Store ``artifacts`` (name -> bytes) of ``model``; return name -> ``{sha256, size, key}``.

        Bytes already stored under their digest are not written again.
        """

        def put(item: tuple[str, bytes]) -> tuple[str, dict[str, Any]]:
            artifact, body = item
            digest = hashlib.sha256(body).hexdigest()
            key = artifact_key(model, digest, artifact)
            try:
                self.s3.head_object(Bucket=self.bucket_name, Key=key)
            except ClientError as err:
                if error_code(err) not in _MISSING:
                    raise
                self.s3.put_object(
                    Bucket=self.bucket_name,
                    Key=key,
                    Body=bytes(body),
                    ChecksumAlgorithm="SHA256",
                    Metadata={"sha256": digest},
                )
            return artifact, {"sha256": digest, "size": len(body), "key": key}

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(put, sorted(artifacts.items())))

    def fetch(self, record: VersionRecord, artifact: str) -> bytes:
        """One artifact's bytes, verified against the sha256 ``record`` holds.

        Raises
        ------
        NotFound
            If the version has no such artifact.
        IntegrityError
            If the stored bytes are missing or do not match the recorded sha256.
        """
        info = record.artifacts.get(artifact)
        where = f"artifact {artifact!r} of model {record.name!r} version {record.version}"
        if info is None:
            raise NotFound(
                f"model {record.name!r} version {record.version} has no artifact {artifact!r} "
                f"(it has {', '.join(sorted(record.artifacts))})"
            )
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket_name, Key=info["key"])["Body"].read()
        except ClientError as err:
            if error_code(err) in _MISSING:
                raise IntegrityError(f"{where} is missing from the artifact bucket ({info['key']})") from None
            raise
        digest = hashlib.sha256(body).hexdigest()
        if digest != info["sha256"]:
            raise IntegrityError(
                f"{where} failed its integrity check: sha256 is {digest}, the registry recorded {info['sha256']}"
            )
        return body

    def fetch_many(self, record: VersionRecord, wanted: Sequence[str]) -> dict[str, bytes]:
        """Several verified artifacts, fetched in parallel (a cold start waits for the slowest)."""
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            return dict(zip(wanted, pool.map(lambda a: self.fetch(record, a), wanted), strict=True))
