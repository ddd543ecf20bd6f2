"""The embedded local AWS: moto in-process, so the whole Sluice lifecycle runs without an account.

``from sluice.local import LocalAws``; see :mod:`sluice.local.env`. Importing this package
does not import moto; :meth:`LocalAws.start` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.local.env import LocalAws

__all__ = ["LocalAws"]


def __getattr__(name: str) -> Any:
    if name == "LocalAws":
        from sluice.local.env import LocalAws

        return LocalAws
    raise AttributeError(name)
