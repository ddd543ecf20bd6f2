"""Run Lambda functions locally in warm worker processes, the way Lambda runs them.

moto 5.2.5 can only run Lambda code in Docker; without it ``Invoke`` returns 200 with a
Docker error. :func:`install` replaces ``moto.awslambda.models.LambdaBackend.invoke`` so an
invoke (from boto3 against the local server, from the local API gateway, or in-process via
:meth:`LambdaRuntime.invoke`) runs in a worker subprocess (``python -m sluice.local.worker``):

* one worker pool per function *version*; a worker imports the handler once (cold start)
  and then serves invocations one at a time; concurrent invocations get more workers, up to
  ``SLUICE_LOCAL_MAX_WORKERS`` (default 4) per version; a worker idle for
  ``SLUICE_LOCAL_IDLE_S`` (default 600) seconds is stopped;
* ``name:qualifier``, ARNs with qualifiers and the ``Qualifier`` parameter are honoured,
  and an alias's ``RoutingConfig`` weights pick the version per invocation (moto ignores
  both); the executed version is returned in ``X-Amz-Executed-Version``;
* the template's handler, environment, memory size and timeout apply; a timeout kills the
  worker and returns ``Task timed out``; errors come back as Lambda returns them
  (``X-Amz-Function-Error: Unhandled`` and an ``errorMessage``/``errorType`` payload);
* worker output streams to the function's CloudWatch log group (``LoggingConfig`` or
  ``/aws/lambda/<name>``), and EMF lines (JSON with an ``_aws`` key) become CloudWatch
  metrics, as Lambda's agent does. ``SLUICE_LOCAL_ECHO_LOGS=1`` also prints them.

Code: zip and container-image functions both run from the ``lambdas/`` source root that
their asset was built from (``LAMBDA_TASK_ROOT``); image functions take their handler from
``ImageConfig.Command`` or the Dockerfile's ``CMD``. Layers are not mounted: workers use the
packages installed next to Sluice (the Powertools and scoring layers hold the same ones).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import io
import itertools
import json
import logging
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.errors import NotFound
from sluice.local.extensions_api import ExtensionsApi

if TYPE_CHECKING:
    from sluice.local.env import LocalAws

log = logging.getLogger("sluice.local.lambdas")

LAMBDAS_ROOT = Path(__file__).resolve().parents[2]  # the lambdas/ source root
MOTO_INVOKE = "moto.awslambda.models.LambdaBackend.invoke"
_EXPECTED_INVOKE_PARAMS = ["self", "function_name", "qualifier", "body", "headers", "response_headers"]
# Extra seconds a first invocation may spend importing the handler (Lambda's init phase).
INIT_ALLOWANCE_S = 60.0

_ACTIVE: LambdaRuntime | None = None
_ORIGINAL_INVOKE: Callable[..., Any] | None = None


@dataclass(frozen=True)
class FunctionSpec:
    """What a worker needs to run one function version."""

    name: str
    version: str
    arn: str
    handler: str
    environment: dict[str, str]
    memory_mb: int
    timeout_s: float
    log_group: str
    code_root: str
    package_type: str = "Zip"


@dataclass
class InvokeResult:
    """The outcome of one invocation, as the Lambda API reports it."""

    payload: bytes
    function_error: str | None
    executed_version: str
    request_id: str
    logs: str = ""
    pid: int = 0
    init_count: int = 0

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


class Worker:
    """One warm execution environment (a ``sluice.local.worker`` subprocess)."""

    _ids = itertools.count(1)

    def __init__(self, spec: FunctionSpec, runtime: LambdaRuntime) -> None:
        self.spec = spec
        self.runtime = runtime
        self.invocations = 0
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
            [sys.executable, "-m", "sluice.local.worker"],
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
            self.process.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
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
        if self.alive():
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def take_lines(self) -> list[str]:
        with self._lines_lock:
            lines, self._invocation_lines = self._invocation_lines, []
        return lines

    def _read_stdout(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "id" in message:
                self._responses.put(message)
            elif message.get("ready"):
                self.extensions.end_init()  # init ends when every extension polls for events
                self._initialised.set()
        # The process ended: nothing is left to wait for.
        self._initialised.set()
        pending = self.extensions.cancel_idle()
        self.extensions.close()
        if pending is not None:
            pending()

    def _read_stderr(self) -> None:
        batch: list[str] = []
        for raw in self.process.stderr:  # type: ignore[union-attr]
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
    """Workers of one function version: reuse an idle one, or start one up to the limit."""

    def __init__(self, spec: FunctionSpec, runtime: LambdaRuntime, max_workers: int) -> None:
        self.spec = spec
        self.runtime = runtime
        self.max_workers = max_workers
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._cond = threading.Condition()

    def acquire(self) -> tuple[Worker, bool]:
        with self._cond:
            while True:
                self.workers = [w for w in self.workers if w.alive()]
                self._idle = [w for w in self._idle if w.alive()]
                if self._idle:
                    return self._idle.pop(), False
                if len(self.workers) < self.max_workers:
                    worker = Worker(self.spec, self.runtime)
                    self.workers.append(worker)
                    return worker, True
                self._cond.wait(timeout=1.0)

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
            worker.stop()
        return len(stale)

    def stop(self) -> None:
        with self._cond:
            for worker in self.workers:
                worker.stop()
            self.workers, self._idle = [], []


@dataclass
class LambdaRuntime:
    """Warm workers for every function version of a local stage."""

    local: LocalAws
    max_workers: int = field(default_factory=lambda: int(os.environ.get("SLUICE_LOCAL_MAX_WORKERS", "4")))
    echo_logs: bool = field(default_factory=lambda: os.environ.get("SLUICE_LOCAL_ECHO_LOGS", "") == "1")
    _pools: dict[tuple[str, str], WorkerPool] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _async: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="lambda-event")
    )
    _template_props: dict[str, dict[str, Any]] | None = None
    idle_s: float = field(default_factory=lambda: float(os.environ.get("SLUICE_LOCAL_IDLE_S", "600")))
    _stopping: threading.Event = field(default_factory=threading.Event)
    telemetry: Telemetry = field(init=False)  # logs and EMF metrics on their way to CloudWatch

    def __post_init__(self) -> None:
        self.telemetry = Telemetry(self.local)
        threading.Thread(target=self._reaper, daemon=True, name="lambda-reaper").start()

    def _reaper(self) -> None:
        while not self._stopping.wait(min(30.0, max(1.0, self.idle_s / 4))):
            with self._lock:
                pools = list(self._pools.values())
            for pool in pools:
                pool.reap(self.idle_s)

    @property
    def state_dir(self) -> Path:
        return self.local.state_dir

    # ------------------------------------------------------------------ invoke

    def invoke(
        self,
        function_name: str,
        qualifier: str | None,
        body: str | bytes | None,
        *,
        invocation_type: str = "RequestResponse",
    ) -> InvokeResult:
        """Invoke ``function_name`` (name, ``name:qualifier`` or ARN) with a JSON ``body``.

        Raises
        ------
        NotFound
            If the function, version or alias does not exist.
        """
        fn, invoked_arn = self.resolve(function_name, qualifier)
        spec = self.spec_for(fn)
        event = json.loads(body) if body else {}
        request_id = str(uuid.uuid4())
        if invocation_type == "Event":
            self._async.submit(self._run, spec, event, request_id, invoked_arn)
            return InvokeResult(b"", None, spec.version, request_id)
        if invocation_type == "DryRun":
            return InvokeResult(b"", None, spec.version, request_id)
        return self._run(spec, event, request_id, invoked_arn)

    def _run(self, spec: FunctionSpec, event: Any, request_id: str, invoked_arn: str) -> InvokeResult:
        pool = self._pool(spec)
        worker, cold = pool.acquire()
        response: dict[str, Any] = {}
        try:
            response = worker.call(event, request_id=request_id, invoked_arn=invoked_arn, cold=cold)
        finally:
            if worker.extensions.extensions and worker.alive():
                # Its extensions are still at work: like Lambda, other invocations go to other
                # environments until they are done.
                worker.when_done(lambda: pool.release(worker))
            else:
                pool.release(worker)
        logs = "\n".join(worker.take_lines())
        if response.get("ok"):
            payload = response["result"].encode()
            error = None
        else:
            err = dict(response["error"])
            payload = json.dumps(err).encode()
            error = "Unhandled"
        return InvokeResult(
            payload,
            error,
            spec.version,
            request_id,
            logs,
            response.get("pid", worker.pid),
            response.get("init_count", 0),
        )

    def resolve(self, function_name: str, qualifier: str | None) -> tuple[Any, str]:
        """The moto function object of the version to run, and the ARN that was invoked."""
        backend = self.backend()
        name, in_name = _split_name(function_name)
        qualifier = qualifier or in_name
        try:
            base = backend.get_function(name)
        except Exception as err:
            raise NotFound(f"function {name} not found locally") from err
        base_arn = (
            base.function_arn.rsplit(":", 1)[0] if base.function_arn.count(":") > 6 else base.function_arn
        )
        if qualifier in (None, "", "$LATEST"):
            return base, base_arn
        invoked_arn = f"{base_arn}:{qualifier}"
        if qualifier.isdigit():
            version = qualifier
        else:
            try:
                alias = backend.get_alias(qualifier, base.function_name)
            except Exception as err:
                raise NotFound(f"alias {qualifier} of function {name} not found locally") from err
            version = pick_version(alias.function_version, alias.routing_config)
        try:
            return backend.get_function(base.function_name, version), invoked_arn
        except Exception as err:
            raise NotFound(f"version {version} of function {name} not found locally") from err

    def backend(self) -> Any:
        from moto.awslambda.models import lambda_backends

        return lambda_backends[self.local.account][self.local.region]

    def _pool(self, spec: FunctionSpec) -> WorkerPool:
        key = (spec.name, spec.version)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None or pool.spec != spec:
                if pool is not None:  # configuration changed: new execution environments
                    pool.stop()
                pool = self._pools[key] = WorkerPool(spec, self, self.max_workers)
            return pool

    def workers(self, function_name: str, version: str = "$LATEST") -> list[Worker]:
        """The live workers of one function version (tests, status)."""
        name, _ = _split_name(function_name)
        with self._lock:
            for (fname, fversion), pool in self._pools.items():
                if fversion == version and (fname == name or name.endswith(f":function:{fname}")):
                    return [w for w in pool.workers if w.alive()]
        return []

    def stop(self) -> None:
        global _ACTIVE
        self._stopping.set()
        self._async.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for pool in self._pools.values():
                pool.stop()
            self._pools.clear()
        self.telemetry.stop()
        if _ACTIVE is self:
            _ACTIVE = None

    # ------------------------------------------------------------------ specs

    def spec_for(self, fn: Any) -> FunctionSpec:
        props = self.template_properties().get(fn.function_name, {})
        handler = fn.handler or ""
        code_root = str(LAMBDAS_ROOT)
        # moto's CloudFormation path may drop PackageType: the template says what the function is.
        package_type = props.get("PackageType") or getattr(fn, "package_type", "Zip") or "Zip"
        if package_type == "Image":
            handler, code_root = self._image_entry(fn, props)
        elif not props and getattr(fn, "code_bytes", b""):
            # Created through the API rather than a template: run the uploaded zip.
            code_root = str(self._extract(fn.code_bytes))
        log_group = _log_group(props, self.local) or f"/aws/lambda/{fn.function_name}"
        return FunctionSpec(
            name=fn.function_name,
            version=str(fn.version),
            arn=fn.function_arn,
            handler=handler,
            environment={k: str(v) for k, v in (fn.environment_vars or {}).items()},
            memory_mb=int(fn.memory_size or 128),
            timeout_s=float(fn.timeout or 3),
            log_group=log_group,
            code_root=code_root,
            package_type=package_type,
        )

    def template_properties(self) -> dict[str, dict[str, Any]]:
        """Template properties of each deployed function, by physical name."""
        if self._template_props is None:
            found: dict[str, dict[str, Any]] = {}
            for stack, deployed in zip(self.local.stacks, self.local.deployed, strict=False):
                template = stack.template["Resources"]
                for resource in deployed.resources:
                    if resource.resource_type == "AWS::Lambda::Function":
                        found[resource.physical_id] = template[resource.logical_id].get("Properties", {})
            self._template_props = found
        return self._template_props

    def _extract(self, code: bytes) -> Path:
        target = self.state_dir / "code" / hashlib.sha256(code).hexdigest()[:16]
        if not target.is_dir():
            staging = target.with_name(target.name + f".{uuid.uuid4().hex[:6]}")
            with zipfile.ZipFile(io.BytesIO(code)) as archive:
                archive.extractall(staging)
            try:
                staging.rename(target)
            except OSError:  # another invocation extracted it first
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def _image_entry(self, fn: Any, props: dict[str, Any]) -> tuple[str, str]:
        command = list(getattr(getattr(fn, "image_config", None), "command", None) or [])
        command = command or list((props.get("ImageConfig") or {}).get("Command") or [])
        directory = _image_asset_directory(self.local, (props.get("Code") or {}).get("ImageUri", ""))
        if not command and directory is not None:
            command = _dockerfile_cmd(directory / "Dockerfile")
        if not command:
            raise NotFound(
                f"function {fn.function_name}: no handler in ImageConfig.Command or the Dockerfile CMD"
            )
        # The image COPYs lambdas/; run the source root it was built from.
        return command[0], str(LAMBDAS_ROOT)

    def worker_environment(self, spec: FunctionSpec, log_stream: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")
        }
        env.update(spec.environment)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.local.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": self.local.region,
                "AWS_DEFAULT_REGION": self.local.region,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python_local",
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
                "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
                "LAMBDA_TASK_ROOT": spec.code_root,
                "PYTHONPATH": str(LAMBDAS_ROOT),  # sluice.local.worker itself
                "_HANDLER": spec.handler,
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "SLUICE_LOCAL": "1",
            }
        )
        return env

    # ------------------------------------------------------------------ logs and metrics

    def on_log_line(self, worker: Worker, line: str) -> None:
        if self.echo_logs:
            print(f"[{worker.spec.name}:{worker.spec.version}] {line}", file=sys.stderr, flush=True)
        if line.startswith("{") and '"_aws"' in line:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return
            try:
                self.telemetry.add_metrics(emf_to_metric_data(record))
            except Exception:  # a malformed EMF line must not break the function
                log.exception("EMF line could not be turned into metrics")

    def ship_logs(self, worker: Worker, lines: list[str]) -> None:
        if lines and self.local.endpoint_url:
            self.telemetry.add_logs(worker, lines)


class Telemetry:
    """Ships the workers' log lines and EMF metrics to the local CloudWatch, in batches.

    Lambda delivers both asynchronously, seconds after the invocation. Shipping each
    invocation's lines with API calls of its own cost about 4 ms of this process's CPU per
    request (the moto server shares its GIL), which showed as gateway latency; one thread now
    sends whatever accumulated every ``interval_s``, a few calls per flush whatever the load.
    """

    MAX_LOG_EVENTS = 5_000  # PutLogEvents allows 10,000 events and 1 MB per call
    MAX_METRIC_DATA = 500  # PutMetricData allows 1,000 datums per call

    def __init__(self, local: LocalAws, *, interval_s: float = 0.1) -> None:
        self.local = local
        self.interval_s = interval_s
        self._logs: dict[Worker, list[dict[str, Any]]] = {}
        self._metrics: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lambda-telemetry")
        self._thread.start()

    def add_logs(self, worker: Worker, lines: list[str]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._logs.setdefault(worker, []).extend({"timestamp": now, "message": m or " "} for m in lines)

    def add_metrics(self, pairs: list[tuple[str, list[dict[str, Any]]]]) -> None:
        with self._lock:
            for namespace, data in pairs:
                self._metrics.setdefault(namespace, []).extend(data)

    def flush(self) -> None:
        """Send everything accumulated so far (also called on stop)."""
        with self._lock:
            logs, self._logs = self._logs, {}
            metrics, self._metrics = self._metrics, {}
        for worker, events in logs.items():
            try:
                self._put_logs(worker, events)
            except Exception:  # logs are best effort; the invocation result is what matters
                log.debug("shipping logs failed", exc_info=True)
        for namespace, data in metrics.items():
            try:
                cloudwatch = self.local.client("cloudwatch")
                for i in range(0, len(data), self.MAX_METRIC_DATA):
                    cloudwatch.put_metric_data(
                        Namespace=namespace, MetricData=data[i : i + self.MAX_METRIC_DATA]
                    )
            except Exception:
                log.exception("EMF metrics could not be published")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.flush()

    def _put_logs(self, worker: Worker, events: list[dict[str, Any]]) -> None:
        logs = self.local.client("logs")
        group, stream = worker.spec.log_group, worker.log_stream
        if not worker.log_stream_created:
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_group(logGroupName=group)
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
            worker.log_stream_created = True
        for i in range(0, len(events), self.MAX_LOG_EVENTS):
            logs.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=events[i : i + self.MAX_LOG_EVENTS]
            )


# Lambda draws each alias invocation's version at random. ``SLUICE_LOCAL_ROUTING_SEED`` makes
# the local draws repeatable (a traffic experiment, a test); :func:`seed_routing` reseeds.
_routing = random.Random()


def seed_routing(seed: str | int | None = None) -> None:
    """Reseed the alias router: with ``seed``, else ``SLUICE_LOCAL_ROUTING_SEED``, else at random."""
    _routing.seed(seed if seed is not None else os.environ.get("SLUICE_LOCAL_ROUTING_SEED"))


def pick_version(primary: str, routing_config: Any) -> str:
    """The version an alias invocation runs: ``RoutingConfig`` weights, the rest to ``primary``."""
    weights = (routing_config or {}).get("AdditionalVersionWeights") or {}
    if isinstance(weights, list):  # CloudFormation shape
        weights = {str(w["FunctionVersion"]): float(w["FunctionWeight"]) for w in weights}
    draw = _routing.random()
    cumulative = 0.0
    for version, weight in weights.items():
        cumulative += float(weight)
        if draw < cumulative:
            return str(version)
    return str(primary)


def emf_to_metric_data(record: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(namespace, MetricData)`` pairs for one CloudWatch Embedded Metric Format record."""
    meta = record["_aws"]
    timestamp = meta.get("Timestamp")
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in meta.get("CloudWatchMetrics", []):
        dimension_sets = directive.get("Dimensions") or [[]]
        data: list[dict[str, Any]] = []
        for metric in directive.get("Metrics", []):
            value = record.get(metric["Name"])
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            for dims in dimension_sets:
                datum: dict[str, Any] = {
                    "MetricName": metric["Name"],
                    "Dimensions": [{"Name": d, "Value": str(record[d])} for d in dims if d in record],
                    "Values": [float(v) for v in values],
                    "Unit": metric.get("Unit", "None"),
                }
                if timestamp:
                    datum["Timestamp"] = timestamp / 1000.0
                data.append(datum)
        if data:
            out.append((directive["Namespace"], data))
    return out


