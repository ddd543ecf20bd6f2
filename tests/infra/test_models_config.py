"""Many models per stage (``sluice:models``): each model gets its own endpoint, pipelines and alarms.

The session's app is the two-model app of ``cdk.json`` (``infra/models.json``): the demo's
``credit-risk`` and the example project's ``credit-decisions`` (``examples/credit_decisions``,
run in its own image: ``tests/infra/test_model_images.py``), each with its committed schema
under ``infra/schemas/``. Some tests synthesize the dev stage again with other models in
context, as ``cdk synth -c sluice:models=[...]`` would.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import infra.model_schemas
from infra.config import ModelConfig
from infra.constructs.endpoint import Endpoint
from infra.constructs.monitoring import MonitoredModel
from infra.constructs.nag import recording_acknowledgements
from infra.model_schemas import feature_names
from localaws.assembly import read_assembly
from sluice.models.schema import FeatureSchema
from sluice.names import MAX_INSTANCES, batch_state_machine_name
from tests.infra.conftest import SESSION_MODELS, resources_of
from tests.infra.test_quality_gates import unacknowledged_findings, unused_acknowledgements

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("credit-risk", "credit-decisions")
#: CloudFormation's limit of resources per stack.
STACK_RESOURCE_LIMIT = 500


def synthesize(outdir: Path, models: list[dict]) -> dict[str, dict]:
    """The dev stage synthesized with ``sluice:models`` (cdk-nag runs inside the app, as always)."""
    from app import build_app

    build_app(context={"stage": "dev", "sluice:models": models}, outdir=str(outdir)).synth()
    return {s.stack_name: s.template for s in read_assembly(outdir)}


@pytest.fixture(scope="module")
def two_models(assembly_dir, templates) -> tuple[Path, dict[str, dict]]:
    """The session's app: ``infra/models.json`` gives credit-decisions 2048 MB and no batch schedule."""
    assert SESSION_MODELS == MODELS
    return assembly_dir, templates


@pytest.fixture(scope="module")
def service(two_models) -> dict:
    return two_models[1]["Dev-Service"]


def alarm_names(template: dict) -> set[str]:
    return {
        r["Properties"]["AlarmName"]
        for r in resources_of(template, "AWS::CloudWatch::Alarm").values()
        if "AlarmName" in r["Properties"]
    }


def test_each_model_has_its_own_endpoint(service):
    functions = resources_of(service, "AWS::Lambda::Function").values()
    endpoints = {
        f["Properties"]["FunctionName"]: f["Properties"]
        for f in functions
        if str(f["Properties"].get("FunctionName", "")).endswith("-endpoint")
    }
    # Then two endpoints with distinct names, each serving its own model, from its own role
    assert set(endpoints) == {f"sluice-dev-{m}-endpoint" for m in MODELS}
    for model in MODELS:
        props = endpoints[f"sluice-dev-{model}-endpoint"]
        assert props["Environment"]["Variables"]["SLUICE_MODEL_NAME"] == model
    assert len({json.dumps(p["Role"]) for p in endpoints.values()}) == 2
    # And the model's settings reach its endpoint only
    assert endpoints["sluice-dev-credit-decisions-endpoint"]["MemorySize"] == 2048
    assert endpoints["sluice-dev-credit-risk-endpoint"]["MemorySize"] == 1024
    assert len(resources_of(service, "AWS::ApiGateway::RestApi")) == 1 + len(MODELS)  # + registry API


def test_each_models_drift_alarms_come_from_its_own_schema(service):
    alarms = resources_of(service, "AWS::CloudWatch::Alarm").values()
    for model in MODELS:
        # Given the features of the model's committed schema
        features = feature_names(model)
        assert features
        # Then the model has one alarm per feature, on its own metric dimension
        mine = {
            a["Properties"]["AlarmName"]: a["Properties"]
            for a in alarms
            if str(a["Properties"].get("AlarmName", "")).startswith(f"sluice-dev-{model}-drift-")
            and a["Properties"].get("MetricName") == "PSI"
        }
        assert set(mine) == {f"sluice-dev-{model}-drift-{f}" for f in features}
        for props in mine.values():
            dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
            assert dims["Model"] == model


def test_pipelines_per_model_and_one_shared_registry_and_roles(two_models, service):
    machines = resources_of(service, "AWS::StepFunctions::StateMachine")
    named = {m["Properties"].get("StateMachineName") for m in machines.values()}
    for model in MODELS:
        assert batch_state_machine_name("dev", model) in named
        assert batch_state_machine_name("dev", model, via_endpoint=True) in named
    retraining = [k for k in machines if "RetrainingStateMachine" in k]
    assert len(retraining) == len(MODELS)
    # Only the first model has a daily batch schedule (the second's batchSchedule is "none")
    schedules = [k for k in resources_of(service, "AWS::Scheduler::Schedule") if "BatchSchedule" in k]
    assert [k.startswith("BatchSchedule") for k in schedules] == [True]
    # One registry (stateful stack), one set of stage roles
    stateful = two_models[1]["Dev-Stateful"]
    tables = [
        t["Properties"].get("TableName") for t in resources_of(stateful, "AWS::DynamoDB::Table").values()
    ]
    assert tables.count("sluice-dev-registry") == 1
    assert resources_of(service, "AWS::DynamoDB::Table") == {}
    role_names = [r["Properties"].get("RoleName") for r in resources_of(service, "AWS::IAM::Role").values()]
    assert role_names.count("sluice-dev-deployer") == 1 and role_names.count("sluice-dev-approver") == 1


