"""IAM ``Condition`` blocks for :mod:`tests.security.iam_sim`: the operators the simulator models.

Modelled operators: ``String(Not)Equals(IgnoreCase)``, ``String(Not)Like``, ``Arn(Not)Equals``,
``Arn(Not)Like``, ``Bool``, ``Null`` and the six ``Numeric*`` comparisons, each with the
``ForAnyValue:`` / ``ForAllValues:`` set qualifiers and the ``...IfExists`` suffix. Any other
operator (``Date*``, ``IpAddress``, ``Binary*``) raises :class:`NotModelled`, so a policy the
simulator cannot read fails the test instead of being half-evaluated.

Missing keys follow the IAM user guide ("Condition operators"): a condition on a key absent
from the request context is false, except that a *negated* operator (``StringNotEquals``,
``ArnNotLike``...) is then true, ``...IfExists`` is true, ``Null`` tests presence itself, and
``ForAllValues:`` is true on an empty set while ``ForAnyValue:`` is false.
A multivalued context key under an operator without a set qualifier is read as ``ForAnyValue``.
Condition keys are case-insensitive; values compare case-sensitively unless the operator says
``IgnoreCase`` (``Bool`` compares ``true``/``false`` in any case).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping

#: Marks a value the CloudFormation resolver could not compute: it equals and matches nothing.
TOKEN = "\x00"

Context = Mapping[str, tuple[str, ...]]


class NotModelled(Exception):
    """A policy uses IAM the simulator does not model (it refuses rather than guesses)."""


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's ``*`` (any run, across ``:`` and ``/``) and ``?`` (one character); tokens never match."""
    if TOKEN in pattern or TOKEN in value:
        return False
    return _compiled(pattern, ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike: the six ``:``-separated parts of an ARN matched one by one."""
    p_parts, v_parts = pattern.split(":", 5), value.split(":", 5)
    if len(p_parts) != 6 or len(v_parts) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(p_parts, v_parts, strict=True))


def _numeric(compare: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def match(policy: str, value: str) -> bool:
        try:
            return compare(float(value), float(policy))
        except ValueError:
            return False

    return match


def _exact(policy: str, value: str) -> bool:
    return TOKEN not in policy and policy == value


#: Positive form of each operator: does one request value match one policy value?
_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": _exact,
    "StringEqualsIgnoreCase": lambda p, v: TOKEN not in p and p.lower() == v.lower(),
    "StringLike": wildcard_match,
    "ArnEquals": _exact,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: TOKEN not in p and p.lower() == v.lower(),
    "NumericEquals": _numeric(operator.eq),
    "NumericLessThan": _numeric(operator.lt),
    "NumericLessThanEquals": _numeric(operator.le),
    "NumericGreaterThan": _numeric(operator.gt),
    "NumericGreaterThanEquals": _numeric(operator.ge),
}
#: Negated operators and the positive operator they negate.
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _parse_operator(name: str) -> tuple[str | None, str, bool]:
    """``ForAnyValue:StringLikeIfExists`` → (``ForAnyValue``, ``StringLike``, True)."""
    qualifier, _, base = name.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise NotModelled(f"set qualifier {qualifier!r}")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base != "Null" and base not in _MATCHERS and base not in _NEGATED:
        raise NotModelled(f"condition operator {name!r}")
    return qualifier or None, base, if_exists


def _value_matches(base: str, values: tuple[str, ...], value: str) -> bool:
    """One request value against the policy values (OR), negation applied after."""
    if base in _NEGATED:
        positive = _MATCHERS[_NEGATED[base]]
        return not any(positive(p, value) for p in values)
    return any(_MATCHERS[base](p, value) for p in values)


def condition_holds(name: str, key: str, values: tuple[str, ...], context: Context) -> bool:
    """One operator / key / values triple of a ``Condition`` block, against ``context``."""
    qualifier, base, if_exists = _parse_operator(name)
    present = context.get(key.lower())
    if base == "Null":
        wants_absent = any(v.lower() == "true" for v in values)
        return (present is None or present == ()) == wants_absent
    if not present:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or base in _NEGATED
    if qualifier == "ForAllValues":
        return all(_value_matches(base, values, v) for v in present)
    return any(_value_matches(base, values, v) for v in present)


def conditions_hold(conditions: Mapping[str, Mapping[str, tuple[str, ...]]], context: Context) -> bool:
    """A whole ``Condition`` block: every operator, every key (AND); values within a key OR."""
    return all(
        condition_holds(name, key, values, context)
        for name, keys in conditions.items()
        for key, values in keys.items()
    )