def _split_name(function_name: str) -> tuple[str, str | None]:
    if function_name.startswith("arn:"):
        parts = function_name.split(":")
        # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
        return ":".join(parts[:7]), (parts[7] if len(parts) > 7 else None)
    if ":" in function_name:
        name, _, qualifier = function_name.partition(":")
        return name, qualifier
    return function_name, None


def _log_group(props: dict[str, Any], local: LocalAws) -> str | None:
    group = (props.get("LoggingConfig") or {}).get("LogGroup")
    if isinstance(group, str):
        return group
    if isinstance(group, dict) and "Ref" in group:
        for resource in local.resources:
            if resource.logical_id == group["Ref"]:
                return resource.physical_id
    return None


def _image_asset_directory(local: LocalAws, image_uri: Any) -> Path | None:
    if isinstance(image_uri, dict) and "Fn::Sub" in image_uri:  # the template's unresolved form
        image_uri = (
            image_uri["Fn::Sub"][0] if isinstance(image_uri["Fn::Sub"], list) else image_uri["Fn::Sub"]
        )
    tag = image_uri.rsplit(":", 1)[-1] if isinstance(image_uri, str) else ""
    for stack in local.stacks:
        if stack.assets_path is None:
            continue
        manifest = json.loads(stack.assets_path.read_text())
        for asset in manifest.get("dockerImages", {}).values():
            if any(d.get("imageTag") == tag for d in asset.get("destinations", {}).values()) or not tag:
                return (stack.assets_path.parent / asset["source"].get("directory", ".")).resolve()
    return None


