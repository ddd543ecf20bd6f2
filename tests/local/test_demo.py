"""``sluice demo``: the eight lifecycle steps on the embedded local AWS, with their reports.

Also how the demo plugs into the runtime's ``sluice`` command: entry points, never imports; and,
without the local AWS, how step 8 follows the comparison of M1 and M2 (both branches, on stubs).
"""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws


@pytest.fixture(scope="module")
def demo(assembly_dir, tmp_path_factory):
    from sluice.cli import main

    out = tmp_path_factory.mktemp("demo-out")
    state = tmp_path_factory.mktemp("demo-state")
    argv = ["demo", "--assembly", str(assembly_dir), "--out", str(out), "--state-dir", str(state)]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = main([*argv, "--rows", "2000", "--requests", "120", "--split-requests", "400"])
    return code, out, console.getvalue()


def _figures(out) -> dict[int, dict]:
    html = (out / "lifecycle.html").read_text()
    raw = html[html.index("<details>") :]  # the raw figures are folded below the plots
    cells = re.findall(r"<tr><td>(\d)</td><td>[^<]*</td><td><pre>(.*?)</pre>", raw, re.S)
    return {int(n): json.loads(html_lib.unescape(body)) for n, body in cells}


def _png_images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", html)]


def test_demo_runs_the_eight_steps(demo):
    code, out, _ = demo
    assert code == 0
    figures = _figures(out)
    assert sorted(figures) == list(range(1, 9))
    # 1-3: M1 trained by the pipeline, approved, serving all traffic
    assert figures[1]["version"] == 1 and figures[1]["metrics_own_holdout"]["f1"] > 0.5
    assert figures[2]["status"] == "Approved" and figures[2]["artifacts"] >= 7
    assert figures[3]["routes"] == {"v1": 1.0}
    # 4-5: no drift between training and test partitions; every request captured
    assert figures[4]["dataset_drift_share"] == [0.0]
    assert figures[5]["captured"]["rows"] == figures[5]["captured"]["sent"] > 0
    assert figures[5]["captured"]["request_ids_match"] is True
    # 6-7: injected drift raised the alarm and retraining registered M2, pending, child of M1
    assert figures[6]["dataset_drift_share"][0] > 0
    assert figures[6]["alarm"].endswith("drift-share")
    assert (figures[7]["version"], figures[7]["status"], figures[7]["parent"]) == (
        2,
        "PendingManualApproval",
        1,
    )
    # ... and compared with M1 on the same holdout, per metric
    same = figures[7]["same_holdout"]
    assert same["holdout_rows"] > 0 and {"f1", "accuracy", "roc_auc"} <= set(same)
    assert all(set(same[m]) == {"v1", "v2"} for m in ("f1", "accuracy", "roc_auc"))
    assert figures[7]["m2_better"] == (same["f1"]["v2"] > same["f1"]["v1"])
    # 8: 10 % beside M1 whatever the comparison says
    assert figures[8]["split"] == {"v1": 0.9, "v2": 0.1}
    assert 0.03 <= figures[8]["observed_share_m2"] <= 0.2
    assert set(figures[8]["side_by_side"]) == {"v1", "v2"}
    if figures[7]["m2_better"]:
        # a canary that promoted M2, and the promotion to prod ...
        assert figures[8]["canary"] == "promoted" and figures[8]["routes"] == {"v2": 1.0}
        assert figures[8]["prod"]["from"]["version"] == 2
        # ... into the prod account of cdk.json, not beside the dev registry
        context = json.loads(Path("cdk.json").read_text())["context"]
        assert figures[8]["prod"]["to"]["account"] == context["prod:account"]
        assert figures[8]["prod"]["from"]["account"] == context["dev:account"] != context["prod:account"]
        # ... pulled by prod, then approved there by a prod approver, not by the pull
        assert figures[8]["prod"]["to"]["status"] == "Approved"
        assert "sluice-prod-approver" in figures[8]["prod"]["to"]["approved_by"]
    else:
        # M2 stays at 10 % beside M1: no canary, nothing in prod
        assert "canary" not in figures[8] and figures[8]["routes"] == {"v1": 0.9, "v2": 0.1}
        assert figures[8]["prod"].startswith("not promoted")
        assert "not better" in figures[8]["decision"]


