"""What goes into the journal: successful mutating requests to the moto server, and in-server writes.

:data:`SERVE` wraps moto's WSGI application. While a journal is active (:func:`activate`), a
request that changes state (:func:`classify`) runs under the journal's order lock, and if it
succeeds its method, path, query, headers and body are appended and fsynced *before* the
response leaves; records are appended in the order the requests ran. Requests with effects
beyond moto's state (invocations, Step Functions executions, Firehose and SNS deliveries,
events, STS credentials) are not replayed; what they write is journaled where it is written:

- :data:`S3_PUT_OBJECT`: an object stored outside a journaled request (Firehose delivering to
  S3, a completed multipart upload) becomes an ``s3.put`` record with its bytes;
- :data:`SFN_START` and :data:`SFN_TERMINATED`: a Step Functions execution's start and end
  become ``sfn.execution`` records (its status, not a re-run).

Records carry the account a request acted in when its credentials were issued for another one
(an assumed role), so a replay acts there too.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from localaws.journal.log import JournalFile
from localaws.patches import Patch, moto_symbol

#: Services whose requests are never replayed: credentials, stacks (re-created by ``up``), logs.
SKIP_SERVICES = frozenset({"sts", "cloudformation", "logs"})
#: Operations whose effects are journaled where they happen, or that change nothing kept.
SKIP_ACTIONS: dict[str, frozenset[str]] = {
    "states": frozenset(
        {
            "StartExecution",
            "StartSyncExecution",
            "StopExecution",
            "RedriveExecution",
            "SendTaskSuccess",
            "SendTaskFailure",
            "SendTaskHeartbeat",
        }
    ),
    "firehose": frozenset({"PutRecord", "PutRecordBatch"}),
    "events": frozenset({"PutEvents"}),
    "sns": frozenset({"Publish", "PublishBatch"}),
    "sqs": frozenset(
        {
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
            "PurgeQueue",
        }
    ),
    "kms": frozenset(
        {
            "Encrypt",
            "Decrypt",
            "ReEncrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateRandom",
            "Sign",
            "Verify",
            "GenerateMac",
            "VerifyMac",
        }
    ),
}
_READS = (
    "Get",
    "List",
    "Describe",
    "Query",
    "Scan",
    "BatchGet",
    "TransactGet",
    "Head",
    "Search",
    "Filter",
    "Lookup",
    "Test",
    "Validate",
    "Simulate",
    "Estimate",
    "Check",
)
#: DynamoDB operations on items: kept in snapshots as items, not as requests.
ITEM_ACTIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "ExecuteStatement",
        "BatchExecuteStatement",
        "ExecuteTransaction",
    }
)
_DROP_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "expect", "keep-alive"})
_SCOPE = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/")

_active: Journaled | None = None
_local = threading.local()


@dataclass
class Journaled:
    """The journal that requests and in-server writes go to, with the lock that orders them."""

    file: JournalFile
    account: str
    order: threading.RLock

    def note(self, header: dict[str, Any], body: bytes = b"") -> None:
        """Append and sync one record of an in-server write (skipped inside a journaled request)."""
        if getattr(_local, "inside", False):
            return
        # Not under the order lock: these writes never depend on a concurrent request's, and
        # the capture's deliveries must not wait behind a slow request.
        self.file.sync(self.file.append(header, body))


def activate(file: JournalFile, *, account: str) -> Journaled:
    """Journal every state change of this process's moto server into ``file`` from now on."""
    global _active
    _active = Journaled(file=file, account=account, order=threading.RLock())
    return _active


def deactivate() -> None:
    global _active
    _active = None


def active() -> Journaled | None:
    return _active


