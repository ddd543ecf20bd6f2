"""Checks of the names and values a registry caller gives: model, alias, version, actor, reason.

Each raises :class:`~sluice.errors.SluiceError` with a message naming what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from sluice.errors import SluiceError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ALIAS_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def check_model_name(name: str) -> None:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise SluiceError(
            f"model name {name!r} is invalid: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        )


def check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_NAME.match(alias):
        raise SluiceError(f"alias {alias!r} is invalid: use 1-63 lower-case letters, digits or '-'")


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise SluiceError("idempotency_key must be 1-200 printable ASCII characters without spaces")


def check_version(version: Any) -> int:
    """``version`` as a positive int (a number or its decimal string)."""
    if isinstance(version, bool):
        raise SluiceError(f"version must be a positive integer; got {version!r}")
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise SluiceError(f"version must be a positive integer; got {version!r}") from None
    if number < 1 or str(number) != str(version).strip():
        raise SluiceError(f"version must be a positive integer; got {version!r}")
    return number


def check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 2048:
        raise SluiceError("actor must be a non-empty string (who is acting)")


def check_reason(reason: str | None) -> str:
    """``reason`` as a string (``None`` is ``""``)."""
    if reason is None:
        return ""
    if not isinstance(reason, str) or len(reason) > 1000:
        raise SluiceError("reason must be a string of at most 1000 characters")
    return reason
