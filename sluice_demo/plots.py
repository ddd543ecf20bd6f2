"""The lifecycle report's four plots, drawn from what the lifecycle recorded.

Each function returns a matplotlib :class:`~matplotlib.figure.Figure` (Agg, no pyplot state);
:func:`png_base64` turns one into the inline image of the self-contained page. Legends sit
outside the plotting area so they never hide a bar or a line.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from matplotlib.figure import Figure

from sluice_demo.story import Comparison, Timeline

# One colour per model version, the same in every plot: M1 blue, M2 orange.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
_WIDTH, _HEIGHT, _DPI = 7.5, 3.4, 96


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(_WIDTH, _HEIGHT), dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot()


def _colour(version: str, versions: list[str]) -> str:
    return COLOURS[versions.index(version) % len(COLOURS)] if version in versions else "#777777"


def _legend_above(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), fontsize=8, frameon=False, **kwargs)


def _versions(timeline: Timeline) -> list[str]:
    seen = [v for _, routes in timeline.routes for v in routes] + [v for _, v in timeline.served]
    return sorted(set(seen), key=lambda v: (len(v), v))


def traffic_plot(timeline: Timeline, *, chunk: int = 50) -> Figure:
    """Each version's share of traffic over time: the alias weights (lines) and what served (dots).

    Dots are the observed share of each run of about ``chunk`` consecutive requests served under
    one set of weights (:func:`_runs`), at their mean time.
    """
    fig, ax = _figure()
    versions = _versions(timeline)
    end = max([t for t, _ in timeline.served] + [t for t, _ in timeline.routes] + [timeline.now()])
    for version in versions:
        colour = _colour(version, versions)
        times = [t for t, _ in timeline.routes] + [end]
        weights = [routes.get(version, 0.0) for _, routes in timeline.routes]
        if weights:
            ax.step(times, [*weights, weights[-1]], where="post", color=colour, label=f"{version} weight")
        points = _runs(timeline, chunk)
        xs = [sum(t for t, _ in p) / len(p) for p in points]
        ys = [sum(1 for _, v in p if v == version) / len(p) for p in points]
        ax.plot(
            xs, ys, "o", ms=3.5, color=colour, alpha=0.7, label=f"{version} served ({chunk}-request runs)"
        )
    _step_bands(ax, timeline, end)
    ax.set_ylim(-0.03, 1.12)
    ax.set_xlim(0, end * 1.01 if end else 1)
    ax.set_xlabel("seconds since the lifecycle started (bands: steps 1 to 8)")
    ax.set_ylabel("share of traffic")
    ax.yaxis.set_major_formatter(lambda y, _: f"{y:.0%}")
    _legend_above(ax, ncols=2)
    return fig


def _runs(timeline: Timeline, chunk: int) -> list[list[tuple[float, str]]]:
    """The served requests cut at every change of weights, then into runs of ``chunk``.

    A run shorter than half a chunk joins the one before it, so no dot stands for a handful of requests.
    """
    changes = [t for t, _ in timeline.routes]
    segments: dict[int, list[tuple[float, str]]] = {}
    for served in timeline.served:
        segments.setdefault(sum(1 for t in changes if t <= served[0]), []).append(served)
    runs: list[list[tuple[float, str]]] = []
    for segment in segments.values():
        pieces = [segment[i : i + chunk] for i in range(0, len(segment), chunk)]
        if len(pieces) > 1 and len(pieces[-1]) < chunk / 2:
            tail = pieces.pop()
            pieces[-1] = pieces[-1] + tail
        runs += pieces
    return runs


def _step_bands(ax: Any, timeline: Timeline, end: float) -> None:
    """Alternating bands for the steps, numbered where a band is wide enough to hold its number."""
    starts = timeline.step_starts
    for i, (number, start) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else end
        if i % 2 == 0:
            ax.axvspan(start, stop, color="#f0f0f0", zorder=0, lw=0)
        if end and (stop - start) / end >= 0.025:
            ax.text((start + stop) / 2, 1.06, str(number), fontsize=7, color="#555555", ha="center")


def drift_plot(timeline: Timeline) -> Figure:
    """The dataset drift share of each window the drift job checked, against the alarm threshold."""
    fig, ax = _figure()
    windows = timeline.drift
    threshold = timeline.alarm_threshold
    shares = [float(w["share"] or 0.0) for w in windows]
    labels = [f"step {w['step']}: {w['window']}\nv{w['version']}, {w['rows'] or 0:,} rows" for w in windows]
    colours = ["#d62728" if threshold is not None and s > threshold else "#2ca02c" for s in shares]
    bars = ax.bar(range(len(windows)), shares, 0.5, color=colours)
    for bar, window in zip(bars, windows, strict=True):
        drifted = ", ".join(window["drifted"]) or "no feature drifts"
        ax.annotate(
            f"{bar.get_height():.2f}\n{drifted}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    if threshold is not None:
        ax.axhline(
            threshold, color="#d62728", ls="--", lw=1.5, zorder=3, label=f"alarm when above {threshold:g}"
        )
    ax.set_xticks(range(len(windows)), labels, fontsize=8)
    ax.set_ylim(0, max([*shares, threshold or 0.0, 0.1]) * 1.45)
    ax.set_ylabel("share of features drifting")
    _legend_above(ax)
    return fig


def metrics_plot(comparison: Comparison) -> Figure:
    """M1 against M2 on each metric, both scored on the same holdout rows."""
    fig, ax = _figure()
    metrics = comparison.metrics
    one, two = f"v{comparison.champion_version}", f"v{comparison.challenger_version}"
    width = 0.38
    for offset, name, values, colour in (
        (-width / 2, f"M1 ({one})", comparison.champion, COLOURS[0]),
        (width / 2, f"M2 ({two})", comparison.challenger, COLOURS[1]),
    ):
        bars = ax.bar([i + offset for i in range(len(metrics))], [values[m] for m in metrics], width)
        for bar in bars:
            bar.set_color(colour)
        bars.set_label(name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    names = [f"{m} (primary)" if m == comparison.primary_metric else m for m in metrics]
    ax.set_xticks(range(len(metrics)), names)
    top = max([*comparison.champion.values(), *comparison.challenger.values(), 1.0])
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("value on the holdout")
    fig.suptitle(f"{comparison.holdout()}: M2 is {comparison.verdict}", fontsize=9)
    _legend_above(ax, ncols=2)
    return fig


def canary_plot(timeline: Timeline) -> Figure:
    """M2's weight at each step of its rollout, what it served there, and the steps never run."""
    fig, ax = _figure()
    steps = timeline.canary
    labelled: set[str] = set()
    for i, step in enumerate(steps):
        style: dict[str, Any] = (
            {"color": COLOURS[1]}
            if step["ran"]
            else {"color": "white", "edgecolor": "#999999", "hatch": "//", "linestyle": "--"}
        )
        label = "run" if step["ran"] else "not run"
        ax.bar(i, step["weight"], 0.6, label=None if label in labelled else label, **style)
        labelled.add(label)
        ax.annotate(
            _canary_note(step),
            (i, step["weight"]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(steps)), [_canary_label(s) for s in steps], fontsize=8)
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("M2's weight on the alias")
    ax.yaxis.set_major_formatter(lambda y, _: f"{y:.0%}")
    _legend_above(ax, ncols=2)
    return fig


def _canary_label(step: dict[str, Any]) -> str:
    weight = f"{step['weight']:.0%}"
    if step["weight"] >= 1.0:
        return f"{weight}\n(promoted)" if step["ran"] else f"{weight}\n(promotion)"
    return f"{weight}\n({step['note']})" if step["note"] == "beside M1" else weight


def _canary_note(step: dict[str, Any]) -> str:
    """The text above a step's bar: why it did not run, or what M2 served there."""
    note = "" if step["note"] in ("beside M1", "promoted") else step["note"]
    health = step.get("health")
    if not step["ran"] or not health:
        return note.replace(": ", ":\n", 1)
    positive = health.get("positive_rate")
    lines = [f"{health.get('invocations', 0):g} requests", f"errors {health.get('error_rate', 0.0):.0%}"]
    if positive is not None:
        lines.append(f"positive {positive:.0%}")
    return "\n".join([*lines, note] if note else lines)