def classify(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> dict[str, Any] | None:
    """``{"service", "action", "data"}`` of a request to replay, or None for one that changes nothing kept.

    ``data`` marks object and item writes, which a snapshot keeps as objects and items.
    """
    if method in ("GET", "HEAD", "OPTIONS") or path.startswith("/moto-api"):
        return None
    scope = _SCOPE.search(
        headers.get("authorization", "") or parse_qs(query).get("X-Amz-Credential", [""])[0]
    )
    service = scope.group(3) if scope else ""
    if service in SKIP_SERVICES:
        return None
    action = _action(path, query, headers, body)
    if action is None:
        return _rest(service, method, path, query)
    if action.startswith(_READS) or action in SKIP_ACTIONS.get(service, ()):
        return None
    return {"service": service, "action": action, "data": service == "dynamodb" and action in ITEM_ACTIONS}


def _action(path: str, query: str, headers: dict[str, str], body: bytes) -> str | None:
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "/operation/" in path:  # Smithy RPC v2 CBOR (CloudWatch)
        return path.rsplit("/", 1)[-1]
    for source in (query, body.decode("latin-1") if b"Action=" in body[:4096] else ""):
        found = parse_qs(source).get("Action")
        if found:
            return found[0]
    return None


def _rest(service: str, method: str, path: str, query: str) -> dict[str, Any] | None:
    if service == "lambda" and ("/invocations" in path or "/invoke-async" in path):
        return None
    names = set(parse_qs(query, keep_blank_values=True))
    if service == "s3":
        if names & {"uploads", "uploadId", "select", "restore"}:
            return None  # the completed upload is journaled as the object it stored
        object_level = len([p for p in path.split("/") if p]) >= 2 or (method == "POST" and "delete" in names)
        return {
            "service": service,
            "action": f"{method} object" if object_level else method,
            "data": object_level,
        }
    return {"service": service, "action": method, "data": False}


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    found = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        found["content-type"] = environ["CONTENT_TYPE"]
    return {k: v for k, v in found.items() if k not in _DROP_HEADERS}


def _read_body(environ: dict[str, Any]) -> bytes:
    from werkzeug.wsgi import get_input_stream

    body: bytes = get_input_stream(environ).read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["wsgi.input_terminated"] = False
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return body


def _issued_account(headers: dict[str, str], pinned: str) -> str | None:
    """The account of the request's credentials when they were issued for another one."""
    scope = _SCOPE.search(headers.get("authorization", ""))
    if scope is None:
        return None
    issued = moto_symbol("moto.iam.models.get_account_id_from", owner=__name__)(scope.group(1))
    default = moto_symbol("moto.core.models.DEFAULT_ACCOUNT_ID", owner=__name__)
    return None if issued in (default, pinned) else str(issued)


def _journaled_call(original: Callable[..., Any]) -> Callable[..., Any]:
    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        journal = _active
        if journal is None or environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD", "OPTIONS"):
            return original(self, environ, start_response)
        body = _read_body(environ)
        headers = _headers(environ)
        path, query = (
            environ.get("RAW_URI", "").split("?", 1)[0] or environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        kind = classify(environ["REQUEST_METHOD"], path, query, headers, body)
        if kind is None:
            return original(self, environ, start_response)
        status: list[int] = []
        version: list[str] = []

        def capture(code: str, response_headers: Any, exc_info: Any = None) -> Any:
            status.append(int(code.split(" ", 1)[0]))
            version.extend(v for k, v in response_headers if k.lower() == "x-amz-version-id" and v != "null")
            return (
                start_response(code, response_headers, exc_info)
                if exc_info
                else start_response(code, response_headers)
            )

        seq = 0
        with journal.order:
            _local.inside = True
            try:
                result = original(self, environ, capture)
            finally:
                _local.inside = False
            if status and status[0] < 300:
                header = {
                    "kind": "http",
                    "at": round(time.time(), 3),
                    "method": environ["REQUEST_METHOD"],
                    "path": path,
                    "query": query,
                    "headers": headers,
                    **kind,
                }
                if version:
                    header["version_id"] = version[0]  # given the replayed object again
                account = _issued_account(headers, journal.account)
                if account:
                    header["account"] = account
                seq = journal.file.append(header, body)
        if seq:
            journal.file.sync(seq)
        return result

    return __call__


def _journaled_put_object(original: Callable[..., Any]) -> Callable[..., Any]:
    def put_object(
        self: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any
    ) -> Any:
        key = original(self, bucket_name, key_name, value, *args, **kwargs)
        journal = _active
        if journal is not None:
            header = {
                "kind": "s3.put",
                "account": self.account_id,
                "bucket": bucket_name,
                "key": key_name,
                "metadata": dict(key.metadata),
                "version_id": key.version_id,
                "data": True,
            }
            journal.note(header, bytes(value))
        return key

    return put_object


def execution_record(execution: Any) -> dict[str, Any]:
    """An ``sfn.execution`` record of a moto execution, as it stands."""
    status = execution.exec_status
    output = execution.output
    return {
        "kind": "sfn.execution",
        "account": execution.account_id,
        "region": execution.region_name,
        "arn": execution.exec_arn,
        "name": execution.name,
        "state_machine": execution.state_machine_arn,
        "input": execution.execution_input,
        "start": execution.start_date.timestamp() if execution.start_date else None,
        "stop": execution.stop_date.timestamp() if execution.stop_date else None,
        "status": getattr(status, "value", status) or "RUNNING",
        "output": output if output is None or isinstance(output, str) else _json(output),
        "error": execution.error,
        "cause": execution.cause,
    }


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def _note_execution(execution: Any) -> None:
    journal = _active
    if journal is not None and execution is not None:
        journal.note(execution_record(execution))


def _journaled_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def start_execution(self: Any, *args: Any, **kwargs: Any) -> Any:
        execution = original(self, *args, **kwargs)
        _note_execution(execution)
        return execution

    return start_execution


def _journaled_terminated(original: Callable[..., Any]) -> Callable[..., Any]:
    def terminated(self: Any) -> None:
        original(self)
        _note_execution(getattr(self, "execution", None))

    return terminated


def _patch(target: str, gap: str, replace: Callable[[Any], Any]) -> Patch:
    return Patch(target=target, gap=gap, replace=replace, owner=__name__, name="journal")


SERVE = _patch(
    "moto.moto_server.werkzeug_app.DomainDispatcherApplication.__call__",
    "moto keeps its state in memory only: a killed server loses every write it acknowledged",
    _journaled_call,
)
S3_PUT_OBJECT = _patch(
    "moto.s3.models.S3Backend.put_object",
    "Firehose deliveries and completed multipart uploads store objects without a replayable request",
    _journaled_put_object,
)
SFN_START = _patch(
    "moto.stepfunctions.parser.models.StepFunctionsParserBackend.start_execution",
    "a replayed StartExecution would run the execution again; its record is journaled instead",
    _journaled_start,
)
SFN_TERMINATED = _patch(
    "moto.stepfunctions.parser.backend.execution.BaseExecutionWorkerCommunication.terminated",
    "an execution's final status is set inside the server, by its worker thread",
    _journaled_terminated,
)
PATCHES = (SERVE, S3_PUT_OBJECT, SFN_START, SFN_TERMINATED)


def install() -> None:
    """Apply the journal's patches (idempotent; they do nothing while no journal is active)."""
    for patch in PATCHES:
        patch.check()
    for patch in PATCHES:
        patch.apply()
