"""The embedded local AWS: moto in-process, so the whole Sluice lifecycle runs without an account.

``from localaws import LocalAws``; see :mod:`localaws.env`, the composition root. One module
or package per emulated service: :mod:`~localaws.gateway` (API Gateway), :mod:`~localaws.lambdas`
(Lambda workers), :mod:`~localaws.stepfunctions`, :mod:`~localaws.events` (EventBridge and
Scheduler), :mod:`~localaws.alarms` (CloudWatch alarms), :mod:`~localaws.firehose`,
:mod:`~localaws.dynamodb`, :mod:`~localaws.cloudformation`, :mod:`~localaws.accounts` and
:mod:`~localaws.bootstrap`. Every change to moto goes through :mod:`localaws.patches`.

Importing this package does not import moto; :meth:`LocalAws.start` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localaws.env import LocalAws

__all__ = ["LocalAws"]


def __getattr__(name: str) -> Any:
    if name == "LocalAws":
        from localaws.env import LocalAws

        return LocalAws
    raise AttributeError(name)