def test_the_summary_compares_m1_and_m2_on_the_same_holdout(demo):
    _, out, console = demo
    same = _figures(out)[7]["same_holdout"]
    # Given the summary the demo printed
    summary = console[console.index("M1 vs M2 on the same holdout") :]
    assert f"{same['holdout_rows']:,} holdout rows" in " ".join(summary.split())
    # Then each metric's row holds both versions' values on that holdout
    for metric in ("f1", "accuracy", "roc_auc"):
        row = next(line for line in summary.splitlines() if re.search(rf"\b{metric}\b", line))
        values = [float(v) for v in re.findall(r"[-+]?\d\.\d{4}", row)]
        assert values[:2] == pytest.approx([same[metric]["v1"], same[metric]["v2"]], abs=1e-4)
    verdict = "better" if _figures(out)[7]["m2_better"] else "not better"
    assert f"M2 is {verdict} than M1" in summary
    # and the page's table says the same
    html = (out / "lifecycle.html").read_text()
    assert "M1 against M2 on the same holdout" in html and f"<b>{verdict}</b>" in html


def test_lifecycle_html_shows_four_plots_before_the_raw_figures(demo):
    _, out, _ = demo
    html = (out / "lifecycle.html").read_text()
    images = _png_images(html)
    assert len(images) >= 4
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 5_000 for image in images)
    for title in ("Traffic share per version", "Drift share per window", "M1 against M2", "canary's steps"):
        assert title in html_lib.unescape(html)
    # the raw JSON is folded away below the plots, not the page's main content
    assert html.index("<img") < html.index("<details>") < html.index("<pre>")


def test_demo_writes_the_drift_report(demo):
    _, out, _ = demo
    report = (out / "drift-report.html").read_text()
    assert "<img" in report and "income" in report


def test_the_demo_and_the_emulator_plug_into_the_sluice_command():
    from sluice.cli import build_parser
    from sluice.cli.plugins import installed_command_groups, load_dataset
    from sluice_demo.datasets import CREDIT

    # Given the editable install's entry points (pyproject.toml)
    entries = {entry.name: entry.value for entry in installed_command_groups()}
    assert entries == {"demo": "sluice_demo.cli:add_parser", "local": "localaws.cli:add_parser"}
    # Then `sluice demo` and `sluice local` are commands, and `--dataset credit` is the demo's data
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "local", "models"} <= set(commands)
    assert load_dataset("credit") is CREDIT
    assert CREDIT.target == "default" and CREDIT.categorical == ("region", "product")


