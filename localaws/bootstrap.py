"""Emulate ``cdk bootstrap`` and ``cdk-assets publish`` against the embedded local AWS.

The synthesized templates reference the bootstrap resources by their default names
(qualifier ``hnb659fds``): the file-assets bucket, the container-assets ECR repository and
the SSM parameter holding the bootstrap version, which every stack's ``BootstrapVersion``
parameter reads. Assets are published exactly where the asset manifests say.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from sluice import aws

QUALIFIER = "hnb659fds"
BOOTSTRAP_VERSION = "30"
# What ``cdk bootstrap`` writes to SSM; the templates' CheckBootstrapVersion rule needs >= 6.
VERSION_PARAMETER = f"/cdk-bootstrap/{QUALIFIER}/version"

# A manifest that ECR accepts for ``put_image``: the image functions run from source locally
# (see localaws.lambdas.spec), so only the tag has to exist.
_PLACEHOLDER_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 2,
        "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
    },
    "layers": [],
}


@dataclass(frozen=True)
class PublishedAsset:
    """One asset as it was published: a file/zip in S3 or an image tag in ECR."""

    asset_hash: str
    kind: str  # "file" | "image"
    location: str  # s3://bucket/key or <repository>:<tag>
    source: str  # path of the asset in the cloud assembly


def assets_bucket(account: str, region: str) -> str:
    return f"cdk-{QUALIFIER}-assets-{account}-{region}"


def container_repository(account: str, region: str) -> str:
    return f"cdk-{QUALIFIER}-container-assets-{account}-{region}"


def bootstrap(account: str, region: str) -> dict[str, str]:
    """Create the bootstrap resources (idempotent) and return their names."""
    s3 = aws.client("s3", region=region)
    bucket = assets_bucket(account, region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    aws.client("ssm", region=region).put_parameter(
        Name=VERSION_PARAMETER, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True
    )
    ecr = aws.client("ecr", region=region)
    repository = container_repository(account, region)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    return {
        "assets_bucket": bucket,
        "container_repository": repository,
        "version_parameter": VERSION_PARAMETER,
    }


def publish_assets(assets_path: Path, *, account: str, region: str) -> list[PublishedAsset]:
    """Upload the file assets and register the image assets of one ``*.assets.json``.

    Directory assets are zipped the way the CDK CLI does (files in sorted order, relative
    paths, fixed timestamps); ``file`` assets are uploaded as they are. Image assets are
    not built (no Docker): their tag is registered in ECR with a placeholder manifest and
    the function runs from source.
    """
    manifest = json.loads(assets_path.read_text())
    base = assets_path.parent
    s3 = aws.client("s3", region=region)
    published: list[PublishedAsset] = []
    for asset_hash, asset in manifest.get("files", {}).items():
        source = (base / asset["source"]["path"]).resolve()
        packaging = asset["source"].get("packaging", "file")
        if packaging == "zip" and source.is_dir():
            body = _cached_zip(source, asset_hash)
        else:
            body = source.read_bytes()
        for dest in asset.get("destinations", {}).values():
            bucket = _substitute(dest["bucketName"], account, region)
            key = dest["objectKey"]
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            published.append(PublishedAsset(asset_hash, "file", f"s3://{bucket}/{key}", str(source)))
    ecr = aws.client("ecr", region=region)
    for asset_hash, asset in manifest.get("dockerImages", {}).items():
        source = (base / asset["source"].get("directory", ".")).resolve()
        for dest in asset.get("destinations", {}).values():
            repository = _substitute(dest["repositoryName"], account, region)
            tag = dest["imageTag"]
            with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
                ecr.create_repository(repositoryName=repository)
            with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
                ecr.put_image(
                    repositoryName=repository,
                    imageManifest=json.dumps(_PLACEHOLDER_MANIFEST | {"annotations": {"sluice.tag": tag}}),
                    imageTag=tag,
                )
            published.append(PublishedAsset(asset_hash, "image", f"{repository}:{tag}", str(source)))
    return published


def asset_cache_dir() -> Path:
    """Where zipped directory assets are kept between runs (``SLUICE_LOCAL_ASSET_CACHE``)."""
    configured = os.environ.get("SLUICE_LOCAL_ASSET_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "sluice" / "assets"


def _cached_zip(directory: Path, asset_hash: str) -> bytes:
    # The asset hash is the CDK's hash of the directory's content, so a zip made for it once
    # stays valid: the 136 MB scoring layer takes ~20 s to zip and is reused afterwards.
    cache = asset_cache_dir()
    path = cache / f"{asset_hash}.zip"
    if path.is_file():
        return path.read_bytes()
    body = zip_directory(directory)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_bytes(body)
        staging.replace(path)
    except OSError:  # a read-only home only costs the zipping time
        pass
    return body


def zip_directory(directory: Path) -> bytes:
    """A deterministic zip of ``directory`` (what the CDK CLI uploads for a directory asset)."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for root, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                info = zipfile.ZipInfo(
                    path.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0)
                )
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes(), compresslevel=1)  # local only: speed over size
    return buffer.getvalue()


def _substitute(value: str, account: str, region: str) -> str:
    return (
        value.replace("${AWS::AccountId}", account)
        .replace("${AWS::Region}", region)
        .replace("${AWS::Partition}", "aws")
    )
