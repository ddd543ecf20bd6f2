"""Warm execution environments of the local Lambda: one worker process each, pooled per version.

A :class:`Worker` is the parent's side of one ``python -m localaws.lambdas.worker`` process: it
sends one JSON line per invocation, reads the answer, enforces the timeout (Lambda's init phase
gets :data:`INIT_ALLOWANCE_S` more on a cold start), streams the worker's stderr to the
runtime's log handling, and serves the environment's Extensions API. A :class:`WorkerPool`
keeps the workers of one function version: an idle one is reused, concurrent invocations get
more, up to the limit, idle ones are reaped as Lambda recycles environments, and one that dies
(killed, crashed, reset after a timeout) is replaced, so the pool stays at the size it reached.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localaws.lambdas.extensions_api import ExtensionsApi
from localaws.lambdas.spec import FunctionSpec

if TYPE_CHECKING:
    from localaws.lambdas.runtime import LambdaRuntime

log = logging.getLogger("localaws.lambdas")

# Extra seconds a first invocation may spend importing the handler (Lambda's init phase).
INIT_ALLOWANCE_S = 60.0


class Worker:
    """One warm execution environment (a ``localaws.lambdas.worker`` subprocess)."""

    _ids = itertools.count(1)

    def __init__(
        self, spec: FunctionSpec, runtime: LambdaRuntime, *, on_exit: Callable[[Worker], None] | None = None
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.on_exit = on_exit  # called once the process has ended, whatever ended it
        self.invocations = 0
        self.ready = False  # the worker finished its init (it imported, or failed to import, the handler)
        self.retired = False  # stopped on purpose (recycled or the pool stopped), not lost
        self.idle_since = time.monotonic()
        self.log_stream_created = False
        self.log_stream = f"{time.strftime('%Y/%m/%d')}/[{spec.version}]{uuid.uuid4().hex}"
        # The environment's Extensions API, served from here as Lambda serves it from outside the
        # runtime process: its events then never compete with the handler for the worker's GIL.
        self.extensions = ExtensionsApi(
            function_name=spec.name, function_version=spec.version, handler=spec.handler
        )
        self._initialised = threading.Event()  # the worker imported its handler, extensions polling
        self._post_invoke_deadline = float("inf")
        env = runtime.worker_environment(spec, self.log_stream)
        env["AWS_LAMBDA_RUNTIME_API"] = self.extensions.address
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localaws.lambdas.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(runtime.state_dir),
            text=True,
            bufsize=1,
        )
        self.pid = self.process.pid
        self._responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._invocation_lines: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True, name=f"worker-{self.pid}-out").start()
        threading.Thread(target=self._read_stderr, daemon=True, name=f"worker-{self.pid}-err").start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, event: Any, *, request_id: str, invoked_arn: str, cold: bool) -> dict[str, Any]:
        timeout = self.spec.timeout_s + (INIT_ALLOWANCE_S if cold else 0.0)
        init_deadline = time.monotonic() + INIT_ALLOWANCE_S
        while not self._initialised.wait(timeout=0.5):  # the INVOKE event goes out after init
            if not self.alive() or time.monotonic() > init_deadline:
                break
        self.extensions.invoke(
            {"request_id": request_id, "invoked_arn": invoked_arn},
            time.time() * 1000 + self.spec.timeout_s * 1000,
        )
        request = {
            "id": next(self._ids),
            "request_id": request_id,
            "invoked_arn": invoked_arn,
            "timeout_ms": self.spec.timeout_s * 1000,  # the context's clock starts with the handler
            "event": event,
        }
        try:
            self.process.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]  # Popen(stdin/stdout/stderr=PIPE) sets the streams
            self.process.stdin.flush()  # type: ignore[union-attr]  # Popen(stdin/stdout/stderr=PIPE) sets the streams
        except (BrokenPipeError, OSError):
            return {
                "ok": False,
                "error": {
                    "errorMessage": "Runtime exited before the invocation",
                    "errorType": "Runtime.ExitError",
                },
            }
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self._responses.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if not self.alive():
                    code = self.process.returncode
                    return {
                        "ok": False,
                        "error": {
                            "errorMessage": f"Runtime exited with error: exit status {code}",
                            "errorType": "Runtime.ExitError",
                        },
                    }
                if time.monotonic() >= deadline:
                    self.kill()
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                    return {
                        "ok": False,
                        "error": {
                            "errorMessage": f"{stamp} {request_id} Task timed out after {self.spec.timeout_s:.2f} seconds",
                            "errorType": "Sandbox.Timedout",
                        },
                    }
                continue
            if response.get("id") == request["id"]:
                self.invocations += 1
                return response

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the last invocation's post-invoke phase is over (maybe now):
        when every extension polls again, or (see :meth:`check_post_invoke`) at the timeout."""
        self._post_invoke_deadline = time.monotonic() + self.spec.timeout_s
        self.extensions.when_idle(callback)

    def check_post_invoke(self, now: float) -> None:
        """Reset the environment if an extension is still busy past the function's timeout."""
        if now < self._post_invoke_deadline:
            return
        pending = self.extensions.cancel_idle()
        if pending is not None:
            log.warning(
                "%s: an extension did not finish within the timeout; environment reset", self.spec.name
            )
            self.kill()  # as Lambda resets an environment whose invoke phase timed out
            pending()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def stop(self) -> None:
        self.retired = True
        if self.alive():
            try:
                self.process.stdin.close()  # type: ignore[union-attr]  # Popen(stdin/stdout/stderr=PIPE) sets the streams
                self.process.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def take_lines(self) -> list[str]:
        with self._lines_lock:
            lines, self._invocation_lines = self._invocation_lines, []
        return lines

    def _read_stdout(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]  # Popen(stdin/stdout/stderr=PIPE) sets the streams
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "id" in message:
                self._responses.put(message)
            elif message.get("ready"):
                self.ready = True
                self.extensions.end_init()  # init ends when every extension polls for events
                self._initialised.set()
        # The process ended: nothing is left to wait for.
        self._initialised.set()
        pending = self.extensions.cancel_idle()
        self.extensions.close()
        if pending is not None:
            pending()
        if self.on_exit is not None:
            self.on_exit(self)

    def _read_stderr(self) -> None:
        batch: list[str] = []
        for raw in self.process.stderr:  # type: ignore[union-attr]  # Popen(stdin/stdout/stderr=PIPE) sets the streams
            line = raw.rstrip("\n")
            batch.append(line)
            with self._lines_lock:
                self._invocation_lines.append(line)
            self.runtime.on_log_line(self, line)
            if line.startswith("REPORT RequestId:") or len(batch) >= 500:
                self.runtime.ship_logs(self, batch)
                batch = []
        if batch:
            self.runtime.ship_logs(self, batch)


