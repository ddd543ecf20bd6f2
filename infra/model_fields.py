"""The optional fields of a model entry (``sluice:models``) and their parsers.

Each parser takes the JSON value and returns the :class:`infra.config.ModelConfig` attribute's
value, or raises ``ValueError`` with what the value must be; :mod:`infra.config` turns that into
a one-line error naming the key, the model and the field. ``project`` is listed here too, but
checked by :mod:`infra.model_projects` (it reads the project folder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any


def _integer(low: int, high: int) -> Callable[[Any], Any]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return parse


def _number(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], Any]:
    what = f"a number {'above' if open_low else 'from'} {low:g} {'up to' if open_low else 'to'} {high:g}"

    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(what)
        if not (low < value <= high if open_low else low <= value <= high):
            raise ValueError(what)
        return float(value)

    return parse


def _or_none(parse: Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    """``parse``, or ``None`` for ``"none"`` (CDK context drops a JSON null inside an object)."""

    def parse_or_none(value: Any) -> Any:
        if value is None or value == "none":
            return None
        try:
            return parse(value)
        except ValueError:
            raise ValueError(what) from None

    return parse_or_none


def _flavour(value: Any) -> str:
    if value not in ("zip", "container"):
        raise ValueError("'zip' or 'container'")
    return str(value)


def _bounds(value: Any) -> tuple[float, float]:
    what = "[low, high] with 0 <= low < high <= 1"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(what)
    low, high = (_number(0, 1)(v) for v in value)
    if not low < high:
        raise ValueError(what)
    return low, high


def _per_feature(value: Any) -> tuple[tuple[str, float], ...]:
    what = "an object of feature: PSI above 0 up to 10"
    if not isinstance(value, dict):
        raise ValueError(what)
    try:
        return tuple((str(k), _number(0, 10, open_low=True)(v)) for k, v in value.items())
    except ValueError:
        raise ValueError(what) from None


def _m_of_n(value: Any) -> tuple[int, int]:
    what = "[M, N]: alarm when M of the last N datapoints breach, 1 <= M <= N <= 10"
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not 1 <= value[0] <= value[1] <= 10
    ):
        raise ValueError(what)
    return int(value[0]), int(value[1])


def _training_compute(value: Any) -> str:
    if value not in TRAINING_COMPUTE:
        raise ValueError(" or ".join(repr(v) for v in TRAINING_COMPUTE))
    return str(value)


TRAINING_COMPUTE = ("lambda", "fargate", "sagemaker")


def _project(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("the path of a model project folder, relative to cdk.json")
    return value.strip()


#: The optional fields of a model entry: context field → (:class:`ModelConfig` attribute, parser).
MODEL_FIELDS: Mapping[str, tuple[str, Callable[[Any], Any]]] = MappingProxyType(
    {
        "flavour": ("flavour", _flavour),
        "memoryMb": ("memory_mb", _integer(128, 10240)),
        "errorThreshold": ("error_threshold", _integer(1, 100_000)),
        "latencyP99Ms": ("latency_p99_ms", _integer(1, 60_000)),
        "qualityBounds": ("quality_bounds", _bounds),
        "rateLimit": ("rate_limit", _integer(1, 10_000)),
        "burstLimit": ("burst_limit", _integer(1, 5_000)),
        "batchSchedule": (
            "batch_schedule_days",
            _or_none(_integer(1, 365), "a number of days from 1 to 365, or 'none' for no schedule"),
        ),
        "driftRateMinutes": ("drift_rate_minutes", _integer(1, 1440)),
        "driftWindowMinutes": (
            "drift_window_minutes",
            _or_none(_integer(1, 10_080), "minutes from 1 to 10080, or 'none' for the rate"),
        ),
        "psiTolerance": ("psi_tolerance", _number(0, 10, open_low=True)),
        "featurePsiTolerance": ("feature_psi_tolerance", _per_feature),
        "shareTolerance": ("share_tolerance", _number(0, 1)),
        "qualityRateMinutes": ("quality_rate_minutes", _integer(1, 1440)),
        "qualityWindowMinutes": ("quality_window_minutes", _integer(1, 43_200)),
        "qualityMinEffect": ("quality_min_effect", _number(0, 0.5)),
        "featureAlarmDatapoints": ("feature_alarm_datapoints", _m_of_n),
        "trainingCompute": ("training_compute", _training_compute),
        "project": ("project", _project),
    }
)
