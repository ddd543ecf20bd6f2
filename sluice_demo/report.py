"""The lifecycle report: one self-contained HTML page (inline PNG plots, no external resources).

What a reader sees first: the person's decision on M2, M1 against M2 on the same holdout, and
four plots (traffic share per version over time, drift share per window, M1 against M2 on each
metric, the canary's steps). The raw figures of every step follow, folded, for whoever wants them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sluice_demo.story import Comparison, Decision, Timeline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sluice_demo.lifecycle import Step

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}table{border-collapse:collapse}"
    "td.n{text-align:right}pre{margin:0;font-size:.8em}figure{margin:1.5em 0}"
    "figcaption{font-size:.85em;color:#555;max-width:48em}.verdict{padding:.6em 1em;border-left:4px solid}"
    ".better{border-color:#2ca02c;background:#eef8ee}.hold{border-color:#ff7f0e;background:#fff4e8}"
    "details{margin-top:2em}summary{cursor:pointer;font-weight:bold}"
)


def lifecycle_html(
    steps: Sequence[Step],
    elapsed: float,
    drift_report: Path | None,
    *,
    timeline: Timeline,
    comparison: Comparison | None = None,
    decision: Decision | None = None,
) -> str:
    """The page; ``comparison`` and ``decision`` are missing only when the lifecycle stopped early."""
    link = (
        f"<p>Drift report: <a href='{drift_report.name}'>{drift_report.name}</a></p>" if drift_report else ""
    )
    verdict = ""
    if decision is not None:
        kind = "better" if decision.promote else "hold"
        verdict = f"<p class='verdict {kind}'><b>Decision on M2:</b> {html.escape(decision.verdict)}.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Sluice lifecycle</title>"
        f"<style>{_CSS}</style></head><body><h1>Sluice lifecycle</h1>"
        f"<p>Eight steps from M1 to M2 beside it, {elapsed:.0f} s on the embedded local AWS.</p>{verdict}"
        f"{_comparison_table(comparison)}<h2>Plots</h2>{''.join(_figures(timeline, comparison))}"
        f"{_steps_table(steps)}{link}"
        "<details><summary>Raw figures of each step (JSON)</summary>"
        f"<table><tr><th>#</th><th>step</th><th>figures</th><th>time</th></tr>{_raw_rows(steps)}</table>"
        "</details></body></html>"
    )


def _comparison_table(comparison: Comparison | None) -> str:
    if comparison is None:
        return ""
    one, two = comparison.champion_version, comparison.challenger_version
    rows = "".join(
        f"<tr><td>{html.escape(m)}{' (primary)' if m == comparison.primary_metric else ''}</td>"
        f"<td class='n'>{comparison.champion[m]:.4f}</td><td class='n'>{comparison.challenger[m]:.4f}</td>"
        f"<td class='n'>{comparison.challenger[m] - comparison.champion[m]:+.4f}</td></tr>"
        for m in comparison.metrics
    )
    return (
        f"<h2>M1 against M2 on the same holdout</h2><p>Both scored on {html.escape(comparison.holdout())}"
        f" by the retraining run: on {html.escape(comparison.primary_metric)} M2 is "
        f"<b>{comparison.verdict}</b>.</p><table><tr><th>metric</th><th>M1 (v{one})</th>"
        f"<th>M2 (v{two})</th><th>M2 &minus; M1</th></tr>{rows}</table>"
    )


def _steps_table(steps: Sequence[Step]) -> str:
    rows = "".join(
        f"<tr><td>{s.number}</td><td>{html.escape(s.title)}</td><td class='n'>{s.seconds:.1f} s</td></tr>"
        for s in steps
    )
    return f"<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>time</th></tr>{rows}</table>"


def _raw_rows(steps: Sequence[Step]) -> str:
    return "".join(
        f"<tr><td>{s.number}</td><td>{html.escape(s.title)}</td><td><pre>"
        f"{html.escape(json.dumps(s.figures, indent=1, default=str))}</pre></td><td>{s.seconds:.1f} s</td></tr>"
        for s in steps
    )


def _figures(timeline: Timeline, comparison: Comparison | None) -> list[str]:
    from sluice_demo import plots

    shown: list[tuple[str, Callable[[], Figure] | None, str]] = [
        (
            "Traffic share per version over time",
            lambda: plots.traffic_plot(timeline),
            "Lines: the live alias's weight of each version; dots: the share each version actually "
            "served, per run of about 50 consecutive requests. Grey and white bands are the steps, numbered.",
        ),
        (
            "Drift share per window",
            lambda: plots.drift_plot(timeline),
            "The share of features the drift job found drifting in each window it checked, "
            "against the alarm's threshold; drifting features named above each bar.",
        ),
        (
            "M1 against M2 on each metric",
            (lambda: plots.metrics_plot(comparison)) if comparison is not None else None,
            "Both versions scored on the same holdout rows by the retraining run (its comparison.json).",
        ),
        (
            "The canary's steps",
            lambda: plots.canary_plot(timeline),
            "M2's weight at each step of its rollout and its health there (requests, error rate, "
            "predicted positives); hatched steps were not run.",
        ),
    ]
    return [_figure(title, draw, caption) for title, draw, caption in shown]


def _figure(title: str, draw: Callable[[], Figure] | None, caption: str) -> str:
    from sluice_demo.plots import png_base64

    if draw is None:
        return f"<figure><figcaption><b>{html.escape(title)}</b>: not reached.</figcaption></figure>"
    image = png_base64(draw())
    return (
        f"<figure><img alt='{html.escape(title, quote=True)}' src='data:image/png;base64,{image}'>"
        f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>"
    )