def _dockerfile_cmd(dockerfile: Path) -> list[str]:
    if not dockerfile.is_file():
        return []
    command: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*CMD\s+(.*)$", line)
        if match:
            text = match.group(1).strip()
            command = json.loads(text) if text.startswith("[") else text.split()
    return command


# --------------------------------------------------------------------------- moto patch


def install(local: LocalAws) -> LambdaRuntime:
    """Route moto's Lambda invoke to a new :class:`LambdaRuntime` for ``local``.

    Raises
    ------
    RuntimeError
        If ``moto.awslambda.models.LambdaBackend.invoke`` moved or changed its signature.
    """
    global _ACTIVE, _ORIGINAL_INVOKE
    backend_class = moto_invoke_target()
    current = backend_class.invoke
    if not getattr(current, "__sluice__", False):
        _ORIGINAL_INVOKE = current
        backend_class.invoke = _patched_invoke
    _ACTIVE = LambdaRuntime(local)
    seed_routing()  # each local stage starts its traffic draws afresh (repeatable when seeded)
    return _ACTIVE


def moto_invoke_target() -> type:
    """moto's Lambda backend class, checked to have the ``invoke`` this module replaces."""
    try:
        from moto.awslambda.models import LambdaBackend
    except ImportError as err:
        raise RuntimeError(
            f"{MOTO_INVOKE} cannot be imported ({err}); sluice.local.lambdas must be updated"
        ) from err
    invoke = getattr(LambdaBackend, "invoke", None)
    if not callable(invoke):
        raise RuntimeError(f"{MOTO_INVOKE} is gone (moto upgraded?); sluice.local.lambdas must be updated")
    params = list(inspect.signature(invoke).parameters)
    if params != _EXPECTED_INVOKE_PARAMS:
        raise RuntimeError(
            f"{MOTO_INVOKE} changed its signature to {params} (moto upgraded?); sluice.local.lambdas must be updated"
        )
    return LambdaBackend


