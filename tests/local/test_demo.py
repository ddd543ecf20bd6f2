"""``sluice demo``: the eight lifecycle steps on the embedded local AWS, with their reports.

Also how the demo plugs into the runtime's ``sluice`` command: entry points, never imports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from moto import mock_aws


@pytest.fixture(scope="module")
def demo(assembly_dir, tmp_path_factory):
    from sluice.cli import main

    out = tmp_path_factory.mktemp("demo-out")
    state = tmp_path_factory.mktemp("demo-state")
    argv = ["demo", "--assembly", str(assembly_dir), "--out", str(out), "--state-dir", str(state)]
    code = main([*argv, "--rows", "2000", "--requests", "120", "--split-requests", "400"])
    return code, out


def _figures(out) -> dict[int, dict]:
    html = (out / "lifecycle.html").read_text()
    cells = re.findall(r"<tr><td>(\d)</td><td>[^<]*</td><td><pre>(.*?)</pre>", html, re.S)
    import html as html_lib

    return {int(n): json.loads(html_lib.unescape(body)) for n, body in cells}


def test_demo_runs_the_eight_steps(demo):
    code, out = demo
    assert code == 0
    figures = _figures(out)
    assert sorted(figures) == list(range(1, 9))
    # 1-3: M1 trained by the pipeline, approved, serving all traffic
    assert figures[1]["version"] == 1 and figures[1]["metrics"]["f1"] > 0.5
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
    # 8: 10 % beside M1, a canary that promoted M2, and the promotion to prod
    assert figures[8]["split"] == {"v1": 0.9, "v2": 0.1}
    assert 0.03 <= figures[8]["observed_share_m2"] <= 0.2
    assert figures[8]["canary"] == "promoted" and figures[8]["routes"] == {"v2": 1.0}
    assert figures[8]["prod"]["from"]["version"] == 2
    # into the prod account of cdk.json, not beside the dev registry
    context = json.loads(Path("cdk.json").read_text())["context"]
    assert figures[8]["prod"]["to"]["account"] == context["prod:account"]
    assert figures[8]["prod"]["from"]["account"] == context["dev:account"] != context["prod:account"]


def test_demo_writes_the_drift_report(demo):
    _, out = demo
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
