"""Let assumed roles reach other accounts on the embedded local AWS, as they do in AWS.

The local AWS pins ``MOTO_ACCOUNT_ID`` to the stage's account, so that requests signed with the
plain local credentials land there. moto gives that variable priority over everything, the
credentials of an assumed role included: a role assumed in another account (the prod account's
promotion role) would still act in the stage's account, and a promotion "to prod" would write
next to the dev registry.

:func:`install` wraps ``moto.core.responses.BaseResponse.get_current_account`` so that a request
signed with credentials that moto issued for another account (``sts:AssumeRole`` of a role ARN
in that account) acts in that account; every other request keeps the pinned account. Trust
policies are still not evaluated (moto does not). Idempotent; raises if moto's symbol moved
(:data:`GET_CURRENT_ACCOUNT`, through :mod:`localaws.patches`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from localaws.patches import Patch, moto_symbol


def _account_aware(original: Callable[[Any], str]) -> Callable[[Any], str]:
    default_account = moto_symbol("moto.core.models.DEFAULT_ACCOUNT_ID", owner=__name__)
    get_account_id_from = moto_symbol("moto.iam.models.get_account_id_from", owner=__name__)

    def get_current_account(self: Any) -> str:
        pinned = os.environ.get("MOTO_ACCOUNT_ID")
        if not pinned:
            return original(self)
        issued_in = get_account_id_from(self.get_access_key())
        return issued_in if issued_in not in (default_account, pinned) else pinned

    return get_current_account


GET_CURRENT_ACCOUNT = Patch(
    target="moto.core.responses.BaseResponse.get_current_account",
    gap=(
        "MOTO_ACCOUNT_ID wins over the credentials of an assumed role, so a role assumed in "
        "another account still acts in the pinned one"
    ),
    replace=_account_aware,
    owner=__name__,
    name="assumed_role_accounts",
    requires=("moto.core.models.DEFAULT_ACCOUNT_ID", "moto.iam.models.get_account_id_from"),
)


def install() -> None:
    """Make assumed-role credentials act in their role's account (idempotent).

    Raises
    ------
    RuntimeError
        If ``BaseResponse.get_current_account`` is gone (moto upgraded).
    """
    GET_CURRENT_ACCOUNT.apply()


def uninstall() -> None:
    """Restore moto's own account resolution (tests)."""
    GET_CURRENT_ACCOUNT.undo()