def _patched_invoke(
    self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
) -> bytes | None:
    runtime = _ACTIVE
    if runtime is None:  # not under LocalAws (e.g. a plain mock_aws test): moto's behaviour
        return _ORIGINAL_INVOKE(self, function_name, qualifier, body, headers, response_headers)  # type: ignore[misc]
    invocation_type = (
        headers.get("X-Amz-Invocation-Type") or headers.get("x-amz-invocation-type") or "RequestResponse"
    )
    if isinstance(body, bytes):
        body = body.decode()
    try:
        result = runtime.invoke(function_name, qualifier, body, invocation_type=invocation_type)
    except ValueError as err:  # the payload is not JSON: Lambda answers 400
        from moto.awslambda.exceptions import LambdaClientError

        raise LambdaClientError(
            "InvalidRequestContentException", f"Could not parse request body into json: {err}"
        ) from err
    except NotFound:
        name, in_name = _split_name(function_name)
        self.get_function(name, qualifier or in_name)  # raises moto's own ResourceNotFoundException
        return None
    response_headers["x-amz-executed-version"] = result.executed_version
    if result.function_error:
        response_headers["x-amz-function-error"] = result.function_error
    log_type = headers.get("X-Amz-Log-Type") or headers.get("x-amz-log-type")
    if log_type == "Tail":
        response_headers["x-amz-log-result"] = base64.b64encode(result.logs[-4096:].encode()).decode()
    response_headers["Content-Length"] = str(len(result.payload))
    return result.payload


_patched_invoke.__sluice__ = True  # type: ignore[attr-defined]
