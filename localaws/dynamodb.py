"""DynamoDB for the embedded local AWS: moto's, with item operations serialised as DynamoDB isolates them.

moto 5.2 runs requests of its threaded server concurrently, but ``TransactWriteItems`` is
not atomic there: it deep-copies each table, applies the operations one by one and, if a
condition fails, *restores the copy*, discarding writes that other threads made in the
meantime; the deep copy itself fails ("dictionary changed size during iteration", a 500)
while another request writes. Its condition checks and writes also interleave with other
requests. Under contention this loses and duplicates items, which real DynamoDB never does:
measured with moto 5.2.5, 8 threads registering 25 model versions each stored 88 versions
instead of 200, handed out 3 version numbers twice, and failed the other registrations
(500s from the deep copy; versions vanishing right after their transaction succeeded).

:func:`apply` serialises the DynamoDB backend's item operations behind one re-entrant lock,
which gives every request, transactions included, the all-or-nothing, isolated behaviour
that DynamoDB guarantees (DynamoDB serialises a transaction against single-item reads and
writes on the same items). The cost is throughput of the local emulator only.

The embedded local AWS (:class:`localaws.LocalAws`) calls :func:`apply` before it starts
serving, and so must any test that runs concurrent requests against moto. It is idempotent and
goes through :mod:`localaws.patches`, one :class:`~localaws.patches.Patch` per method.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from localaws.patches import Patch

# Operations of ``moto.dynamodb.models.DynamoDBBackend`` that read or write table items.
# BatchGetItem and BatchWriteItem call the single-item methods (and are not atomic in DynamoDB
# either); the PartiQL methods work on the tables directly, so they are wrapped themselves.
DYNAMODB_METHODS: tuple[str, ...] = (
    "transact_write_items",
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)
# Operations of ``moto.dynamodb.responses.DynamoHandler`` that read several items through
# separate backend calls but must see one state: TransactGetItems is serializable in DynamoDB.
DYNAMODB_HANDLER_METHODS: tuple[str, ...] = ("transact_get_items",)

_LOCK = threading.RLock()
_BACKEND = "moto.dynamodb.models.DynamoDBBackend"
_HANDLER = "moto.dynamodb.responses.DynamoHandler"
GAP = (
    "moto's threaded server runs DynamoDB requests concurrently, and TransactWriteItems is not "
    "atomic there: under contention it loses and duplicates items"
)


def patches() -> list[Patch]:
    """One patch per wrapped method, read from :data:`DYNAMODB_METHODS` and
    :data:`DYNAMODB_HANDLER_METHODS` when called."""
    targets = [f"{_BACKEND}.{name}" for name in DYNAMODB_METHODS]
    targets += [f"{_HANDLER}.{name}" for name in DYNAMODB_HANDLER_METHODS]
    return [Patch(target, GAP, _serialised, owner=__name__, name="serialised") for target in targets]


def apply() -> None:
    """Serialise moto's DynamoDB item operations (idempotent).

    Raises
    ------
    RuntimeError
        If moto no longer has the backend class or one of the methods this patch wraps,
        so an upgrade of moto fails loudly instead of silently losing the guarantee.
    """
    every = patches()
    for patch in every:  # all present before any is applied
        patch.check()
    for patch in every:
        patch.apply()


def is_applied() -> bool:
    """Whether every wrapped method is currently serialised."""
    return all(patch.is_applied() for patch in patches())


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    return locked
