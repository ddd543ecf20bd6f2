"""A warm Lambda execution environment: ``python -m sluice.local.worker``.

The parent (:mod:`sluice.local.lambdas`) starts one worker per function version and sends
it one JSON line per invocation on stdin; the worker answers with one JSON line on the
original stdout. Everything the handler prints or logs goes to stderr, which the parent
streams to CloudWatch Logs (and turns EMF lines into metrics). The handler module is
imported once (the cold start); later invocations reuse it, its module-level clients and
caches, like a warm Lambda.

The worker also serves the Extensions API for internal extensions (threads of the handler's
process, see :mod:`sluice.extension`) at ``AWS_LAMBDA_RUNTIME_API``, with Lambda's rules: an
extension registers during init (the handler's import) and only for ``INVOKE`` events; each
invocation's ``INVOKE`` event goes to every extension; the response goes out when the handler
returns, and the environment takes its next invocation only once every extension has asked for
its next event again (the worker then writes ``{"done": id}``, and the parent hands it work
again). Without extensions a worker is free as soon as it has answered.

Environment: ``_HANDLER`` (``module.function``), ``LAMBDA_TASK_ROOT`` (code root, put first
on ``sys.path``), and the function's own variables.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INIT_COUNT = 0  # how many times this process imported the handler (1 once warm)


class LambdaContext:
    """The attributes of AWS's Python ``LambdaContext`` that handlers and Powertools read."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.aws_request_id = request["request_id"]
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = request.get("invoked_arn", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = time.time() * 1000 + request["timeout_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


@dataclass
class _Extension:
    name: str
    events: list[str]
    queue: list[dict[str, Any]] = field(default_factory=list)
    waiting: bool = False


class ExtensionsApi:
    """The Extensions API of this execution environment, on ``127.0.0.1`` (internal extensions)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._extensions: dict[str, _Extension] = {}
        self._init_done = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection per extension

            def setup(self) -> None:
                super().setup()
                # Headers and body are two writes: without this, delayed ACKs stall each ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.endswith("/extension/register"):
                    self._answer(*api.register(self.headers.get("Lambda-Extension-Name", ""), raw))
                else:  # init/error and exit/error: accepted and logged
                    print(f"EXTENSION {self.path}: {raw[:500]!r}")
                    self._answer(202, {"status": "OK"})

            def do_GET(self) -> None:
                if not self.path.endswith("/extension/event/next"):
                    self._answer(404, {"errorMessage": f"unknown path {self.path}", "errorType": "NotFound"})
                    return
                self._answer(*api.next(self.headers.get("Lambda-Extension-Identifier", "")))

            def _answer(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="extensions-api").start()

    @property
    def extensions(self) -> int:
        with self._cond:
            return len(self._extensions)

    def register(self, name: str, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            events = list(json.loads(raw or b"{}").get("events") or [])
        except (ValueError, AttributeError):
            return _refused(400, "InvalidRequestFormat", "register body is not JSON")
        if not name:
            return _refused(400, "InvalidRequestFormat", "Lambda-Extension-Name is missing")
        if "SHUTDOWN" in events:
            return _refused(
                400,
                "ShutdownEventNotSupportedForInternalExtension",
                "internal extensions cannot register for SHUTDOWN",
            )
        if set(events) - {"INVOKE"}:
            return _refused(400, "InvalidRequestFormat", f"unknown events {events}")
        with self._cond:
            if self._init_done:
                return _refused(403, "Extension.InvalidState", "extensions register during init only")
            identifier = str(uuid.uuid4())
            self._extensions[identifier] = _Extension(name, events)
        body = {"functionName": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
                "functionVersion": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                "handler": os.environ.get("_HANDLER", "")}  # fmt: skip
        return 200, body, {"Lambda-Extension-Identifier": identifier}

    def next(self, identifier: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._cond:
            extension = self._extensions.get(identifier)
            if extension is None:
                return _refused(403, "Extension.UnknownExtension", "unknown extension id")
            extension.waiting = True
            self._cond.notify_all()
            while not extension.queue:
                self._cond.wait()
            event = extension.queue.pop(0)
            extension.waiting = False
        return 200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())}

    def end_init(self, timeout_s: float = 10.0) -> None:
        """Init ends when every registered extension has asked for its first event."""
        with self._cond:
            self._init_done = True
            self._wait_idle(time.monotonic() + timeout_s)

    def invoke(self, request: dict[str, Any], deadline_ms: float) -> None:
        event = {
            "eventType": "INVOKE",
            "deadlineMs": int(deadline_ms),
            "requestId": request["request_id"],
            "invokedFunctionArn": request.get("invoked_arn", ""),
            "tracing": {"type": "X-Amzn-Trace-Id", "value": request.get("trace_id", "")},
        }
        with self._cond:
            for extension in self._extensions.values():
                extension.queue.append(dict(event))
                extension.waiting = False
            self._cond.notify_all()

    def wait_idle(self, deadline_ms: float) -> bool:
        """Wait until every extension is back in ``event/next``; False if the deadline came first."""
        with self._cond:
            return self._wait_idle(time.monotonic() + max(0.0, deadline_ms / 1000 - time.time()))

    def _wait_idle(self, until: float) -> bool:
        while not all(e.waiting for e in self._extensions.values()):
            left = until - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(timeout=left)
        return True


def _refused(status: int, error_type: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"errorMessage": message, "errorType": error_type}, {}


def main() -> int:
    global INIT_COUNT
    # Keep the protocol channel for ourselves; handler output (print, logging) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    extensions = ExtensionsApi()
    os.environ["AWS_LAMBDA_RUNTIME_API"] = extensions.address
    root = os.environ.get("LAMBDA_TASK_ROOT", "")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    handler = None
    init_error: dict[str, Any] | None = None
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        INIT_COUNT += 1
    except Exception as err:  # reported on every invoke, like Runtime.ImportModuleError
        init_error = _error(err, "Runtime.ImportModuleError")
    extensions.end_init()
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = request.get("trace_id", "")
        print(
            f"START RequestId: {request['request_id']} Version: {os.environ.get('AWS_LAMBDA_FUNCTION_VERSION')}"
        )
        started = time.perf_counter()
        deadline_ms = time.time() * 1000 + request["timeout_ms"]
        extensions.invoke(request, deadline_ms)
        if init_error is not None:
            response: dict[str, Any] = {"ok": False, "error": init_error}
        else:
            try:
                result = handler(request["event"], LambdaContext(request))  # type: ignore[misc]
                response = {"ok": True, "result": json.dumps(result, default=str)}
            except Exception as err:
                response = {"ok": False, "error": _error(err)}
                print(json.dumps({"level": "ERROR", **response["error"]}))
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"END RequestId: {request['request_id']}")
        print(f"REPORT RequestId: {request['request_id']}\tDuration: {elapsed_ms:.2f} ms")
        sys.stderr.flush()
        post_invoke = extensions.extensions > 0
        response.update(id=request["id"], pid=os.getpid(), init_count=INIT_COUNT, post_invoke=post_invoke)
        protocol.write(json.dumps(response) + "\n")
        if post_invoke:  # the extensions finish this invocation's work before the next one
            if not extensions.wait_idle(deadline_ms):
                print(f"EXTENSIONS of {request['request_id']} still busy at the deadline")
            protocol.write(json.dumps({"done": request["id"]}) + "\n")
    return 0


def _error(err: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(err),
        "errorType": error_type or type(err).__name__,
        "stackTrace": traceback.format_tb(err.__traceback__),
    }


if __name__ == "__main__":
    sys.exit(main())
