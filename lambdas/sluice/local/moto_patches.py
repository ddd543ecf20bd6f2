"""Make moto's DynamoDB behave like DynamoDB under concurrent requests.

moto 5.2 runs requests of its threaded server concurrently, but ``TransactWriteItems`` is
not atomic there: it deep-copies each table, applies the operations one by one and, if a
condition fails, *restores the copy*, discarding writes that other threads made in the
meantime. Its condition checks and writes also interleave with other requests. Under
contention this loses or duplicates items (8 threads registering 200 model versions lose
a few of them), which real DynamoDB never does.

:func:`apply` serialises the DynamoDB backend's item operations behind one re-entrant lock,
which gives every request, transactions included, the all-or-nothing, isolated behaviour
that DynamoDB guarantees (DynamoDB serialises a transaction against single-item reads and
writes on the same items). The cost is throughput of the local emulator only.

The embedded local AWS (``sluice.local``) must call :func:`apply` before it starts serving,
and so must any test that runs concurrent requests against moto. It is idempotent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

# Item-level operations of ``moto.dynamodb.models.DynamoDBBackend`` that read or write
# table items. Batch and PartiQL operations call these, so they are covered too.
DYNAMODB_METHODS: tuple[str, ...] = (
    "transact_write_items",
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
)

_LOCK = threading.RLock()
_MARK = "__sluice_serialised__"


def apply() -> None:
    """Serialise moto's DynamoDB item operations (idempotent).

    Raises
    ------
    RuntimeError
        If moto no longer has the backend class or one of the methods this patch wraps,
        so an upgrade of moto fails loudly instead of silently losing the guarantee.
    """
    backend = _dynamodb_backend_class()
    for name in DYNAMODB_METHODS:
        original = getattr(backend, name, None)
        if not callable(original):
            raise RuntimeError(
                f"moto.dynamodb.models.DynamoDBBackend.{name} is gone (moto upgraded?); "
                "sluice.local.moto_patches must be updated"
            )
        if getattr(original, _MARK, False):
            continue
        setattr(backend, name, _serialised(original))


def is_applied() -> bool:
    """Whether every wrapped method is currently serialised."""
    backend = _dynamodb_backend_class()
    return all(getattr(getattr(backend, name, None), _MARK, False) for name in DYNAMODB_METHODS)


def _dynamodb_backend_class() -> type:
    try:
        from moto.dynamodb.models import DynamoDBBackend
    except ImportError as err:  # pragma: no cover - only when moto moves the class
        raise RuntimeError(
            f"moto.dynamodb.models.DynamoDBBackend cannot be imported ({err}); "
            "sluice.local.moto_patches must be updated"
        ) from err
    return DynamoDBBackend


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(locked, _MARK, True)
    return locked
