"""What the lifecycle learns as it runs, for the person's decision, the summary and the plots.

:class:`Comparison` is M1 against M2 on the same holdout: the retraining run's own comparison
(``reports/comparison.json`` among M2's artifacts). :func:`decide` is the person's approval,
which follows it: M2 goes on to the canary and prod only when it is better there.
:class:`Timeline` records, as the steps run, the traffic weights, the versions that served each
request, the drift windows and the canary's steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CANARY_STEPS = (0.25, 0.5)  # M2's weights after the 10 % split, before it takes all traffic
TRIAL_WEIGHT = 0.1  # M2's share beside M1 before anything else is decided


@dataclass(frozen=True)
class Comparison:
    """M1 (the champion) and M2 (the challenger) scored on the same holdout rows."""

    champion_version: int
    challenger_version: int
    primary_metric: str
    champion: dict[str, float]
    challenger: dict[str, float]
    better: bool | None
    holdout_rows: int
    run_id: str = ""

    @classmethod
    def from_report(cls, report: dict[str, Any], *, challenger_version: int) -> Comparison:
        """From a retraining run's ``comparison.json`` (:func:`sluice.pipelines.retraining_report.compare`)."""
        return cls(
            champion_version=int(report["parent_version"]),
            challenger_version=challenger_version,
            primary_metric=str(report["primary_metric"]),
            champion={k: float(v) for k, v in report["champion"].items()},
            challenger={k: float(v) for k, v in report["challenger"].items()},
            better=report.get("challenger_better"),
            holdout_rows=int(report.get("holdout_rows", 0)),
            run_id=str(report.get("run_id", "")),
        )

    @property
    def metrics(self) -> list[str]:
        """The metrics both models were scored on, the primary one first."""
        shared = sorted(set(self.champion) & set(self.challenger))
        return sorted(shared, key=lambda name: name != self.primary_metric)

    @property
    def verdict(self) -> str:
        return {True: "better", False: "not better", None: "not comparable"}[self.better]

    def holdout(self) -> str:
        """Which rows, in words: ``400 rows of the newest data (retraining run r-1)``."""
        run = f" (retraining run {self.run_id})" if self.run_id else ""
        return f"{self.holdout_rows:,} holdout rows of the newest data{run}"

    def figures(self) -> dict[str, Any]:
        """Per metric both versions' values, as the step's figures show them."""
        one, two = f"v{self.champion_version}", f"v{self.challenger_version}"
        return {
            "holdout_rows": self.holdout_rows,
            **{m: {one: round(self.champion[m], 4), two: round(self.challenger[m], 4)} for m in self.metrics},
        }


@dataclass(frozen=True)
class Decision:
    """The person's call on M2 after reading the comparison."""

    promote: bool
    reason: str  # recorded with the approval, in the registry's audit log
    verdict: str  # what the demo says
    title: str  # step 8's title


def decide(comparison: Comparison) -> Decision:
    """Approve M2 for the canary and prod only if it is better than M1 on the same holdout.

    Otherwise M2 is still approved, but only to run at 10 % beside M1 where both can be watched
    on live traffic; it is neither shifted further nor promoted.
    """
    metric = comparison.primary_metric
    one, two = comparison.champion_version, comparison.challenger_version
    figures = f"{metric} v{one} {comparison.champion.get(metric, float('nan')):.3f}"
    figures += f" vs v{two} {comparison.challenger.get(metric, float('nan')):.3f}"
    if comparison.better:
        return Decision(
            promote=True,
            reason=f"demo: better than v{one} on the same holdout ({figures})",
            verdict=f"M2 is better than M1 on the same holdout ({figures}): canary, then prod",
            title="Approve M2, 10 % beside M1, canary, promote",
        )
    return Decision(
        promote=False,
        reason=f"demo: {comparison.verdict} than v{one} on the same holdout ({figures}); 10 % trial only",
        verdict=(
            f"M2 is {comparison.verdict} than M1 on the same holdout ({figures}): "
            "it runs at 10 % beside M1 and is not promoted"
        ),
        title="M2 not better: 10 % beside M1, not promoted",
    )


@dataclass
class Timeline:
    """What happened when, in seconds since the lifecycle started (for the lifecycle report's plots)."""

    started: float = field(default_factory=time.perf_counter)
    step_starts: list[tuple[int, float]] = field(default_factory=list)
    routes: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    served: list[tuple[float, str]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    canary: list[dict[str, Any]] = field(default_factory=list)
    alarm_threshold: float | None = None

    def now(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def step(self, number: int) -> None:
        self.step_starts.append((number, self.now()))

    def route(self, routes: dict[str, float]) -> None:
        """The alias's weights per version (``{"v1": 0.9, "v2": 0.1}``) from now on."""
        self.routes.append((self.now(), dict(routes)))

    def serve(self, version: Any) -> None:
        self.served.append((self.now(), f"v{version}"))

    def drift_window(self, step: int, label: str, runs: list[dict[str, Any]]) -> None:
        for run in runs:
            self.drift.append(
                {
                    "step": step,
                    "window": label,
                    "version": run.get("version"),
                    "rows": run.get("rows"),
                    "share": run.get("dataset_drift_share"),
                    "drifted": run.get("drifted_features") or [],
                }
            )

    def canary_step(self, weight: float, health: dict[str, Any] | None, *, ran: bool, note: str = "") -> None:
        """One of the canary's steps: M2's ``weight``, its health there, or why it did not run."""
        self.canary.append({"weight": weight, "health": health, "ran": ran, "note": note})


def side_by_side(responses: list[dict[str, Any]], labels: list[Any]) -> dict[str, dict[str, Any]]:
    """Per serving version: its requests, share, predicted-positive rate and accuracy on live rows.

    ``responses`` answer one row each, in the order of ``labels`` (the rows' true classes), so
    both versions are judged on the same stream of traffic, each on the rows it served.
    """
    out: dict[str, dict[str, Any]] = {}
    for response, label in zip(responses, labels, strict=True):
        version = out.setdefault(f"v{response['version']}", {"requests": 0, "positive": 0, "correct": 0})
        prediction = response["predictions"][0]
        version["requests"] += 1
        version["positive"] += int(prediction == 1)
        version["correct"] += int(prediction == label)
    total = max(len(responses), 1)
    return {
        name: {
            "requests": v["requests"],
            "share": round(v["requests"] / total, 3),
            "positive_rate": round(v["positive"] / v["requests"], 3),
            "accuracy": round(v["correct"] / v["requests"], 3),
        }
        for name, v in sorted(out.items())
    }


def trial_health(served: dict[str, Any] | None) -> dict[str, Any] | None:
    """A version's :func:`side_by_side` figures in the form of a canary step's health."""
    if not served:
        return None
    return {"invocations": served["requests"], "error_rate": 0.0, "positive_rate": served["positive_rate"]}
