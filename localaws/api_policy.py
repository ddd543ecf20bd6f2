"""A REST API's resource policy at the local gateway: the explicit denies, as API Gateway applies them.

API Gateway evaluates an API's resource policy together with the caller's identity policies;
an explicit ``Deny`` that matches refuses the request whatever else allows it. Locally identity
policies are not evaluated (any key moto issued may call any ``AWS_IAM`` method), so this module
applies the part that can only refuse: every ``Deny`` statement on ``execute-api:Invoke``.
That is what keeps the registry API's approve and reject to the approver role locally too.

The subset: ``Effect: Deny``; ``Principal`` ``*`` or ``{"AWS": ...}`` (an ARN, an account id or
``arn:aws:iam::<account>:root``); ``Action``/``NotAction`` among ``execute-api:Invoke``,
``execute-api:*`` and ``*``; ``Resource`` as ``execute-api:/<stage>/<METHOD>/<path>`` or the full
``arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path>``, with ``*`` and ``?``;
conditions ``ArnEquals``, ``ArnLike``, ``ArnNotEquals``, ``ArnNotLike``, ``StringEquals``,
``StringLike``, ``StringNotEquals``, ``StringNotLike`` on ``aws:PrincipalArn`` and
``aws:PrincipalAccount``. A statement with any other operator or key is taken to apply (it
refuses): a policy this module cannot read fails closed, and says which statement.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_ASSUMED_ROLE = re.compile(r"^arn:(?P<p>[^:]+):sts::(?P<a>\d{12}):assumed-role/(?P<role>[^/]+)/.+$")
_POSITIVE = {"ArnEquals", "ArnLike", "StringEquals", "StringLike"}
_NEGATIVE = {"ArnNotEquals", "ArnNotLike", "StringNotEquals", "StringNotLike"}
_KEYS = {"aws:principalarn", "aws:principalaccount"}


def principal_arn(caller_arn: str) -> str:
    """``aws:PrincipalArn`` of a caller: the role's ARN for an assumed-role session, else the ARN itself."""
    match = _ASSUMED_ROLE.match(caller_arn)
    return f"arn:{match['p']}:iam::{match['a']}:role/{match['role']}" if match else caller_arn


def explicit_deny(
    policy: str | Mapping[str, Any] | None,
    *,
    caller_arn: str,
    account: str,
    method_arn: str,
) -> str | None:
    """The ``Sid`` (or index) of the first ``Deny`` statement that refuses this call, or ``None``.

    ``method_arn`` is ``arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path>``.
    """
    if not policy:
        return None
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = document.get("Statement", [])
    context = {"aws:principalarn": principal_arn(caller_arn), "aws:principalaccount": account}
    for index, statement in enumerate(statements if isinstance(statements, list) else [statements]):
        if statement.get("Effect") != "Deny":
            continue
        if (
            _principal_matches(statement.get("Principal"), context)
            and _action_matches(statement)
            and _resource_matches(statement.get("Resource"), method_arn)
            and _conditions_hold(statement.get("Condition") or {}, context, index)
        ):
            return str(statement.get("Sid") or index)
    return None


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _principal_matches(principal: Any, context: dict[str, str]) -> bool:
    if principal == "*":
        return True
    listed = _listed(principal.get("AWS")) if isinstance(principal, dict) else []
    account = context["aws:principalaccount"]
    return any(
        p == "*" or p == account or p == f"arn:aws:iam::{account}:root" or p == context["aws:principalarn"]
        for p in listed
    )


def _action_matches(statement: Mapping[str, Any]) -> bool:
    def covers(actions: list[str]) -> bool:
        return any(fnmatch.fnmatchcase("execute-api:invoke", a.lower()) for a in actions)

    if "NotAction" in statement:
        return not covers(_listed(statement["NotAction"]))
    return covers(_listed(statement.get("Action")))


def _resource_matches(resources: Any, method_arn: str) -> bool:
    tail = method_arn.split(":", 5)[5]  # <api>/<stage>/<METHOD>/<path>
    local = "execute-api:/" + tail.split("/", 1)[1]
    for pattern in _listed(resources):
        target = local if pattern.startswith("execute-api:/") else method_arn
        if pattern == "*" or fnmatch.fnmatchcase(target, pattern):
            return True
    return False


def _conditions_hold(conditions: Mapping[str, Any], context: dict[str, str], index: int) -> bool:
    for operator, tests in conditions.items():
        for key, wanted in (tests or {}).items():
            if operator not in _POSITIVE | _NEGATIVE or key.lower() not in _KEYS:
                log.warning(
                    "resource policy statement %s: %s on %s is not evaluated locally; it refuses",
                    index,
                    operator,
                    key,
                )
                return True
            value = context[key.lower()]
            hit = any(
                fnmatch.fnmatchcase(value, w) if "Like" in operator else value == w for w in _listed(wanted)
            )
            if hit != (operator in _POSITIVE):
                return False
    return True