class WorkerPool:
    """Workers of one function version: reuse an idle one, or start one up to the limit.

    ``size`` is the number of workers the pool has grown to (at most ``max_workers``). A worker
    that dies is replaced at once by a new one that initialises in the background, so the pool
    stays at its size; only recycling idle workers (:meth:`reap`) shrinks it.
    """

    def __init__(self, spec: FunctionSpec, runtime: LambdaRuntime, max_workers: int) -> None:
        self.spec = spec
        self.runtime = runtime
        self.max_workers = max_workers
        self.size = 0
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._cond = threading.Condition()
        self._stopped = False

    def acquire(self) -> tuple[Worker, bool]:
        with self._cond:
            while True:
                self.workers = [w for w in self.workers if w.alive()]
                self._idle = [w for w in self._idle if w.alive()]
                if self._idle:
                    worker = self._idle.pop()
                    return worker, worker.invocations == 0  # a replacement's first call is its cold start
                if len(self.workers) < self.max_workers:
                    worker = self._start()
                    self.size = max(self.size, len(self.workers))
                    return worker, True
                self._cond.wait(timeout=1.0)

    def _start(self) -> Worker:
        worker = Worker(self.spec, self.runtime, on_exit=self._lost)
        self.workers.append(worker)
        return worker

    def _lost(self, worker: Worker) -> None:
        """Replace a worker whose process ended without being retired, up to the pool's size."""
        with self._cond:
            self.workers = [w for w in self.workers if w is not worker and w.alive()]
            self._idle = [w for w in self._idle if w is not worker and w.alive()]
            # A worker that died before finishing its init is not replaced: its replacement
            # would most likely die the same way, again and again.
            if not (self._stopped or worker.retired) and worker.ready and len(self.workers) < self.size:
                replacement = self._start()
                replacement.idle_since = time.monotonic()
                self._idle.append(replacement)
                log.info(
                    "%s:%s: worker %s lost; started %s",
                    self.spec.name,
                    self.spec.version,
                    worker.pid,
                    replacement.pid,
                )
            self._cond.notify()

    def release(self, worker: Worker) -> None:
        with self._cond:
            worker.idle_since = time.monotonic()
            if worker.alive():
                self._idle.append(worker)
            self._cond.notify()

    def reap(self, idle_s: float) -> int:
        """Stop workers idle for longer than ``idle_s`` (Lambda recycles idle environments too),
        and reset those whose extensions overran the timeout."""
        now = time.monotonic()
        with self._cond:
            busy = [w for w in self.workers if w not in self._idle]
        for worker in busy:
            worker.check_post_invoke(now)
        with self._cond:
            stale = [w for w in self._idle if now - w.idle_since > idle_s]
            self._idle = [w for w in self._idle if w not in stale]
            self.workers = [w for w in self.workers if w not in stale]
            for worker in stale:
                worker.retired = True
            if stale:  # recycled on purpose: the pool is smaller now
                self.size = len(self.workers)
        for worker in stale:
            worker.stop()
        return len(stale)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for worker in self.workers:
                worker.stop()
            self.workers, self._idle = [], []
