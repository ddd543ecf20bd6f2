"""cdk-nag (AwsSolutions) and cfn-lint over every synthesized template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from infra.constructs.nag import recording_acknowledgements


def unacknowledged_findings(report: dict) -> list[tuple[str, str]]:
    """(rule, construct path) for every AwsSolutions finding that no acknowledgement covers."""
    return [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report.get("pluginReports", [])
        if plugin["pluginName"] == "AwsSolutions"
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def test_no_unacknowledged_nag_findings_in_either_stage(validation_report, stacks):
    # Given the app synthesized with the AwsSolutions pack for dev and prod
    assert {s.stage for s in stacks.values()} == {"Dev", "Prod"}
    # Then no finding is left without an acknowledgement next to its resource
    assert unacknowledged_findings(validation_report) == []


def test_nag_check_is_live_on_an_unacknowledged_finding(tmp_path):
    # Given a bucket without server access logs and no acknowledgement
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    s3.Bucket(stack, "Plain", enforce_ssl=True)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    # When synthesized, synthesis fails (as `cdk synth` of the app would)
    with pytest.raises(RuntimeError, match="AwsSolutions-S1"):
        app.synth()
    # Then the report names the rule and the resource
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert ("AwsSolutions-S1", "Probe/Plain/Resource") in unacknowledged_findings(report)


def acknowledgements(stacks) -> dict[str, dict[str, str]]:
    """{construct path: {rule: reason}} from the assembly metadata of every stack."""
    found: dict[str, dict[str, str]] = {}
    for stack in stacks.values():
        metadata_file = stack.template_path.with_name(stack.artifact_id + ".metadata.json")
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.setdefault(path, {}).update(entry["data"])
    return found


def test_every_acknowledgement_sits_on_a_resource_with_a_reason(stacks):
    # Given the acknowledgements recorded in the assembly
    found = acknowledgements(stacks)
    # Then they sit on specific constructs (never a whole stack) and each gives a real reason
    assert found, "expected acknowledgements in the assembly metadata"
    for path, rules in found.items():
        assert path.count("/") >= 3, f"acknowledgement on a whole stack: {path}"
        for rule, reason in rules.items():
            assert len(reason) >= 30, f"{path}: {rule} has no real reason"
    assert any("AwsSolutions-APIG6" in rule for rules in found.values() for rule in rules)


def unused_acknowledgements(
    acknowledged: list[tuple[str, str]], findings: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(construct path, rule) of each acknowledgement that no finding on it or below it matches.

    cdk-nag counts an acknowledgement on a construct or any ancestor (``NagPack.isAcknowledged``),
    for the exact rule id, ``[applies_to]`` included.
    """
    return sorted(
        {
            (path, rule)
            for path, rule in acknowledged
            if not any(
                found == rule and (where == path or where.startswith(path.rstrip("/") + "/"))
                for found, where in findings
            )
        }
    )


@pytest.fixture(scope="module")
def raw_nag(tmp_path_factory) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(acknowledgements, findings) of the app synthesized with acknowledging turned off.

    ``acknowledge`` only records its rules there, so the report holds every finding cdk-nag raises;
    this is the one test that synthesizes the app a second time.
    """
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out.raw")
    with recording_acknowledgements() as acknowledged:
        app = build_app(outdir=str(outdir))
        with pytest.raises(RuntimeError, match="AwsSolutions"):
            app.synth()
    report = json.loads((outdir / "validation-report.json").read_text())
    return [(path, rule) for path, rule in acknowledged], unacknowledged_findings(report)


def test_every_acknowledgement_matches_a_finding(raw_nag, stacks):
    # Given every acknowledgement the app makes, and every finding cdk-nag raises without them
    acknowledged, findings = raw_nag
    # Then the recorded acknowledgements are exactly those in the real assembly (none bypasses acknowledge)
    in_assembly = {
        (path.lstrip("/"), rule.removeprefix("Annotation::"))
        for path, rules in acknowledgements(stacks).items()
        for rule in rules
    }
    assert set(acknowledged) == in_assembly
    # And each one (rule id and applies_to) matches a finding on its construct or below
    assert unused_acknowledgements(acknowledged, findings) == []


def test_unused_acknowledgement_check_is_live():
    # Given a finding on a bucket, acknowledged, and an acknowledgement of a wildcard the role lacks
    findings = [("AwsSolutions-S1", "Probe/Plain/Resource")]
    acknowledged = [
        ("Probe/Plain", "AwsSolutions-S1"),
        ("Probe/Role", "AwsSolutions-IAM5[Action::s3:DeleteObject*]"),
        ("Probe/Plain", "AwsSolutions-S10"),
    ]
    # Then the two without a finding are reported, the used one is not
    assert unused_acknowledgements(acknowledged, findings) == [
        ("Probe/Plain", "AwsSolutions-S10"),
        ("Probe/Role", "AwsSolutions-IAM5[Action::s3:DeleteObject*]"),
    ]


def test_cfn_lint_reports_no_errors(stacks):
    # Given every synthesized template
    paths = [str(s.template_path) for s in stacks.values()]
    # When cfn-lint runs on them (warnings are informational; W3005 comes from CDK itself)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "json", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then it ran (exit 0, or 4 for warnings only) and reported no errors
    assert result.returncode in (0, 4), result.stdout[:2000] + result.stderr[:2000]
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], json.dumps(errors, indent=1)[:2000]
