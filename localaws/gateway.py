"""A local API Gateway: serve moto's REST APIs over HTTP, with Lambda proxy integrations.

moto 5.2.5 stores REST APIs but raises NotImplementedError for ``AWS_PROXY`` integrations.
:class:`Gateways` starts one ``ThreadingHTTPServer`` per REST API on 127.0.0.1, so a URL is
``http://127.0.0.1:<port>/<stage>/<path>`` as on ``execute-api``. Each request:

* is refused with 413 ``{"message": "Request Too Long"}`` when its body is over 10 MB
  (:data:`MAX_REQUEST_BYTES`), before it is read: the rest is discarded unread;
* matches the API's resources (literal parts, ``{param}`` and ``{proxy+}``) and method
  (``ANY`` included); unknown paths or methods get API Gateway's 403
  ``{"message": "Missing Authentication Token"}``, an unknown stage 404;
* when the method's authorization type is ``AWS_IAM``, must carry a SigV4 signature that
  :func:`localaws.auth.verify` checks with botocore against the secret moto's IAM or STS
  holds for the access key: unsigned is 403 ``Missing Authentication Token``, an unknown key
  403 ``The security token included in the request is invalid.``, a wrong signature 403
  ``The request signature we calculated does not match…``, a time more than 5 minutes off
  403 ``Signature expired…``, each with API Gateway's ``x-amzn-ErrorType``. The verified key's
  principal (IAM user or assumed-role session) is ``requestContext.identity``. Identity
  policies are not evaluated (any verified key may invoke, see :mod:`localaws.auth`); the API's
  resource policy's explicit denies are, as 403 ``AccessDeniedException`` (:mod:`localaws.api_policy`);
* when the method's request validator validates bodies, checks the body against the
  method's request model for the request's content type, else its ``$default`` model, else
  none, as API Gateway does (:mod:`localaws.validation`); a mismatch is 400 ``{"message":
  "Invalid request body"}`` or, when the API defines a ``BAD_REQUEST_BODY`` gateway response,
  that response's template with ``$context.error.validationErrorString`` filled in: the
  path of each failing value and jsonschema's reason (API Gateway's validator words them
  differently), the first 20 and a count, never the body itself. A body nested too deeply
  to parse is a 400 too;
* builds the REST proxy event (payload format 1.0), invokes the integration's Lambda
  through :class:`localaws.lambdas.runtime.LambdaRuntime` (so an alias's weighted routing
  applies) and maps the proxy response; a function error or malformed response is 502
  ``{"message": "Internal server error"}``, as API Gateway answers.

Sockets use HTTP/1.1 keep-alive and ``TCP_NODELAY``; without it, small responses stall
about 40 ms on delayed ACKs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from localaws import api_policy, auth, validation
from localaws.patches import moto_symbol
from sluice.errors import NotFound

if TYPE_CHECKING:
    from localaws.env import LocalAws

log = logging.getLogger("localaws.gateway")
_LAMBDA_URI = re.compile(r"arn:aws:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<arn>.+)/invocations$")
#: API Gateway's payload limit: a larger body is refused with 413 before it is read.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: How much of a refused body is read and discarded so the client sees the 413; beyond, the socket closes.
_DRAIN_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Route:
    resource_path: str  # e.g. /models/{name}
    resource_id: str
    method: Any  # moto Method
    path_parameters: dict[str, str]


@dataclass(frozen=True)
class Request:
    """One request as the gateway received it (path without the stage)."""

    method: str
    path: str
    query: str
    headers: Any  # email.message.Message
    body: bytes
    stage: str
    client: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], gateway: ApiGateway) -> None:
        self.gateway = gateway
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        self._unread = 0
        body, refusal = self._read_body()
        if refusal is not None:
            self._answer(*refusal)
            self._discard()
            return
        try:
            status, headers, payload = self.server.gateway.handle(
                self.command, self.path, self.headers, body, client=self.client_address[0]
            )
        except Exception:  # a bug here must still answer like API Gateway, not drop the socket
            log.exception("local gateway failed on %s %s", self.command, self.path)
            status, headers, payload = _message(500, "Internal server error")
        self._answer(status, headers, payload)

    def _read_body(self) -> tuple[bytes, tuple[int, dict, bytes] | None]:
        """The body, or why it is refused (413 over :data:`MAX_REQUEST_BYTES`) without reading it."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b"", _message(400, "Bad Request")
        if length > MAX_REQUEST_BYTES:
            self._unread = length
            self.close_connection = True
            return b"", _message(413, "Request Too Long")
        return (self.rfile.read(length) if length > 0 else b""), None

    def _read_chunked(self) -> tuple[bytes, tuple[int, dict, bytes] | None]:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                return b"", _message(400, "Bad Request")
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts), None
            total += size
            if total > MAX_REQUEST_BYTES:
                self.close_connection = True
                return b"", _message(413, "Request Too Long")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _discard(self) -> None:
        """Read and drop what is left of a refused body (up to a cap), then close the connection."""
        left = min(getattr(self, "_unread", 0), _DRAIN_BYTES)
        while left > 0:
            chunk = self.rfile.read(min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
        self.close_connection = True

    def _answer(self, status: int, headers: dict, payload: bytes) -> None:
        self.send_response(status)
        sent = {k.lower() for k in headers}
        for key, value in headers.items():
            for item in value if isinstance(value, list) else [value]:
                self.send_header(key, str(item))
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class ApiGateway:
    """One REST API served locally."""

    def __init__(self, local: LocalAws, api_id: str, port: int = 0) -> None:
        self.local = local
        self.api_id = api_id
        self.server = _Server(("127.0.0.1", port), self)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name=f"gateway-{api_id}"
        )
        self._thread.start()

    # -------------------------------------------------------------- moto model

    def api(self) -> Any:
        return _backend(self.local).apis[self.api_id]

    def stages(self) -> list[str]:
        return sorted(self.api().stages)

    def url(self, stage: str | None = None) -> str:
        stages = self.stages()
        name = stage or (stages[0] if stages else "prod")
        return f"http://127.0.0.1:{self.port}/{name}"

    def match(self, method: str, path: str) -> Route | None:
        """The route for ``method path`` (path without the stage), or None."""
        api = self.api()
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        best: tuple[int, Route] | None = None
        for resource in list(api.resources.values()):
            template = resource.get_path()
            params = _match_path(template, parts)
            if params is None:
                continue
            methods = resource.resource_methods or {}
            found = methods.get(method) or methods.get("ANY")
            if found is None:
                continue
            # Prefer literal matches over parameters over greedy proxies, as API Gateway does.
            score = sum(
                3 if not p.startswith("{") else (1 if p.endswith("+}") else 2)
                for p in template.strip("/").split("/")
                if p
            )
            route = Route(template, resource.id, found, params)
            if best is None or score > best[0]:
                best = (score, route)
        return best[1] if best else None

    # -------------------------------------------------------------- requests

    def handle(
        self, method: str, raw_path: str, headers: Any, body: bytes, *, client: str
    ) -> tuple[int, dict, bytes]:
        split = urlsplit(raw_path)
        segments = split.path.lstrip("/").split("/", 1)
        stage = segments[0]
        request = Request(
            method, "/" + (segments[1] if len(segments) > 1 else ""), split.query, headers, body, stage, client
        )
        if stage not in self.api().stages:
            return _message(404 if stage else 403, "Not Found" if stage else "Missing Authentication Token")
        route = self.match(method, request.path)
        if route is None:
            return _message(403, "Missing Authentication Token")
        identity = None
        if str(getattr(route.method, "authorization_type", "") or "").upper() == "AWS_IAM":
            try:
                identity = auth.verify(method, raw_path, headers, body, region=self.local.region)
            except auth.AuthError as refused:
                status, _, payload = _message(403, refused.message)
                return status, {"Content-Type": "application/json", "x-amzn-ErrorType": refused.kind}, payload
            arn = f"arn:aws:execute-api:{self.local.region}:{self.local.account}:{self.api_id}"
            arn += f"/{stage}/{method}{request.path}"
            if api_policy.explicit_deny(
                self.api().policy, caller_arn=identity.arn, account=identity.account_id, method_arn=arn
            ):
                message = f"User: {identity.arn} is not authorized to perform: execute-api:Invoke on "
                message += f"resource: {arn} with an explicit deny"
                denied = {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}
                return 403, denied, json.dumps({"Message": message}).encode()
        invalid = self._body_error(route.method, headers, body)
        if invalid is not None:
            return self._bad_request_body(invalid)
        integration = route.method.method_integration
        uri = getattr(integration, "uri", "") or ""
        target = _LAMBDA_URI.match(uri)
        if (
            integration is None
            or getattr(integration, "integration_type", "") != "AWS_PROXY"
            or target is None
        ):
            return _message(500, "Internal server error: only Lambda proxy integrations run locally")
        event = self.proxy_event(request, route, identity)
        try:
            result = self.local.lambda_runtime().invoke(target["arn"], None, json.dumps(event))
        except NotFound:
            return _message(502, "Internal server error")
        if result.function_error:
            return _message(502, "Internal server error")
        return _proxy_response(result.json())

    def _body_error(self, method: Any, headers: Any, body: bytes) -> str | None:
        """Why ``body`` fails the method's request model, or ``None`` when it passes (or none applies)."""
        validator_id = getattr(method, "request_validator_id", None)
        models = getattr(method, "request_models", None) or {}
        if not validator_id or not models:
            return None
        validator = self.api().request_validators.get(validator_id)
        if validator is None or not validator.validate_request_body:
            return None
        # As API Gateway: the model of the request's media type (no header reads as JSON), else
        # ``$default``, else no validation ("If no matching content type is found, request
        # validation is not performed"). Media types compare case-insensitively, so a type
        # spelled differently finds its model rather than skipping validation.
        content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        by_type = {str(key).lower(): name for key, name in models.items()}
        model_name = by_type.get(content_type) or models.get("$default")
        if model_name is None:
            return None
        model = next((m for m in self.api().models.values() if m.name == model_name), None)
        if model is None or not model.schema:
            return None
        schema = model.schema if isinstance(model.schema, str) else json.dumps(model.schema, sort_keys=True)
        return validation.body_error(schema, body)

    def _bad_request_body(self, reason: str) -> tuple[int, dict, bytes]:
        """The API's ``BAD_REQUEST_BODY`` gateway response for ``reason``, else API Gateway's default."""
        response = self.api().gateway_responses.get("BAD_REQUEST_BODY")
        template = ((response.response_templates or {}) if response else {}).get("application/json")
        if not template:
            return _message(400, "Invalid request body")
        # Inside the template's JSON string, the reason must stay a valid JSON string.
        escaped = json.dumps(reason)[1:-1]
        rendered = template.replace("$context.error.validationErrorString", escaped).replace(
            "$context.error.messageString", json.dumps("Invalid request body")
        )
        return int(response.status_code or 400), {"Content-Type": "application/json"}, rendered.encode()

    def proxy_event(self, request: Request, route: Route, identity: auth.Identity | None) -> dict[str, Any]:
        """The REST proxy event (payload format 1.0) of ``request`` on ``route``."""
        multi_headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            multi_headers.setdefault(key, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for key, value in parse_qsl(request.query, keep_blank_values=True):
            multi_query.setdefault(key, []).append(value)
        try:
            text, is_base64 = request.body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(request.body).decode(), True
        return {
            "resource": route.resource_path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": route.path_parameters or None,
            "stageVariables": (getattr(self.api().stages.get(request.stage), "variables", None) or None),
            "requestContext": self._request_context(request, route, identity),
            "body": text if request.body else None,
            "isBase64Encoded": is_base64,
        }

    def _request_context(self, request: Request, route: Route, identity: auth.Identity | None) -> dict[str, Any]:
        now = time.time()
        request_id = str(uuid.uuid4())
        caller: dict[str, Any] = {"accessKey": None, "accountId": None, "caller": None, "user": None, "userArn": None}
        return {
            "accountId": self.local.account,
            "apiId": self.api_id,
            "resourceId": route.resource_id,
            "resourcePath": route.resource_path,
            "stage": request.stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "path": f"/{request.stage}{request.path}",
            "protocol": "HTTP/1.1",
            "httpMethod": request.method,
            "domainName": f"127.0.0.1:{self.port}",
            "identity": {
                "sourceIp": request.client,
                "userAgent": request.headers.get("User-Agent"),
                **(identity.context() if identity is not None else caller),
            },
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Gateways:
    """Every REST API of the local stage, each on its own port."""

    def __init__(self, local: LocalAws, gateways: dict[str, ApiGateway]) -> None:
        self.local = local
        self.by_id = gateways

    @classmethod
    def serve(cls, local: LocalAws, *, first_port: int = 0) -> Gateways:
        gateways: dict[str, ApiGateway] = {}
        api_ids = sorted(_backend(local).apis)
        for index, api_id in enumerate(api_ids):
            gateways[api_id] = ApiGateway(local, api_id, port=(first_port + index) if first_port else 0)
        return cls(local, gateways)

    def refresh(self) -> None:
        """Serve REST APIs created after start (e.g. by a later stack update)."""
        for api_id in _backend(self.local).apis:
            if api_id not in self.by_id:
                self.by_id[api_id] = ApiGateway(self.local, api_id)

    def find(self, api: str) -> ApiGateway:
        """A gateway by API id, API name, or logical id prefix of its ``AWS::ApiGateway::RestApi``.

        Raises
        ------
        NotFound
            If nothing, or more than one API, matches.
        """
        self.refresh()
        if api in self.by_id:
            return self.by_id[api]
        by_name = [g for g in self.by_id.values() if g.api().name == api]
        if len(by_name) == 1:
            return by_name[0]
        by_logical = {
            r.physical_id
            for r in self.local.resources
            if r.resource_type == "AWS::ApiGateway::RestApi" and r.logical_id.startswith(api)
        }
        if len(by_logical) == 1:
            return self.by_id[by_logical.pop()]
        raise NotFound(f"no single local REST API matches {api!r} (have {', '.join(self.by_id) or 'none'})")

    def url(self, api: str) -> str:
        return self.find(api).url()

    def describe(self) -> list[dict[str, Any]]:
        logical = {
            r.physical_id: r.logical_id
            for r in self.local.resources
            if r.resource_type == "AWS::ApiGateway::RestApi"
        }
        return [
            {
                "api_id": api_id,
                "logical_id": logical.get(api_id, ""),
                "name": g.api().name,
                "url": g.url(),
                "port": g.port,
            }
            for api_id, g in self.by_id.items()
        ]

    def stop(self) -> None:
        for gateway in self.by_id.values():
            gateway.stop()
        self.by_id = {}


def _backend(local: LocalAws) -> Any:
    """moto's API Gateway backend of the stage's account and region."""
    return moto_symbol("moto.apigateway.models.apigateway_backends", owner=__name__)[local.account][local.region]


def _match_path(template: str, parts: list[str]) -> dict[str, str] | None:
    pieces = [p for p in template.strip("/").split("/") if p]
    params: dict[str, str] = {}
    for index, piece in enumerate(pieces):
        if piece.startswith("{") and piece.endswith("+}"):
            if index >= len(parts):
                return None
            params[piece[1:-2]] = "/".join(parts[index:])
            return params
        if index >= len(parts):
            return None
        if piece.startswith("{") and piece.endswith("}"):
            params[piece[1:-1]] = parts[index]
        elif piece != parts[index]:
            return None
    return params if len(pieces) == len(parts) else None


def _message(status: int, message: str) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps({"message": message}).encode()


def _proxy_response(result: Any) -> tuple[int, dict, bytes]:
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int | str):
        return _message(502, "Internal server error")
    headers: dict[str, Any] = {}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key] = [str(v) for v in values]
    for key, value in (result.get("headers") or {}).items():
        headers[key] = str(value)
    headers.pop("Content-Length", None)
    headers.pop("content-length", None)
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, payload
