"""What the emulator's background services share: a periodic daemon thread and a client cache.

The alarm evaluator and the schedule runner each call their ``tick()`` every ``interval_s``
seconds; the router, the evaluator and ``LocalAws`` keep one boto3 client per service for the
local server.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from botocore.config import Config

logger = logging.getLogger(__name__)


class Periodic:
    """Calls :meth:`tick` every ``interval_s`` seconds on a daemon thread between ``start`` and ``stop``.

    A failing tick is logged and counted in ``errors``; the next one runs as usual, so one broken
    alarm or schedule never stops the others.
    """

    thread_name = "localaws-periodic"

    def __init__(self, *, interval_s: float) -> None:
        self.interval_s = interval_s
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> Any:
        raise NotImplementedError

    def start(self) -> Any:
        """Tick on a daemon thread until :meth:`stop`; returns ``self``."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep ticking: the next tick may well succeed
                self.errors += 1
                logger.exception("%s: tick failed", self.thread_name)
            self._stop.wait(self.interval_s)


class Clients:
    """One boto3 client per service for the local server, created on first use (thread-safe).

    Credentials come from the environment as for any client of the stage, with moto's
    ``testing`` pair as the fallback.
    """

    def __init__(self, *, endpoint_url: str, region: str, config: Config | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.config = config
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str, *, config: Config | None = None) -> Any:
        import boto3

        with self._lock:
            found = self._clients.get(service)
            if found is None:
                found = boto3.client(
                    service,
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                    config=config or self.config,
                )
                self._clients[service] = found
            return found