def test_the_default_model_keeps_its_outputs_and_models_lists_all(service):
    outputs = service["Outputs"]
    assert outputs["ModelName"]["Value"] == "credit-risk"
    # The single-model outputs are the default model's, under the ids it had before
    assert outputs["EndpointFunction"]["Value"] == {"Ref": "EndpointHandlerFunctionEED4ADC8"}
    parts = outputs["Models"]["Value"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "<ref>" for p in parts)
    # Models: compact JSON of every model, the default first
    listed = json.loads(text)
    assert list(listed) == list(MODELS)
    assert set(listed["credit-decisions"]) == {"url", "function", "batch", "retrain"}
    assert len(text) < 1000


def test_two_model_app_is_nag_clean_and_fits_the_stack_limit(two_models, service):
    outdir, _ = two_models
    report = json.loads((outdir / "validation-report.json").read_text())
    assert unacknowledged_findings(report) == []
    assert len(service["Resources"]) < STACK_RESOURCE_LIMIT


def test_model_defaults_are_the_constructs_defaults():
    # ModelConfig restates the defaults of Endpoint and MonitoredModel: they must not drift apart
    endpoint = inspect.signature(Endpoint.__init__).parameters
    monitored = {f.name: f.default for f in fields(MonitoredModel)}
    model = ModelConfig("m")
    for name in (
        "flavour",
        "memory_mb",
        "error_threshold",
        "latency_p99_ms",
        "quality_bounds",
        "rate_limit",
        "burst_limit",
    ):
        assert getattr(model, name) == endpoint[name].default, name
    renamed = {"drift_rate_minutes": "rate_minutes", "drift_window_minutes": "window_minutes"}
    for name in (
        "drift_rate_minutes",
        "drift_window_minutes",
        "psi_tolerance",
        "feature_psi_tolerance",
        "share_tolerance",
        "feature_alarm_datapoints",
        "quality_min_effect",
        "quality_rate_minutes",
        "quality_window_minutes",
    ):
        assert getattr(model, name) == monitored[renamed.get(name, name)], name


def test_alarms_follow_each_models_schema_when_features_differ(tmp_path, monkeypatch):
    # Given a schema folder with the demo's model and a model with other features
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for name in ("credit-risk.json", "credit-risk.request.json"):
        shutil.copy(infra.model_schemas.SCHEMAS_DIR / name, schemas / name)
    other = {
        "format": "sluice.feature-schema/1",
        "features": [
            {"name": "amount", "kind": "numeric", "dtype": "float64", "nullable": False, "required": True},
            {
                "name": "merchant",
                "kind": "categorical",
                "dtype": "object",
                "categories": ["a", "b"],
                "nullable": False,
                "required": True,
            },
        ],
    }
    (schemas / "fraud-score.json").write_text(json.dumps(other))
    request = FeatureSchema.from_dict(other).to_json_schema(max_instances=MAX_INSTANCES)
    (schemas / "fraud-score.request.json").write_text(json.dumps(request))
    monkeypatch.setattr(infra.model_schemas, "SCHEMAS_DIR", schemas)
    # When a stage serves both
    templates = synthesize(tmp_path / "out", [{"name": "credit-risk"}, {"name": "fraud-score"}])
    names = alarm_names(templates["Dev-Service"])
    # Then each model's feature alarms name its own features, and none of the other's
    fraud = {n.removeprefix("sluice-dev-fraud-score-drift-") for n in names if "fraud-score-drift-" in n}
    credit = {n.removeprefix("sluice-dev-credit-risk-drift-") for n in names if "credit-risk-drift-" in n}
    assert fraud == {"share", "amount", "merchant"}
    assert credit == {"share", *feature_names("credit-risk")}


def test_a_models_error_from_the_cli_context_is_one_line(tmp_path):
    # When `cdk synth -c` passes a model entry with a field no construct takes
    context = {"stage": "dev", "sluice:models": [{"name": "credit-risk", "memory": 512}]}
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "CDK_CONTEXT_JSON": json.dumps(context)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # Then the app exits 2 with one line naming the key, the model and the field
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("!!", "b'"))
    ]
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(
        "sluice: context key 'sluice:models'[0] (credit-risk): unknown field 'memory' (known: name, flavour"
    )


def test_two_model_acknowledgements_each_match_a_finding(tmp_path):
    # Given the two-model app synthesized with acknowledging turned off (every finding reported)
    from app import build_app

    context = {"stage": "dev", "sluice:models": [{"name": m} for m in MODELS]}
    with recording_acknowledgements() as acknowledged:
        app = build_app(context=context, outdir=str(tmp_path))
        with pytest.raises(RuntimeError, match="AwsSolutions"):
            app.synth()
    findings = unacknowledged_findings(json.loads((tmp_path / "validation-report.json").read_text()))
    # Then the second model's acknowledgements, like the first's, each match a finding
    assert any(path.startswith("Dev/Service/Model-credit-decisions/") for path, _ in acknowledged)
    assert unused_acknowledgements(acknowledged, findings) == []


def test_four_models_fit_one_service_stack(tmp_path, service):
    # Given the one-model stage and the two-model stage (the session's app), both dev
    one_model = synthesize(tmp_path, [{"name": "credit-risk"}])["Dev-Service"]
    one, two = len(one_model["Resources"]), len(service["Resources"])
    # The stack's one Fargate training network comes with the first model training on Fargate.
    network = sum(1 for k in service["Resources"] if k.startswith("TrainingNetwork"))
    per_model, shared = two - one - network, 2 * one - two + network
    # Then a model costs about 90 resources plus one alarm per feature (100 with 10 features),
    # and four such models fit CloudFormation's 500 (a fifth does not: CDK refuses it at synth)
    assert 90 <= per_model <= 110
    assert shared + 4 * per_model <= STACK_RESOURCE_LIMIT
