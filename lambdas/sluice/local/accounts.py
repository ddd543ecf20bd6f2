"""Let assumed roles reach other accounts on the embedded local AWS, as they do in AWS.

The local AWS pins ``MOTO_ACCOUNT_ID`` to the stage's account, so that requests signed with the
plain local credentials land there. moto gives that variable priority over everything, the
credentials of an assumed role included: a role assumed in another account (the prod account's
promotion role) would still act in the stage's account, and a promotion "to prod" would write
next to the dev registry.

:func:`install` wraps ``moto.core.responses.BaseResponse.get_current_account`` so that a request
signed with credentials that moto issued for another account (``sts:AssumeRole`` of a role ARN
in that account) acts in that account; every other request keeps the pinned account. Trust
policies are still not evaluated (moto does not). Idempotent; raises if moto's symbol moved.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

_MARK = "__sluice_assumed_role_accounts__"


def _account_aware(original: Callable[[Any], str]) -> Callable[[Any], str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import get_account_id_from

    def get_current_account(self: Any) -> str:
        pinned = os.environ.get("MOTO_ACCOUNT_ID")
        if not pinned:
            return original(self)
        issued_in = get_account_id_from(self.get_access_key())
        return issued_in if issued_in not in (DEFAULT_ACCOUNT_ID, pinned) else pinned

    setattr(get_current_account, _MARK, True)
    get_current_account.__wrapped__ = original  # type: ignore[attr-defined]
    return get_current_account


def install() -> None:
    """Make assumed-role credentials act in their role's account (idempotent).

    Raises
    ------
    RuntimeError
        If ``BaseResponse.get_current_account`` is gone (moto upgraded).
    """
    from moto.core.responses import BaseResponse

    original = BaseResponse.__dict__.get("get_current_account")
    if not callable(original):
        raise RuntimeError(
            "moto.core.responses.BaseResponse.get_current_account is gone (moto upgraded?); "
            "sluice.local.accounts must be updated"
        )
    if getattr(original, _MARK, False):
        return
    BaseResponse.get_current_account = _account_aware(original)


def uninstall() -> None:
    """Restore moto's own account resolution (tests)."""
    from moto.core.responses import BaseResponse

    current = BaseResponse.__dict__.get("get_current_account")
    if getattr(current, _MARK, False):
        BaseResponse.get_current_account = current.__wrapped__