def test_an_unknown_generated_dataset_is_one_line_and_exit_2(monkeypatch, capsys):
    from sluice.cli import main

    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "registry")
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "artifacts")
    with mock_aws():
        code = main(["models", "register", "m", "--dataset", "nope", "--no-onnx"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "sluice: error: --dataset nope: no such generated dataset (installed: credit)"
    ]


# -- step 8 follows the comparison: both branches on stubs, without the local AWS ---------------


@dataclass
class FakeEndpoint:
    """The parts of ``EndpointTraffic`` step 8 uses, on an in-memory alias; the canary is the real one."""

    weights: dict[int, float] = field(default_factory=lambda: {1: 1.0})
    calls: list[tuple[str, Any]] = field(default_factory=list)
    sleep: Any = None

    def deploy(self, version):
        self.calls.append(("deploy", version))

    def shift(self, version, weight, *, kind="traffic"):
        self.calls.append(("shift", weight))
        primary = max((v for v in self.weights if v != version), default=version)
        self.weights.clear()
        self.weights.update({primary: round(1 - weight, 6), version: weight})

    def promote(self, version):
        self.calls.append(("promote", version))
        self.weights.clear()
        self.weights[version] = 1.0

    def rollback(self):
        self.calls.append(("rollback", None))

    def routes(self):
        from sluice.serving.traffic import Route

        return [Route(str(v), v, "sklearn", w) for v, w in sorted(self.weights.items())]

    def lambda_version_of(self, version):
        return str(version)

    def health(self, version, *, start, end=None):
        from sluice.serving.canary import Health

        return Health(version, invocations=50, rows=50, positive_probability=0.4, predicted_positive=20)

    def canary(self, version, *, steps, interval_s, on_step=None):
        from sluice.serving.canary import run_canary

        self.calls.append(("canary", tuple(steps)))
        return run_canary(
            self, version, steps=steps, interval_s=interval_s, on_step=on_step, sleep=self.sleep
        )


class FakeRegistry:
    def __init__(self):
        self.approvals: list[tuple[int, str]] = []

    def approve(self, name, version, *, actor, reason=""):
        self.approvals.append((version, reason))


def _stub_lifecycle(m1_f1: float, m2_f1: float):
    """A lifecycle at step 8, after a retraining whose comparison gave M1 and M2 these F1 scores."""
    from sluice_demo.datasets import credit
    from sluice_demo.lifecycle import Lifecycle, Stage
    from sluice_demo.story import Comparison, decide

    stage = Stage(*(["x"] * 9), alarm_names=["alarm"])
    lifecycle = Lifecycle(stage, split_requests=200)
    endpoint = FakeEndpoint()
    lifecycle.registry = FakeRegistry()  # type: ignore[assignment]
    lifecycle.m1, lifecycle.m2 = 1, 2
    lifecycle.shifted = credit(400, seed=7)
    lifecycle.comparison = Comparison.from_report(
        {
            "primary_metric": "f1",
            "champion": {"f1": m1_f1, "accuracy": 0.8},
            "challenger": {"f1": m2_f1, "accuracy": 0.8},
            "challenger_better": m2_f1 > m1_f1,
            "parent_version": 1,
            "holdout_rows": 400,
        },
        challenger_version=2,
    )
    lifecycle.decision = decide(lifecycle.comparison)
    promoted: list[int] = []

    def traffic(**kwargs):
        endpoint.sleep = kwargs.get("sleep", lambda seconds: None)
        return endpoint

    def score(frame, *, batch=1):
        # every request goes to the versions in proportion to the alias's weights
        m2_every = round(1 / endpoint.weights[2]) if endpoint.weights.get(2) else 0
        responses = [
            {"version": 2 if m2_every and i % m2_every == 0 else 1, "predictions": [int(i % 3 == 0)]}
            for i in range(len(frame))
        ]
        for response in responses:
            lifecycle.timeline.serve(response["version"])
        return responses, [0.01] * len(responses)

    lifecycle._traffic = traffic  # type: ignore[method-assign]
    lifecycle._score = score  # type: ignore[method-assign]
    lifecycle._promote = lambda registry: promoted.append(2) or {"to": "prod"}  # type: ignore[method-assign]
    return lifecycle, endpoint, promoted


def _run_step_8(lifecycle):
    from sluice_demo.lifecycle import Step

    step = Step(8, lifecycle.decision.title)
    lifecycle._approve_and_shift(step)
    return step.figures


def test_when_m2_is_not_better_it_stays_at_10_percent_beside_m1_and_is_not_promoted():
    # Given a comparison on one holdout in which M2 scores below M1
    lifecycle, endpoint, promoted = _stub_lifecycle(m1_f1=0.72, m2_f1=0.70)
    # When the person acts on it in step 8
    figures = _run_step_8(lifecycle)
    # Then the demo says so, runs M2 at 10 % beside M1, and goes no further
    assert "not better" in figures["decision"] and "not promoted" in lifecycle.decision.title
    assert [c for c, _ in endpoint.calls] == ["deploy", "shift"] and endpoint.calls[1] == ("shift", 0.1)
    assert figures["routes"] == figures["split"] == {"v1": 0.9, "v2": 0.1}
    assert (
        figures["side_by_side"]["v2"]["requests"] == 20 and figures["side_by_side"]["v1"]["requests"] == 180
    )
    assert promoted == [] and figures["prod"].startswith("not promoted")
    # the approval that lets M2 run beside M1 records why it goes no further
    assert lifecycle.registry.approvals == [(2, lifecycle.decision.reason)]
    assert "not better" in lifecycle.decision.reason and "10 % trial only" in lifecycle.decision.reason
    # the canary plot shows the steps that did not run
    assert [(s["weight"], s["ran"]) for s in lifecycle.timeline.canary] == [
        (0.1, True),
        (0.25, False),
        (0.5, False),
        (1.0, False),
    ]


def test_when_m2_is_better_the_canary_takes_it_to_all_traffic_and_prod():
    # Given a comparison on one holdout in which M2 scores above M1
    lifecycle, endpoint, promoted = _stub_lifecycle(m1_f1=0.70, m2_f1=0.72)
    # When the person acts on it in step 8
    figures = _run_step_8(lifecycle)
    # Then 10 % beside M1 first, then the canary's 25 % and 50 %, then all traffic and prod
    assert "is better" in figures["decision"]
    assert ("canary", (0.25, 0.5)) in endpoint.calls and ("promote", 2) in endpoint.calls
    assert [w for c, w in endpoint.calls if c == "shift"] == [0.1, 0.25, 0.5]
    assert figures["split"] == {"v1": 0.9, "v2": 0.1} and figures["routes"] == {"v2": 1.0}
    assert figures["canary"] == "promoted" and promoted == [2] and figures["prod"] == {"to": "prod"}
    assert [(s["weight"], s["ran"]) for s in lifecycle.timeline.canary] == [
        (0.1, True),
        (0.25, True),
        (0.5, True),
        (1.0, True),
    ]
    # the traffic timeline saw every weight M2 had
    assert [routes.get("v2", 0.0) for _, routes in lifecycle.timeline.routes] == [0.1, 0.25, 0.5, 1.0]


@pytest.mark.parametrize(("m1_f1", "m2_f1"), [(0.72, 0.70), (0.70, 0.72)])
def test_the_page_has_four_plots_in_either_branch(m1_f1, m2_f1):
    from sluice_demo.report import lifecycle_html

    lifecycle, _, _ = _stub_lifecycle(m1_f1, m2_f1)
    lifecycle.timeline.route({"v1": 1.0})
    lifecycle.timeline.drift_window(
        4, "test partition", [{"version": 1, "rows": 100, "dataset_drift_share": 0.0}]
    )
    lifecycle.timeline.drift_window(6, "shifted", [{"version": 1, "rows": 300, "dataset_drift_share": 0.2}])
    lifecycle.timeline.alarm_threshold = 0.0
    _run_step_8(lifecycle)
    html = lifecycle_html(
        [],
        1.0,
        None,
        timeline=lifecycle.timeline,
        comparison=lifecycle.comparison,
        decision=lifecycle.decision,
    )
    assert len(_png_images(html)) == 4
    assert lifecycle.decision.verdict in html.replace("&#x27;", "'")


def test_the_lifecycle_plots_keep_their_legends_off_the_data():
    from sluice_demo import plots

    lifecycle, _, _ = _stub_lifecycle(0.70, 0.72)
    lifecycle.timeline.route({"v1": 1.0})
    lifecycle.timeline.drift_window(6, "shifted", [{"version": 1, "rows": 300, "dataset_drift_share": 0.2}])
    lifecycle.timeline.alarm_threshold = 0.1
    _run_step_8(lifecycle)
    for fig in (
        plots.traffic_plot(lifecycle.timeline),
        plots.drift_plot(lifecycle.timeline),
        plots.metrics_plot(lifecycle.comparison),
        plots.canary_plot(lifecycle.timeline),
    ):
        fig.draw_without_rendering()
        ax = fig.axes[0]
        assert ax.get_legend() is not None
        assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1
