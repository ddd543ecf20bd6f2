"""boto3 clients created lazily and reused, so moto can start first and warm Lambdas reuse them.

Endpoints follow boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` variables,
so the same code talks to AWS or to the embedded local AWS.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from sluice.errors import SluiceError

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
# Credentials of an assumed role for the current context (see :func:`assumed_role`).
_credentials: ContextVar[dict[str, str] | None] = ContextVar("sluice_credentials", default=None)

DEFAULT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)


def client(service: str, *, region: str | None = None, config: Config | None = None) -> Any:
    """A cached boto3 client for ``service``.

    The cache key includes the region and endpoint variables, so changing them (as local
    mode and tests do) yields a fresh client instead of a stale one.
    """
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    assumed = _credentials.get() or {}
    key = (
        service,
        region,
        endpoint,
        assumed.get("aws_access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID"),
        id(config),
    )
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = boto3.client(service, region_name=region, config=config or DEFAULT_CONFIG, **assumed)
            _clients[key] = found
        return found


@contextmanager
def assumed_role(role_arn: str, *, session_name: str = "sluice", region: str | None = None) -> Iterator[str]:
    """Within the block, :func:`client` returns clients acting as ``role_arn``.

    Used for cross-account work such as promotion into the prod account. Yields the assumed
    role's account id.
    """
    try:
        response = client("sts", region=region).assume_role(RoleArn=role_arn, RoleSessionName=session_name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("AccessDenied", "AccessDeniedException"):
            # Not a bug to report: the caller is not trusted by that role (wrong profile or account).
            raise SluiceError(
                f"cannot assume {role_arn}: {err.response['Error'].get('Message', 'access denied')} "
                "(is this the principal the role trusts?)",
                status=403,
            ) from None
        raise
    credentials = response["Credentials"]
    token = _credentials.set(
        {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
    )
    try:
        yield response["AssumedRoleUser"]["Arn"].split(":")[4]
    finally:
        _credentials.reset(token)


def reset_clients() -> None:
    """Forget cached clients (tests, or after credentials change)."""
    with _lock:
        _clients.clear()


def signed_request(method: str, url: str, *, body: bytes, region: str) -> urllib.request.Request:
    """A ``urllib`` request to an ``AWS_IAM`` API Gateway method, SigV4-signed with the caller's credentials.

    The credentials are the process's (an assumed role's within :func:`assumed_role`).
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    assumed = _credentials.get()
    if assumed:
        frozen: Any = Credentials(
            assumed["aws_access_key_id"], assumed["aws_secret_access_key"], assumed["aws_session_token"]
        ).get_frozen_credentials()
    else:
        found = boto3.Session().get_credentials()
        if found is None:
            raise SluiceError("no AWS credentials to sign the request with")
        frozen = found.get_frozen_credentials()
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(frozen, "execute-api", region).add_auth(request)
    return urllib.request.Request(url, data=body, headers=dict(request.headers.items()), method=method)
