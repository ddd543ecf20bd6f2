"""SigV4 at the local API Gateway: verify a request against moto's IAM and STS, or sign one.

:func:`verify` does what API Gateway does for a method whose authorization type is
``AWS_IAM``: it reads the ``Authorization`` header, finds the access key in moto's IAM
(user access keys) or STS (sessions of assumed roles, whose ``X-Amz-Security-Token`` must
match), recomputes the signature of the request as received with botocore's
:class:`~botocore.auth.SigV4Auth` and that key's secret, and compares. The request's time
(``X-Amz-Date``) must be within 5 minutes of now, and the credential scope must name the
stage's region and ``execute-api``. Failures raise :class:`AuthError` carrying API Gateway's
403 message; success returns the verified :class:`Identity` (what handlers see as
``requestContext.identity``).

:func:`sign` is the client half, for tests, benches and the demo: it adds SigV4 headers with
botocore, by default with the process's credentials (those ``local up`` issued, see
:mod:`localaws.credentials`).

Not covered: query-string (presigned) SigV4, SigV4a, and identity or resource policies:
a verified key may call every ``AWS_IAM`` method, as if its policies allowed ``execute-api:Invoke``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, EnvProvider, ReadOnlyCredentials

from localaws.patches import moto_symbol

SERVICE = "execute-api"
MAX_SKEW = timedelta(minutes=5)
_STAMP = "%Y%m%dT%H%M%SZ"
_MAX_CANONICAL = 1500  # the echoed canonical request keeps a 403 body under 4 KB

_UNRECOGNIZED = "UnrecognizedClientException"
MISSING_TOKEN = "Missing Authentication Token"
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


class AuthError(Exception):
    """A request API Gateway would refuse with 403, ``{"message": message}`` and ``x-amzn-ErrorType: kind``."""

    def __init__(self, message: str, kind: str = "IncompleteSignatureException") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class Identity:
    """The verified caller of a request (``requestContext.identity`` of the proxy event).

    ``caller`` and ``user`` are the principal id as API Gateway reports it: the user id
    (``AIDA…``) for an IAM user, ``<role id>:<session name>`` for an assumed role.
    """

    access_key: str
    account_id: str
    arn: str
    principal_id: str

    def context(self) -> dict[str, Any]:
        return {
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "caller": self.principal_id,
            "user": self.principal_id,
            "userArn": self.arn,
        }


@dataclass(frozen=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def verify(
    method: str, raw_path: str, headers: Any, body: bytes, *, region: str, now: datetime | None = None
) -> Identity:
    """The identity of a SigV4-signed request, as API Gateway verifies it.

    Parameters
    ----------
    method, raw_path, headers, body
        The request as received (``raw_path`` with its query string; ``headers`` an
        ``email.message.Message`` or a mapping).
    region
        The stage's region, which the credential scope must name.

    Raises
    ------
    AuthError
        With API Gateway's 403 message: unsigned, malformed, expired, unknown key, bad signature.
    """
    header = _header(headers, "Authorization")
    if not header:
        raise AuthError(MISSING_TOKEN, "MissingAuthenticationTokenException")
    auth = _parse(header)
    stamp = _header(headers, "X-Amz-Date")
    if not stamp:
        raise AuthError("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    _check_scope(auth, stamp, region)
    _check_time(stamp, now or datetime.now(UTC))
    credentials, identity = lookup(auth.access_key, _header(headers, "X-Amz-Security-Token"), now=now)
    request = _received(method, raw_path, headers, body, auth)
    signer = SigV4Auth(credentials, SERVICE, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, auth.signature):
        raise AuthError(
            f"{BAD_SIGNATURE}\n\nThe Canonical String for this request should have been\n"
            f"'{canonical[:_MAX_CANONICAL]}'\n",
            "InvalidSignatureException",
        )
    return identity


def lookup(access_key: str, session_token: str | None, *, now: datetime | None = None) -> tuple[Credentials, Identity]:
    """The secret moto holds for ``access_key`` and who it belongs to.

    Raises
    ------
    AuthError
        If moto's IAM has no such active key, or its STS session's token differs or expired.
    """
    account = moto_symbol("moto.iam.models.get_account_id_from", owner=__name__)(access_key)
    iam = moto_symbol("moto.iam.models.iam_backends", owner=__name__)[account]["aws"]
    key = iam.access_keys.get(access_key)
    if key is None or getattr(key, "status", "Active") != "Active":
        raise AuthError(INVALID_TOKEN, _UNRECOGNIZED)
    if getattr(key, "role_arn", None):
        sts = moto_symbol("moto.sts.models.sts_backends", owner=__name__)[account]["aws"]
        session = sts.get_assumed_role_from_access_key(access_key)
        if session is None or not session_token or not hmac.compare_digest(session.session_token, session_token):
            raise AuthError(INVALID_TOKEN, _UNRECOGNIZED)
        if session.expiration.replace(tzinfo=UTC) < (now or datetime.now(UTC)):
            raise AuthError(EXPIRED_TOKEN, "ExpiredTokenException")
        credentials = Credentials(access_key, session.secret_access_key, session.session_token)
        return credentials, Identity(access_key, account, session.arn, session.user_id)
    if session_token:  # a user's long-term key carries no session token
        raise AuthError(INVALID_TOKEN, _UNRECOGNIZED)
    user = iam.users.get(key.user_name)
    if user is None:
        raise AuthError(INVALID_TOKEN, _UNRECOGNIZED)
    return Credentials(access_key, key.secret_access_key), Identity(access_key, account, user.arn, user.id)


def sign(
    method: str,
    url: str,
    *,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    credentials: Credentials | ReadOnlyCredentials | None = None,
    region: str | None = None,
) -> dict[str, str]:
    """``headers`` plus the SigV4 headers (``Authorization``, ``X-Amz-Date``, the session token).

    ``credentials`` default to the process's (on a running local stage: the developer's
    key that ``local up`` issued); ``region`` to ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` or
    the session's. Send exactly ``body`` to exactly ``url``: both are signed.
    """
    if credentials is None:
        credentials = _default_credentials()
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        import botocore.session

        region = botocore.session.get_session().get_config_variable("region") or "us-east-1"
    data = body.encode() if isinstance(body, str) else body
    request = AWSRequest(method=method, url=url, data=data, headers=dict(headers or {}))
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def _default_credentials() -> ReadOnlyCredentials:
    """The environment's credentials (cheap, read on every call), else botocore's whole chain."""
    found = EnvProvider().load()
    if found is None:
        import botocore.session

        found = botocore.session.get_session().get_credentials()
    if found is None:
        from botocore.exceptions import NoCredentialsError

        raise NoCredentialsError()
    frozen: ReadOnlyCredentials = found.get_frozen_credentials()
    return frozen


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    return str(value) if value is not None else None


def _parse(header: str) -> _Authorization:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise AuthError(f"Authorization header requires 'Credential' parameter. Authorization={algorithm[:40]}")
    parts = dict(p.strip().partition("=")[::2] for p in rest.split(",") if "=" in p)
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not parts.get(k)]
    if missing:
        raise AuthError(" ".join(f"Authorization header requires '{k}' parameter." for k in missing))
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError("Credential should be scoped to a valid region. ")
    return _Authorization(
        access_key=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_headers=parts["SignedHeaders"].lower().split(";"),
        signature=parts["Signature"],
    )


def _check_scope(auth: _Authorization, stamp: str, region: str) -> None:
    if auth.date != stamp[:8]:
        raise AuthError(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date[:8]}' != '{stamp[:8]}', from '{stamp[:16]}'."
        )
    if auth.region != region:
        raise AuthError("Credential should be scoped to a valid region. ")
    if auth.service != SERVICE:
        raise AuthError(f"Credential should be scoped to correct service: '{SERVICE}'. ")


def _check_time(stamp: str, now: datetime) -> None:
    try:
        signed_at = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        raise AuthError(f"Date must be in ISO-8601 'basic format'. Got '{stamp[:20]}'.") from None
    if signed_at < now - MAX_SKEW:
        raise AuthError(
            f"Signature expired: {stamp} is now earlier than {(now - MAX_SKEW).strftime(_STAMP)} "
            f"({now.strftime(_STAMP)} - 5 min.)",
            "InvalidSignatureException",
        )
    if signed_at > now + MAX_SKEW:
        raise AuthError(
            f"Signature not yet current: {stamp} is still later than {(now + MAX_SKEW).strftime(_STAMP)} "
            f"({now.strftime(_STAMP)} + 5 min.)",
            "InvalidSignatureException",
        )


def _received(method: str, raw_path: str, headers: Any, body: bytes, auth: _Authorization) -> AWSRequest:
    """The request as signed: its method, path and query, the signed headers, its body and time."""
    signed: dict[str, str] = {}
    for name in auth.signed_headers:
        values = headers.get_all(name) if hasattr(headers, "get_all") else [headers.get(name)]
        present = [str(v) for v in values or [] if v is not None]
        if present:
            signed[name] = ",".join(present)
    declared = signed.get("x-amz-content-sha256")
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        signed["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()  # the body is what counts
    split = urlsplit(raw_path)
    url = f"http://{signed.get('host', 'localhost')}{split.path}" + (f"?{split.query}" if split.query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=signed)
    request.context["timestamp"] = signed.get("x-amz-date") or _header(headers, "X-Amz-Date") or ""
    return request
