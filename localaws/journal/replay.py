"""Apply journal records to a fresh local stage: requests again through the server, writes directly.

``http`` records are sent to the running moto server as they were received (the recorded
``Host`` and signature included); a record made with credentials of another account is sent
with credentials this server issued for that account. ``s3.put`` and ``ddb.put`` records are
stored in moto's backends, and ``sfn.execution`` records become execution records of their
state machines (not runs: an execution still running when the stack died is restored as
``ABORTED``). Replay runs before the journal is active, so nothing it does is journaled again.
"""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

from localaws.patches import moto_symbol

log = logging.getLogger("localaws.journal")
_CREDENTIAL = re.compile(r"Credential=[^/,\s]+/")
INTERRUPTED = "the local stack stopped while the execution ran"


@dataclass
class ReplayResult:
    """How many records were applied, and the ones that failed (kind, what, error)."""

    applied: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)


class Replayer:
    """Applies records to the moto server at ``endpoint_url`` (same process) and its backends."""

    def __init__(self, *, endpoint_url: str, account: str, region: str) -> None:
        self.account = account
        self.region = region
        parsed = urlparse(endpoint_url)
        self._connection = http.client.HTTPConnection(
            parsed.hostname or "127.0.0.1", parsed.port, timeout=120
        )
        self._keys: dict[str, str] = {}
        self.result = ReplayResult()

    def apply_all(self, records: Iterable[tuple[dict[str, Any], bytes]]) -> ReplayResult:
        for header, body in records:
            self.apply(header, body)
        return self.result

    def apply(self, header: dict[str, Any], body: bytes) -> None:
        kind = header.get("kind")
        try:
            if kind == "http":
                self._http(header, body)
            elif kind == "s3.put":
                self._s3_put(header, body)
            elif kind == "ddb.put":
                self._ddb_put(header, body)
            elif kind == "sfn.execution":
                restore_execution(header)
            self.result.applied += 1
        except Exception as err:  # one bad record must not hide the rest
            what = header.get("path") or header.get("key") or header.get("arn") or header.get("table") or ""
            self.result.failed.append((str(kind), str(what), str(err)[:300]))
            log.warning("journal replay: %s %s failed: %s", kind, what, err)

    def close(self) -> None:
        self._connection.close()

    # ------------------------------------------------------------------ kinds

    def _http(self, header: dict[str, Any], body: bytes) -> None:
        headers = dict(header["headers"])
        account = header.get("account")
        if account and "authorization" in headers:
            headers["authorization"] = _CREDENTIAL.sub(
                f"Credential={self._key_for(account)}/", headers["authorization"]
            )
        url = header["path"] + (f"?{header['query']}" if header.get("query") else "")
        connection = self._connection
        connection.putrequest(header["method"], url, skip_host="host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        text = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{header['method']} {header['path']} -> {response.status}: {text[:200]!r}")
        given = response.getheader("x-amz-version-id")
        if header.get("version_id") and given:
            bucket, _, key = unquote(header["path"]).lstrip("/").partition("/")
            _keep_version_id(account or self.account, bucket, key, given, header["version_id"])

    def _key_for(self, account: str) -> str:
        """An access key this server issued for ``account`` (an assumed role, as the original was)."""
        if account not in self._keys:
            sts = moto_symbol("moto.sts.models.sts_backends", owner=__name__)[self.account]["global"]
            role = sts.assume_role(
                region_name=self.region,
                role_session_name="journal-replay",
                role_arn=f"arn:aws:iam::{account}:role/localaws-journal-replay",
                policy="",
                duration=3600,
                external_id="",
            )
            self._keys[account] = role.access_key_id
        return self._keys[account]

    def _s3_put(self, header: dict[str, Any], body: bytes) -> None:
        backend = moto_symbol("moto.s3.models.s3_backends", owner=__name__)[header["account"]]["aws"]
        key = backend.put_object(header["bucket"], header["key"], body, disable_notification=True)
        if header.get("metadata"):
            key.set_metadata(header["metadata"], replace=True)
        if header.get("version_id") not in (None, "null") and key.version_id != "null":
            key._version_id = header["version_id"]

    def _ddb_put(self, header: dict[str, Any], body: bytes) -> None:
        import json

        backends = moto_symbol("moto.dynamodb.models.dynamodb_backends", owner=__name__)
        backends[header["account"]][header["region"]].put_item(header["table"], json.loads(body))


def _keep_version_id(account: str, bucket: str, key: str, given: str, recorded: str) -> None:
    """Give a replayed object version the id its first write returned (lineage records it)."""
    backend = moto_symbol("moto.s3.models.s3_backends", owner=__name__)[account]["aws"]
    for stored in backend.get_bucket(bucket).keys.getlist(key, []):
        if stored.version_id == given:
            stored._version_id = recorded


def restore_execution(record: dict[str, Any]) -> None:
    """Put an execution's record back on its state machine (replacing an earlier record of it)."""
    backends = moto_symbol("moto.stepfunctions.parser.models.stepfunctions_parser_backends", owner=__name__)
    execution_class = moto_symbol("moto.stepfunctions.parser.backend.execution.Execution", owner=__name__)
    status_class = moto_symbol("moto.stepfunctions.parser.api.ExecutionStatus", owner=__name__)
    backend = backends[record["account"]][record["region"]]
    if not any(m.arn == record["state_machine"] for m in backend.state_machines):
        from localaws.stepfunctions.execution import move_to_executing_backend

        move_to_executing_backend()  # CloudFormation's machines, before the services start
    machine = backend.describe_state_machine(record["state_machine"])
    earlier = [e for e in machine.executions if e.exec_arn == record["arn"]]
    if record.get("status") in (None, "RUNNING") and any(e.stop_date is not None for e in earlier):
        return  # a start record read before the end record was written: the end wins
    machine.executions[:] = [e for e in machine.executions if e.exec_arn != record["arn"]]
    execution = execution_class(
        name=record["name"],
        sm_type=machine.sm_type,
        role_arn=machine.roleArn,
        exec_arn=record["arn"],
        account_id=record["account"],
        region_name=record["region"],
        state_machine=machine,
        start_date=datetime.fromtimestamp(record["start"] or 0, tz=UTC),
        cloud_watch_logging_session=None,
        activity_store={},
        input_data=record.get("input") or "{}",
    )
    status = record.get("status") or "RUNNING"
    if status == "RUNNING":
        status, record = "ABORTED", {**record, "cause": INTERRUPTED, "stop": None}
    execution.exec_status = status_class(status)
    stop = record.get("stop")
    execution.stop_date = datetime.fromtimestamp(stop, tz=UTC) if stop else datetime.now(tz=UTC)
    execution.output = _json_or_none(record.get("output"))
    execution.error = record.get("error")
    execution.cause = record.get("cause")
    machine.executions.append(execution)


def _json_or_none(text: str | None) -> Any:
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
