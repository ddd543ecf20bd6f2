"""A warm Lambda execution environment: ``python -m localaws.lambdas.worker``.

The parent (:mod:`localaws.lambdas.environment`) starts one worker per function version and sends
it one JSON line per invocation on stdin; the worker answers with one JSON line on the
original stdout. Everything the handler prints or logs goes to stderr, which the parent
streams to CloudWatch Logs (and turns EMF lines into metrics). The handler module is
imported once (the cold start); later invocations reuse it, its module-level clients and
caches, like a warm Lambda.

Internal extensions (threads of the handler's process, see :mod:`sluice.serving.extension`) talk to
the Extensions API at ``AWS_LAMBDA_RUNTIME_API``, which the parent serves, outside this process
as Lambda does (:mod:`localaws.lambdas.extensions_api`).

Environment: ``_HANDLER`` (``module.function``), ``LAMBDA_TASK_ROOT`` (code root, put first
on ``sys.path``), and the function's own variables.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
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


def main() -> int:
    global INIT_COUNT
    # Keep the protocol channel for ourselves; handler output (print, logging) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
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
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = request.get("trace_id", "")
        print(
            f"START RequestId: {request['request_id']} Version: {os.environ.get('AWS_LAMBDA_FUNCTION_VERSION')}"
        )
        started = time.perf_counter()
        if init_error is not None:
            response: dict[str, Any] = {"ok": False, "error": init_error}
        else:
            try:
                result = handler(request["event"], LambdaContext(request))  # type: ignore[misc]  # set when init_error is None
                response = {"ok": True, "result": json.dumps(result, default=str)}
            except Exception as err:
                response = {"ok": False, "error": _error(err)}
                print(json.dumps({"level": "ERROR", **response["error"]}))
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"END RequestId: {request['request_id']}")
        print(f"REPORT RequestId: {request['request_id']}\tDuration: {elapsed_ms:.2f} ms")
        sys.stderr.flush()
        response.update(id=request["id"], pid=os.getpid(), init_count=INIT_COUNT)
        protocol.write(json.dumps(response) + "\n")
    return 0


def _error(err: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(err),
        "errorType": error_type or type(err).__name__,
        "stackTrace": traceback.format_tb(err.__traceback__),
    }


if __name__ == "__main__":
    sys.exit(main())
