"""Which function version an invocation runs: qualifiers, ARNs and an alias's weighted routing."""

from __future__ import annotations

import os
import random
from typing import Any

# Lambda draws each alias invocation's version at random. ``SLUICE_LOCAL_ROUTING_SEED`` makes
# the local draws repeatable (a traffic experiment, a test); :func:`seed_routing` reseeds.
_routing = random.Random()


def seed_routing(seed: str | int | None = None) -> None:
    """Reseed the alias router: with ``seed``, else ``SLUICE_LOCAL_ROUTING_SEED``, else at random."""
    _routing.seed(seed if seed is not None else os.environ.get("SLUICE_LOCAL_ROUTING_SEED"))


def pick_version(primary: str, routing_config: Any) -> str:
    """The version an alias invocation runs: ``RoutingConfig`` weights, the rest to ``primary``."""
    weights = (routing_config or {}).get("AdditionalVersionWeights") or {}
    if isinstance(weights, list):  # CloudFormation shape
        weights = {str(w["FunctionVersion"]): float(w["FunctionWeight"]) for w in weights}
    draw = _routing.random()
    cumulative = 0.0
    for version, weight in weights.items():
        cumulative += float(weight)
        if draw < cumulative:
            return str(version)
    return str(primary)


def split_name(function_name: str) -> tuple[str, str | None]:
    if function_name.startswith("arn:"):
        parts = function_name.split(":")
        # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
        return ":".join(parts[:7]), (parts[7] if len(parts) > 7 else None)
    if ":" in function_name:
        name, _, qualifier = function_name.partition(":")
        return name, qualifier
    return function_name, None
