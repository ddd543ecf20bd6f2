"""Let assumed roles reach other accounts on the embedded local AWS, as they do in AWS.

The local AWS pins ``MOTO_ACCOUNT_ID`` to the stage's account, so that requests signed with the
plain local credentials land there. moto gives that variable priority over everything, the
credentials of an assumed role included: a role assumed in another account (the prod account's
promotion role) would still act in the stage's account, and a promotion "to prod" would write
next to the dev registry.

:func:`install` wraps ``moto.core.responses.BaseResponse.get_current_account`` so that a request
signed with credentials that moto issued for another account (``sts:AssumeRole`` of a role ARN
in that account) acts in that account; every other request keeps the pinned account. A table or
KMS key named by the ARN of another account's resource is found there, as cross-account
DynamoDB and KMS calls are in AWS (:data:`TABLE_BY_ARN`, :data:`KEY_BY_ARN`). Trust and
resource policies are still not evaluated (moto does not). Idempotent; raises if moto's symbol moved
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


def _other_account(arn: str, service: str, account: str, region: str) -> tuple[str, str] | None:
    """``(account, region)`` of ``arn`` if it names a ``service`` resource elsewhere, else None."""
    parts = arn.split(":") if isinstance(arn, str) and arn.startswith("arn:") else []
    if len(parts) < 6 or parts[2] != service or (parts[4], parts[3]) == (account, region):
        return None
    return parts[4], parts[3]


def _table_by_arn(original: Callable[..., Any]) -> Callable[..., Any]:
    backends = moto_symbol("moto.dynamodb.models.dynamodb_backends", owner=__name__)

    def get_table(self: Any, table_name: str) -> Any:
        elsewhere = _other_account(table_name, "dynamodb", self.account_id, self.region_name)
        if elsewhere is None:
            return original(self, table_name)
        return original(backends[elsewhere[0]][elsewhere[1]], table_name)

    return get_table


def _key_by_arn(original: Callable[..., Any]) -> Callable[..., Any]:
    def verify(self: Any) -> Any:
        # The request acts in the key's account, as a Verify across accounts does in AWS.
        key_id = self._get_param("KeyId") or ""
        elsewhere = _other_account(key_id, "kms", self.current_account, self.region)
        if elsewhere is not None:
            self.current_account = elsewhere[0]
        return original(self)

    return verify


TABLE_BY_ARN = Patch(
    target="moto.dynamodb.models.DynamoDBBackend.get_table",
    gap="a table named by the ARN of another account's table is not found (AWS reads it across accounts)",
    replace=_table_by_arn,
    owner=__name__,
    name="cross_account_tables",
    requires=("moto.dynamodb.models.dynamodb_backends",),
)
KEY_BY_ARN = Patch(
    target="moto.kms.responses.KmsResponse.verify",
    gap="a key named by the ARN of another account's key is not found, so Verify fails across accounts",
    replace=_key_by_arn,
    owner=__name__,
    name="cross_account_keys",
)
PATCHES = (GET_CURRENT_ACCOUNT, TABLE_BY_ARN, KEY_BY_ARN)


def install() -> None:
    """Make assumed-role credentials act in their role's account, and ARNs reach across (idempotent).

    Raises
    ------
    RuntimeError
        If a patched moto symbol is gone (moto upgraded).
    """
    for patch in PATCHES:
        patch.apply()


def uninstall() -> None:
    """Restore moto's own account resolution (tests)."""
    for patch in PATCHES:
        patch.undo()
