"""The registry table: its item layout and consistent reads.

Records are items of one DynamoDB table keyed by ``pk`` / ``sk`` (see ``infra/constructs/registry.py``)::

    pk = MODELS         sk = MODEL#<name>           the model index: latest version, aliases, timestamps
    pk = MODEL#<name>   sk = HEAD                   latest version (the version counter), timestamps
                        sk = V#0000000007           one version: status, artifacts, metrics, lineage
                        sk = ALIAS#champion         alias -> version
                        sk = IDEMP#<key>            idempotency key -> version
                        sk = EVENT#<ts>#<suffix>    index of the audit trail, time-ordered

Writes are DynamoDB transactions built by :mod:`~sluice.registry.versions`,
:mod:`~sluice.registry.approval`, :mod:`~sluice.registry.aliases` and :mod:`~sluice.registry.audit`.
Each runs through :func:`sluice.registry.audit.commit`, which then writes the events it recorded
to the audit bucket: the trail itself, which no role can rewrite.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from sluice import aws as sluice_aws
from sluice.errors import NotFound
from sluice.names import REGISTRY_INDEX_PARTITION, registry_partition_key
from sluice.registry.records import VersionRecord
from sluice.registry.validation import check_model_name, check_version

HEAD = "HEAD"
# One partition lists every model, so listing is a Query rather than a Scan of all records.
INDEX_PK = REGISTRY_INDEX_PARTITION
#: Attempts of a transaction that lost a race (version number, alias move) before giving up.
MAX_ATTEMPTS = 200
#: Cancellation codes of a transaction whose condition failed or that met a concurrent one.
_TRANSACTION_CONFLICTS = ("TransactionCanceledException", "TransactionConflictException")


class RegistryTable:
    """Reads of the registry table, always consistent.

    Parameters
    ----------
    name
        The table name (``SLUICE_REGISTRY_TABLE``).
    audit_bucket
        The registry's audit store (see :mod:`sluice.registry.audit`).
    """

    def __init__(self, name: str, *, audit_bucket: str) -> None:
        self.name = name
        self.audit_bucket = audit_bucket

    @property
    def ddb(self) -> Any:
        return sluice_aws.client("dynamodb")

    def get_item(self, model: str, sk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.ddb.get_item(
            TableName=self.name, Key=key(model, sk), ConsistentRead=True
        ).get("Item")
        return item

    def query(self, model: str, prefix: str) -> Iterator[dict[str, Any]]:
        """The model's items whose sort key starts with ``prefix``, in key order."""
        paginator = self.ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": s(pk(model)), ":prefix": s(prefix)},
            ConsistentRead=True,
        ):
            yield from page.get("Items", [])

    def latest(self, model: str) -> int:
        """The model's latest version number (0 if it has none)."""
        head = self.get_item(model, HEAD)
        return int(head["latest"]["N"]) if head else 0

    def has_model(self, model: str) -> bool:
        """Whether ``model`` has been registered (its ``HEAD`` item exists)."""
        return self.get_item(model, HEAD) is not None

    def require_model(self, model: str) -> None:
        """Raise :class:`NotFound` unless ``model`` has been registered."""
        check_model_name(model)
        if not self.has_model(model):
            raise NotFound(f"model {model!r} not found")

    def record(self, model: str, version: Any) -> VersionRecord:
        """Version ``version`` of ``model``; :class:`NotFound` names the model or the version."""
        number = check_version(version)
        item = self.get_item(model, vsk(number))
        if item is None:
            if not self.has_model(model):
                raise NotFound(f"model {model!r} not found")
            raise NotFound(f"model {model!r} has no version {number}")
        return VersionRecord.from_item(model, item)


def error_code(err: ClientError) -> str:
    """The AWS error code of a botocore ``ClientError``."""
    return str(err.response.get("Error", {}).get("Code", ""))


def is_conflict(err: ClientError) -> bool:
    """Whether a transaction failed on a condition or on a concurrent transaction (a lost race)."""
    return error_code(err) in _TRANSACTION_CONFLICTS


def pk(model: str) -> str:
    return registry_partition_key(model)


def vsk(version: int) -> str:
    return f"V#{version:010d}"


def s(value: str) -> dict[str, str]:
    """A DynamoDB string attribute."""
    return {"S": value}


def key(model: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": s(pk(model)), "sk": s(sk)}


def index_key(model: str) -> dict[str, dict[str, str]]:
    return {"pk": s(INDEX_PK), "sk": s(pk(model))}


def now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backoff(attempt: int) -> None:
    """Sleep a jittered, growing moment before retrying a transaction that lost a race."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * (2 ** min(attempt, 6)))))
