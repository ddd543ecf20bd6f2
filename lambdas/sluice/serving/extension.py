"""Work after the response: an internal Lambda extension, a thread in the function's process.

Lambda returns a function's response to the caller as soon as the runtime posts it, and
freezes the execution environment only when the runtime *and every registered extension* have
asked for their next event. A thread registered as an internal extension (through the
Extensions API at ``AWS_LAMBDA_RUNTIME_API``) therefore holds the environment for as long as it
still has work for the invocation, and that work is off the caller's path. The endpoint uses
it to send data capture to Firehose after the response instead of before it.

The protocol, per invocation: the extension's ``GET /2020-01-01/extension/event/next``
returns the ``INVOKE`` event; the handler queues work with :meth:`AfterResponse.defer` and
calls :meth:`AfterResponse.done` as it returns; the thread runs the queued work, then asks for
the next event. Nothing is held over to a later invocation, so a frozen or recycled environment
loses nothing (internal extensions get no ``SHUTDOWN`` event, so they must not buffer across
invocations).

Outside a Lambda runtime (unit tests, the CLI) :meth:`AfterResponse.start` returns ``None``
and callers do the work inline. The embedded local AWS serves the same API to each worker
(:mod:`localaws.lambdas.extensions_api`).

This module uses the standard library only.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

API_VERSION = "2020-01-01"
# Longest wait for the handler's done() when the INVOKE event carries no deadline.
DEFAULT_WAIT_S = 900.0


class ExtensionError(RuntimeError):
    """The Extensions API refused a call (registration after init, an unknown extension id...)."""


class AfterResponse:
    """Runs work queued during an invocation after that invocation's response has gone out.

    Parameters
    ----------
    runtime_api
        ``host:port`` of the Extensions API (``AWS_LAMBDA_RUNTIME_API``).
    name
        The extension's name (``Lambda-Extension-Name``).
    """

    def __init__(self, runtime_api: str, name: str) -> None:
        self.runtime_api = runtime_api
        self.name = name
        self.extension_id = ""
        self.invocations = 0
        self.failures = 0
        self._tasks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._alive = False
        self._connection: http.client.HTTPConnection | None = None

    @classmethod
    def start(cls, name: str) -> AfterResponse | None:
        """Register and start the extension thread; ``None`` outside a Lambda runtime.

        Call it during init (at module import): the Extensions API refuses registrations once
        the runtime has asked for its first event. A refused registration is logged and also
        gives ``None``, so the caller falls back to inline work.
        """
        runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
        if not runtime_api:
            return None
        extension = cls(runtime_api, name)
        try:
            extension.register()
        except (ExtensionError, OSError) as err:
            logger.warning("extension %s not registered (%s); its work runs inline", name, err)
            return None
        extension._alive = True
        threading.Thread(target=extension._loop, name=f"extension-{name}", daemon=True).start()
        return extension

    @property
    def alive(self) -> bool:
        return self._alive

    def register(self) -> str:
        """``POST /extension/register`` for ``INVOKE`` events; returns the extension id."""
        status, headers, _ = self._call(
            "POST",
            "register",
            body=json.dumps({"events": ["INVOKE"]}).encode(),
            headers={"Lambda-Extension-Name": self.name},
        )
        if status != 200:
            raise ExtensionError(f"register answered {status}")
        self.extension_id = headers.get("Lambda-Extension-Identifier", "")
        return self.extension_id

    def defer(self, task: Callable[[], Any]) -> None:
        """Run ``task`` after this invocation's response (inline if the thread is gone)."""
        with self._lock:
            if self._alive:
                self._tasks.append(task)
                return
        self._run(task)

    def done(self) -> None:
        """The handler has finished: the thread may run this invocation's tasks now."""
        self._done.set()

    # -- the extension thread -----------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                event = self._next_event_retrying()
                if event.get("eventType") != "INVOKE":
                    continue
                deadline_ms = event.get("deadlineMs")
                wait_s = max(0.0, float(deadline_ms) / 1000 - time.time()) if deadline_ms else DEFAULT_WAIT_S
                if not self._done.wait(timeout=wait_s):
                    logger.warning(
                        "invocation %s did not call done() before its deadline", event.get("requestId")
                    )
                self._done.clear()
                with self._lock:
                    tasks, self._tasks = self._tasks, []
                for task in tasks:
                    self._run(task)
                self.invocations += 1
        except Exception:  # the API went away: later work runs inline
            logger.exception("extension %s stopped", self.name)
        finally:
            with self._lock:
                self._alive = False
                tasks, self._tasks = self._tasks, []
            for task in tasks:
                self._run(task)

    def _next_event_retrying(self, attempts: int = 50) -> dict[str, Any]:
        # A registered extension that stops asking for events holds every later invocation until
        # it times out: a dropped connection is retried (reconnecting) for about 5 s first.
        for _ in range(attempts - 1):
            try:
                return self.next_event()
            except (OSError, http.client.HTTPException) as err:
                logger.warning("extension %s: event/next failed (%s); retrying", self.name, err)
                time.sleep(0.1)
        return self.next_event()

    def next_event(self) -> dict[str, Any]:
        """``GET /extension/event/next``: blocks until Lambda sends the next event."""
        status, _, body = self._call(
            "GET", "event/next", headers={"Lambda-Extension-Identifier": self.extension_id}, timeout=None
        )
        if status != 200:
            raise ExtensionError(f"event/next answered {status}: {body[:200]!r}")
        event: dict[str, Any] = json.loads(body or b"{}")
        return event

    def _run(self, task: Callable[[], Any]) -> None:
        try:
            task()
        except Exception:  # deferred work must never take the extension (or the function) down
            self.failures += 1
            logger.exception("deferred task failed")

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        # One keep-alive connection: the thread makes one call per invocation.
        if self._connection is None:
            host, _, port = self.runtime_api.partition(":")
            connection = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connection = connection
        self._connection.timeout = timeout
        if self._connection.sock is not None:
            self._connection.sock.settimeout(timeout)
        try:
            self._connection.request(
                method, f"/{API_VERSION}/extension/{path}", body=body, headers=headers or {}
            )
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self._connection = None
            raise
        return response.status, dict(response.headers.items()), data
