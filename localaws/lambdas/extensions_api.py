"""The Lambda Extensions API of one local execution environment, for internal extensions.

Each local worker (:mod:`localaws.lambdas.environment`) gets one, served from the parent process on
``127.0.0.1`` (Lambda too serves it from outside the runtime process) and passed to the worker as
``AWS_LAMBDA_RUNTIME_API``. Lambda's rules: an extension registers during init (the handler's
import) and only for ``INVOKE`` events (internal extensions get no ``SHUTDOWN``); each
invocation's ``INVOKE`` event goes to every extension as the invocation starts; the response goes
out when the handler returns, and the environment takes its next invocation only once every
extension has asked for its next event again (:meth:`ExtensionsApi.when_idle`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("localaws.lambdas.extensions")


@dataclass
class _Extension:
    name: str
    events: list[str]
    queue: list[dict[str, Any]] = field(default_factory=list)
    waiting: bool = False


class ExtensionsApi:
    """The Extensions API of one execution environment, on ``127.0.0.1``.

    Parameters
    ----------
    function_name, function_version, handler
        What registration answers with.
    """

    def __init__(
        self, *, function_name: str = "", function_version: str = "$LATEST", handler: str = ""
    ) -> None:
        self._cond = threading.Condition()
        self._extensions: dict[str, _Extension] = {}
        self._init_done = False
        self._identity = {
            "functionName": function_name,
            "functionVersion": function_version,
            "handler": handler,
        }
        self._on_idle: Callable[[], None] | None = None
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
                    log.warning("extension reported %s: %r", self.path, raw[:500])
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
        return 200, dict(self._identity), {"Lambda-Extension-Identifier": identifier}

    def next(self, identifier: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._cond:
            extension = self._extensions.get(identifier)
            if extension is None:
                return _refused(403, "Extension.UnknownExtension", "unknown extension id")
            extension.waiting = True
            self._cond.notify_all()
            callback = self._take_idle_callback()
        if callback is not None:  # the environment is free again (outside the lock)
            callback()
        with self._cond:
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

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every extension is back in ``event/next`` (now, if they are)."""
        with self._cond:
            if self._all_waiting():
                run_now = True
            else:
                self._on_idle, run_now = callback, False
        if run_now:
            callback()

    def cancel_idle(self) -> Callable[[], None] | None:
        """Drop a pending :meth:`when_idle` callback and return it (the environment went away)."""
        with self._cond:
            callback, self._on_idle = self._on_idle, None
        return callback

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _all_waiting(self) -> bool:
        return all(e.waiting for e in self._extensions.values())

    def _take_idle_callback(self) -> Callable[[], None] | None:
        # With the condition held: the pending callback, once every extension is waiting.
        if self._on_idle is not None and self._all_waiting():
            callback, self._on_idle = self._on_idle, None
            return callback
        return None

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
        while not self._all_waiting():
            left = until - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(timeout=left)
        return True


def _refused(status: int, error_type: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"errorMessage": message, "errorType": error_type}, {}
