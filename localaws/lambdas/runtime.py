"""Run Lambda functions locally in warm worker processes, the way Lambda runs them.

moto 5.2.5 can only run Lambda code in Docker; without it ``Invoke`` returns 200 with a
Docker error. :func:`install` replaces ``moto.awslambda.models.LambdaBackend.invoke`` (:data:`INVOKE`) so an
invoke (from boto3 against the local server, from the local API gateway, or in-process via
:meth:`LambdaRuntime.invoke`) runs in a worker subprocess (``python -m localaws.lambdas.worker``):

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

Code: see :mod:`localaws.lambdas.spec`. Layers are not mounted: workers use the packages
installed next to Sluice (the Powertools and scoring layers hold the same ones). The worker
processes are :mod:`localaws.lambdas.environment`; their logs and metrics go through
:mod:`localaws.lambdas.telemetry`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localaws.lambdas.environment import Worker, WorkerPool
from localaws.lambdas.routing import pick_version, seed_routing, split_name
from localaws.lambdas.spec import FunctionSpec, FunctionSpecs, InvokeResult
from localaws.lambdas.telemetry import Telemetry, emf_to_metric_data
from localaws.patches import Patch, moto_symbol
from sluice.errors import NotFound

if TYPE_CHECKING:
    from localaws.env import LocalAws

log = logging.getLogger("localaws.lambdas")

_ACTIVE: LambdaRuntime | None = None


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
    idle_s: float = field(default_factory=lambda: float(os.environ.get("SLUICE_LOCAL_IDLE_S", "600")))
    _stopping: threading.Event = field(default_factory=threading.Event)
    telemetry: Telemetry = field(init=False)  # logs and EMF metrics on their way to CloudWatch
    specs: FunctionSpecs = field(init=False)

    def __post_init__(self) -> None:
        self.telemetry = Telemetry(self.local)
        self.specs = FunctionSpecs(self.local)
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
        name, in_name = split_name(function_name)
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
        backends = moto_symbol("moto.awslambda.models.lambda_backends", owner=__name__)
        return backends[self.local.account][self.local.region]

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
        name, _ = split_name(function_name)
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
        return self.specs.spec_for(fn)

    def template_properties(self) -> dict[str, dict[str, Any]]:
        """Template properties of each deployed function, by physical name."""
        return self.specs.template_properties()

    def worker_environment(self, spec: FunctionSpec, log_stream: str) -> dict[str, str]:
        return self.specs.worker_environment(spec, log_stream)

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


# --------------------------------------------------------------------------- moto patch


def _routed_invoke(original: Any) -> Any:
    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes | None:
        runtime = _ACTIVE
        if runtime is None:  # not under LocalAws (e.g. a plain mock_aws test): moto's behaviour
            return original(self, function_name, qualifier, body, headers, response_headers)
        invocation_type = (
            headers.get("X-Amz-Invocation-Type") or headers.get("x-amz-invocation-type") or "RequestResponse"
        )
        if isinstance(body, bytes):
            body = body.decode()
        try:
            result = runtime.invoke(function_name, qualifier, body, invocation_type=invocation_type)
        except ValueError as err:  # the payload is not JSON: Lambda answers 400
            raise moto_symbol("moto.awslambda.exceptions.LambdaClientError", owner=__name__)(
                "InvalidRequestContentException", f"Could not parse request body into json: {err}"
            ) from err
        except NotFound:
            name, in_name = split_name(function_name)
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

    return invoke


INVOKE = Patch(
    target="moto.awslambda.models.LambdaBackend.invoke",
    gap="moto runs Lambda code only in Docker; without it Invoke answers 200 with a Docker error",
    replace=_routed_invoke,
    owner=__name__,
    name="lambda_workers",
    params=("self", "function_name", "qualifier", "body", "headers", "response_headers"),
    requires=("moto.awslambda.exceptions.LambdaClientError", "moto.awslambda.models.lambda_backends"),
)


def install(local: LocalAws) -> LambdaRuntime:
    """Route moto's Lambda invoke to a new :class:`LambdaRuntime` for ``local``.

    Raises
    ------
    RuntimeError
        If ``moto.awslambda.models.LambdaBackend.invoke`` moved or changed its signature.
    """
    global _ACTIVE
    INVOKE.apply()
    _ACTIVE = LambdaRuntime(local)
    seed_routing()  # each local stage starts its traffic draws afresh (repeatable when seeded)
    return _ACTIVE
