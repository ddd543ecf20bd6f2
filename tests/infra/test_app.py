"""The CDK app as users run it: `python app.py`, and the idle-cost promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALWAYS_ON = {
    "AWS::EC2::NatGateway",
    "AWS::EC2::Instance",
    "AWS::AutoScaling::AutoScalingGroup",
    "AWS::SageMaker::Endpoint",
    "AWS::RDS::DBInstance",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ECS::Service",
    "AWS::Lambda::EventSourceMapping",
}


def test_no_always_on_compute_or_nat_gateway(templates):
    # Idle cost: nothing in any template bills by the hour while no request arrives
    found = {
        (name, r["Type"])
        for name, t in templates.items()
        for r in t["Resources"].values()
        if r["Type"] in ALWAYS_ON
    }
    assert found == set()
    provisioned = [
        (name, k)
        for name, t in templates.items()
        for k, r in t["Resources"].items()
        if r["Type"] == "AWS::Lambda::Alias" and "ProvisionedConcurrencyConfig" in r.get("Properties", {})
    ]
    assert provisioned == []


def _run_app(tmp_path, *context: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    if context:
        env["CDK_CONTEXT_JSON"] = "{" + ",".join(context) + "}"
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_malformed_context_fails_with_one_line_naming_the_key(tmp_path):
    # When the prod account is not numeric (as with `cdk synth -c prod:account=abc`)
    result = _run_app(tmp_path, '"prod:account": "abc"')
    # Then the app exits 2 with one line naming the key, and no traceback
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("!!")]
    assert lines == ["sluice: context key 'prod:account' must be a 12-digit AWS account id; got 'abc'"]


@pytest.mark.parametrize("stage", ["prod"])
def test_stage_selection_writes_only_that_stage(tmp_path, stage):
    # When synthesizing with -c stage=prod from another working directory
    result = _run_app(tmp_path, f'"stage": "{stage}"')
    # Then only the prod assembly is written, into the requested output directory
    assert result.returncode == 0, result.stderr[-2000:]
    assemblies = sorted(p.name for p in tmp_path.glob("assembly-*"))
    assert assemblies == ["assembly-Prod"]
    templates = sorted(p.name for p in (tmp_path / "assembly-Prod").glob("*.template.json"))
    assert [t.startswith(("ProdService", "ProdStateful")) for t in templates] == [True, True]
