"""Stable physical names: a resource CloudFormation names gets the same name on every ``up``.

moto's CloudFormation names a resource whose template gives no name ``<stack>-<logical id>-<12
random characters>``. In AWS the stack and its names outlive any client, and the journal's
records (and the data they wrote: ARNs in items and objects) name those resources, so
:data:`GENERATE_RESOURCE_NAME` hands out the name remembered for ``(stack, logical id)`` while
names are pinned (:func:`pin`), and remembers any name it had to generate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localaws.patches import Patch

_pinned: dict[str, str] | None = None


def pin(names: dict[str, str]) -> None:
    """Hand out these names (``"<stack>/<logical id>"`` to name) and remember new ones."""
    global _pinned
    _pinned = dict(names)


def pinned() -> dict[str, str]:
    """The names handed out or remembered since :func:`pin`."""
    return dict(_pinned or {})


def remembered(key: str) -> str | None:
    """The value kept under ``key`` (e.g. a KMS key's material), or ``None`` while nothing is pinned."""
    return None if _pinned is None else _pinned.get(key)


def remember(key: str, value: str) -> None:
    """Keep ``value`` under ``key`` until the next ``up`` (nothing is kept while names aren't pinned)."""
    if _pinned is not None:
        _pinned[key] = value


def unpin() -> None:
    global _pinned
    _pinned = None


def _stable(original: Callable[[str, str, str], str]) -> Callable[[str, str, str], str]:
    def generate_resource_name(resource_type: str, stack_name: str, logical_id: str) -> str:
        if _pinned is None:
            return original(resource_type, stack_name, logical_id)
        key = f"{stack_name}/{logical_id}"
        if key not in _pinned:
            _pinned[key] = original(resource_type, stack_name, logical_id)
        return _pinned[key]

    return generate_resource_name


GENERATE_RESOURCE_NAME = Patch(
    target="moto.cloudformation.parsing.generate_resource_name",
    gap="names CloudFormation generates end in random characters, different on every deploy",
    replace=_stable,
    owner=__name__,
    name="stable_names",
    params=("resource_type", "stack_name", "logical_id"),
)


def install() -> Any:
    """Apply the patch (idempotent; it changes nothing while no names are pinned)."""
    return GENERATE_RESOURCE_NAME.apply()
