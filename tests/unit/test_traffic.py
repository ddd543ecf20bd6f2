"""Traffic management against moto's Lambda and CloudWatch: deploy, shift, promote, rollback, canary."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws
from scipy import stats

from sluice.errors import Conflict, NotFound, SluiceError
from sluice.registry.bundle import REQUIRED_ARTIFACTS, ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.store import create_storage
from sluice.serving.canary import HealthPolicy, two_proportion_test
from sluice.serving.traffic import EndpointTraffic

REGION = "eu-west-1"
FUNCTION = "sluice-dev-credit-endpoint"
SERVICE = "endpoint-credit"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _bundle(tag: str, *, onnx: bool = True) -> ModelBundle:
    artifacts = {name: f"{name}:{tag}".encode() for name in REQUIRED_ARTIFACTS}
    if onnx:
        artifacts["model.onnx"] = b"onnx:" + tag.encode()
    return ModelBundle(artifacts=artifacts, metrics={"f1": 0.5})


@pytest.fixture
def endpoint():
    """An endpoint function with a live alias on its first version, and a registry with v1-v3 (v3 pending)."""
    with mock_aws():
        registry = create_storage("reg", "art")
        for tag in ("a", "b"):
            registry.approve(
                "credit", registry.register("credit", _bundle(tag), lineage=Lineage()).version, actor="t"
            )
        registry.register("credit", _bundle("c"), lineage=Lineage())  # v3 stays pending
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="endpoint",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        lam.create_function(
            FunctionName=FUNCTION,
            Runtime="python3.12",
            Role=role,
            Handler="handler.lambda_handler",
            Code={"ZipFile": _zip()},
            Environment={
                "Variables": {
                    "SLUICE_MODEL_NAME": "credit",
                    "SLUICE_MODEL_FLAVOUR": "onnx",
                    "POWERTOOLS_SERVICE_NAME": SERVICE,
                }
            },
        )
        first = lam.publish_version(FunctionName=FUNCTION)["Version"]
        lam.create_alias(FunctionName=FUNCTION, Name="live", FunctionVersion=first)
        sleeps: list[float] = []
        traffic = EndpointTraffic(
            function_name=FUNCTION,
            model_name="credit",
            registry=registry,
            actor="tester",
            sleep=sleeps.append,
        )
        yield traffic, registry, lam


def shares(traffic) -> dict[int | None, float]:
    return {r.model_version: r.weight for r in traffic.routes()}


def test_deploy_publishes_a_version_bound_to_the_model_version(endpoint):
    traffic, registry, lam = endpoint
    # When v1 is deployed
    route = traffic.deploy(1)
    # Then a Lambda version carries the binding and the audit trail says so; no traffic moved yet
    env = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier=route.lambda_version)["Environment"]
    assert (
        env["Variables"]["SLUICE_MODEL_VERSION"] == "1" and env["Variables"]["SLUICE_MODEL_FLAVOUR"] == "onnx"
    )
    # with every artifact's digest and the approval signature over them, so that its cold start
    # needs no registry table read
    record = registry.get("credit", version=1)
    bound = json.loads(env["Variables"]["SLUICE_MODEL_ARTIFACTS"])
    assert bound == {name: info["sha256"] for name, info in record.artifacts.items()}
    approval = json.loads(env["Variables"]["SLUICE_MODEL_APPROVAL"])
    assert approval == {"approved_by": "t", "signature": record.approval_signature}
    assert traffic.lambda_version_of(1) == route.lambda_version
    assert shares(traffic) == {None: 1.0}
    deployed = [e for e in registry.history("credit") if e["kind"] == "deployed"]
    assert deployed[-1]["version"] == 1 and deployed[-1]["detail"]["lambda_version"] == route.lambda_version


def test_without_room_in_the_environment_a_version_deploys_without_its_digests(endpoint):
    traffic, _, lam = endpoint
    # Given a function whose own variables leave no room for the artifact digests
    variables = lam.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=FUNCTION, Environment={"Variables": {**variables, "PADDING": "x" * 3600}}
    )
    # Then the deployed version is bound to the model version, within Lambda's 4 KB
    route = traffic.deploy(1)
    bound = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier=route.lambda_version)
    bound = bound["Environment"]["Variables"]
    assert bound["SLUICE_MODEL_VERSION"] == "1" and "SLUICE_MODEL_ARTIFACTS" not in bound
    assert "SLUICE_MODEL_APPROVAL" not in bound
    assert sum(len(k) + len(v) for k, v in bound.items()) <= 4096


def test_only_approved_versions_with_the_flavour_deploy(endpoint):
    traffic, registry, _ = endpoint
    with pytest.raises(Conflict, match="PendingManualApproval"):
        traffic.deploy(3)
    v4 = registry.register("credit", _bundle("d", onnx=False), lineage=Lineage()).version
    registry.approve("credit", v4, actor="t")
    with pytest.raises(Conflict, match="onnx"):
        traffic.deploy(v4)
    with pytest.raises(SluiceError, match="flavour"):
        traffic.deploy(1, flavour="pickle")


def test_shift_promote_rollback(endpoint):
    traffic, registry, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    assert shares(traffic) == {1: 1.0}
    assert registry.aliases("credit")["champion"] == 1
    # v2 at 10 %
    traffic.deploy(2)
    traffic.shift(2, 0.1)
    assert shares(traffic) == {1: 0.9, 2: 0.1}
    # promote: 100 % v2, champion follows
    traffic.promote(2)
    assert shares(traffic) == {2: 1.0}
    assert registry.aliases("credit")["champion"] == 2
    # rollback: 100 % back to v1
    traffic.rollback()
    assert shares(traffic) == {1: 1.0}
    assert registry.aliases("credit")["champion"] == 1
    kinds = [
        e["kind"] for e in registry.history("credit") if e["kind"] in ("traffic", "promoted", "rolled_back")
    ]
    assert kinds == ["promoted", "traffic", "promoted", "rolled_back"]
    shifted = next(e for e in registry.history("credit") if e["kind"] == "traffic")
    assert [r["weight"] for r in shifted["detail"]["to"]] == [0.9, 0.1]


def test_rollback_during_a_split_drops_the_new_version(endpoint):
    traffic, _, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    traffic.deploy(2)
    traffic.shift(2, 0.25)
    traffic.rollback()
    assert shares(traffic) == {1: 1.0}


def test_bad_weights_and_undeployed_versions(endpoint):
    traffic, _, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    for weight in (-0.1, 1.5, float("nan")):
        with pytest.raises(SluiceError, match="weight"):
            traffic.shift(1, weight)
    with pytest.raises(NotFound, match="not deployed"):
        traffic.shift(2, 0.1)
    with pytest.raises(Conflict, match="primary"):
        traffic.shift(1, 0.5)


def test_nothing_to_roll_back(endpoint):
    traffic, _, _ = endpoint
    with pytest.raises(Conflict, match="nothing to roll back"):
        traffic.rollback()


def put_metrics(version: int, **values: float) -> None:
    cw = boto3.client("cloudwatch", region_name=REGION)
    dims = [
        {"Name": "Model", "Value": "credit"},
        {"Name": "Version", "Value": str(version)},
        {"Name": "service", "Value": SERVICE},
    ]
    cw.put_metric_data(
        Namespace="Sluice/Endpoint",
        MetricData=[
            {"MetricName": name, "Dimensions": dims, "Value": value, "Timestamp": datetime.now(UTC)}
            for name, value in values.items()
        ],
    )


def test_canary_of_an_erroring_version_rolls_back(endpoint):
    traffic, registry, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    traffic.deploy(2)
    # While the canary waits, v2 serves requests that all fail
    traffic._sleep = lambda seconds: put_metrics(2, Invocations=5, Errors=5)
    result = traffic.canary(2, steps=(0.1, 0.5), interval_s=1)
    assert result.outcome == "rolled_back" and "server error" in result.reason
    assert len(result.steps) == 1 and result.steps[0]["weight"] == 0.1
    assert shares(traffic) == {1: 1.0}
    assert registry.aliases("credit")["champion"] == 1
    assert registry.history("credit")[-1]["kind"] == "rolled_back"


def test_canary_of_a_healthy_version_is_promoted_step_by_step(endpoint):
    traffic, _, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    traffic.deploy(2)
    seen: list[dict] = []
    traffic._sleep = lambda seconds: (
        seen.append(shares(traffic)),
        put_metrics(2, Invocations=3, Latency=4.0, PositiveProbability=0.3, Rows=3, PredictedPositive=1),
    )
    result = traffic.canary(2, steps=(0.1, 0.5), interval_s=1)
    assert result.outcome == "promoted", result.reason
    assert [s["weight"] for s in result.steps] == [0.1, 0.5]
    assert seen == [{1: 0.9, 2: 0.1}, {1: 0.5, 2: 0.5}]
    assert shares(traffic) == {2: 1.0}


def test_canary_quality_and_silence_are_breaches(endpoint):
    traffic, _, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    traffic.deploy(2)
    traffic._sleep = lambda seconds: put_metrics(2, Invocations=3, PositiveProbability=0.999)
    result = traffic.canary(2, steps=(0.2,), interval_s=1)
    assert result.outcome == "rolled_back" and "positive probability" in result.reason
    with pytest.raises(SluiceError, match="steps"):
        traffic.canary(2, steps=(0.5, 0.2))


def test_canary_without_traffic_to_judge_rolls_back(endpoint):
    traffic, _, _ = endpoint
    traffic.deploy(1)
    traffic.promote(1)
    traffic.deploy(2)
    result = traffic.canary(2, steps=(0.2,), interval_s=1, policy=HealthPolicy(min_invocations=1))
    assert result.outcome == "rolled_back" and "request(s) reached it" in result.reason
    assert shares(traffic) == {1: 1.0}


def test_compare_reports_per_version_stats_and_a_z_test(endpoint):
    traffic, _, _ = endpoint
    start = datetime.now(UTC) - timedelta(minutes=5)
    put_metrics(1, Invocations=100, Rows=1000, PredictedPositive=100, Latency=3.0)
    put_metrics(2, Invocations=100, Rows=1000, PredictedPositive=150, Latency=5.0)
    report = traffic.compare([1, 2], start=start)
    assert [v["rows"] for v in report["versions"]] == [1000, 1000]
    assert report["versions"][1]["positive_rate"] == 0.15
    assert report["test"]["p_value"] < 0.01


def test_two_proportion_test_matches_chi2_without_correction():
    # The pooled z-test squared is Pearson's chi-square on the 2x2 table
    x1, n1, x2, n2 = 30, 200, 45, 210
    result = two_proportion_test(x1, n1, x2, n2)
    chi2, p, _, _ = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert result["z"] ** 2 == pytest.approx(chi2)
    assert result["p_value"] == pytest.approx(p)
    assert two_proportion_test(1, 0, 1, 10)["p_value"] is None


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from sluice.cli import main

    code = main(["endpoint", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_deploy_shift_promote_rollback_status(endpoint, capsys, monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "reg")
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "art")
    common = ("--function", FUNCTION, "--json")
    code, out, _ = run_cli(capsys, "deploy", "credit", "1", "--weight", "1", *common)
    assert code == 0 and [r["model_version"] for r in json.loads(out)["routes"]] == [1]
    run_cli(capsys, "deploy", "credit", "2", *common)
    code, out, _ = run_cli(capsys, "shift", "credit", "2", "0.2", *common)
    assert {r["model_version"]: r["weight"] for r in json.loads(out)["routes"]} == {1: 0.8, 2: 0.2}
    code, out, _ = run_cli(capsys, "promote", "credit", "2", *common)
    assert {r["model_version"]: r["weight"] for r in json.loads(out)["routes"]} == {2: 1.0}
    code, out, _ = run_cli(capsys, "rollback", "credit", *common)
    assert {r["model_version"]: r["weight"] for r in json.loads(out)["routes"]} == {1: 1.0}
    # A table without --json
    code, out, _ = run_cli(capsys, "status", "credit", "--function", FUNCTION)
    assert code == 0 and "100%" in out and FUNCTION in out
    _, registry, _ = endpoint
    # The audit trail names the caller STS verified (there is no --actor to claim another name)
    assert {e["actor"] for e in registry.history("credit") if e["kind"] in ("traffic", "promoted")} == {
        "arn:aws:sts::123456789012:user/moto"
    }


def test_cli_user_errors_exit_2_with_one_line(endpoint, capsys, monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "reg")
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "art")
    code, _, err = run_cli(capsys, "deploy", "credit", "3", "--function", FUNCTION)
    assert code == 2 and err.count("\n") == 1 and "PendingManualApproval" in err
    code, _, err = run_cli(capsys, "status", "credit", "--function", "no-such-function")
    assert code == 2 and "no-such-function" in err
    # The weight is checked after the model reference is parsed (NAME:VERSION W or NAME VERSION W)
    code, _, err = run_cli(capsys, "shift", "credit", "2", "1.5", "--function", FUNCTION)
    assert code == 2 and err.count("\n") == 1 and "weights are between 0 and 1, got 1.5" in err


def test_cli_compare_prints_the_test(endpoint, capsys, monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "reg")
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "art")
    put_metrics(1, Invocations=10, Rows=400, PredictedPositive=40)
    put_metrics(2, Invocations=10, Rows=400, PredictedPositive=80)
    code, out, _ = run_cli(capsys, "compare", "credit", "1", "2", "--function", FUNCTION, "--minutes", "5")
    text = " ".join(out.split())  # rich wraps lines at the terminal width
    assert code == 0 and "two-proportion z" in text and "(significant at 5%)" in text


# --- which flavour a deploy serves -----------------------------------------------------------------


def _described_bundle(flavour: str, *, twin: bool = False) -> ModelBundle:
    model_file = "model.onnx" if flavour == "onnx" else "model.skops"
    descriptor = {"flavour": flavour, "model_file": model_file, "task": "classification", "classes": [0, 1]}
    artifacts = {"model.json": json.dumps(descriptor).encode(), "schema.json": b"{}", model_file: b"graph"}
    if twin:
        artifacts["model.onnx"] = b"twin"
    return ModelBundle(artifacts=artifacts)


def _approved(registry, bundle: ModelBundle) -> int:
    version = registry.register("credit", bundle, lineage=Lineage()).version
    registry.approve("credit", version, actor="t")
    return version


def _endpoint_flavour(lam, flavour: str) -> None:
    variables = lam.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=FUNCTION, Environment={"Variables": {**variables, "SLUICE_MODEL_FLAVOUR": flavour}}
    )


def test_deploy_serves_the_zip_endpoint_any_version_with_an_onnx_graph(endpoint):
    traffic, registry, lam = endpoint
    # Given an ONNX graph registered as it is, and a scikit-learn model with a parity-checked twin
    graph = _approved(registry, _described_bundle("onnx"))
    twin = _approved(registry, _described_bundle("sklearn", twin=True))
    # Then the zip endpoint deploys both, and the built-in v1, in the onnx flavour
    for version in (graph, twin, 1):
        assert traffic.deploy(version).flavour == "onnx"
    # And a container endpoint deploys the twin's and the built-in's scikit-learn model
    _endpoint_flavour(lam, "sklearn")
    assert traffic.deploy(twin).flavour == "sklearn" and traffic.deploy(1).flavour == "sklearn"


def test_an_impossible_flavour_is_refused_in_one_line_naming_the_fix(endpoint):
    traffic, registry, lam = endpoint
    sklearn_only = _approved(registry, _described_bundle("sklearn"))
    graph = _approved(registry, _described_bundle("onnx"))
    # A scikit-learn model without a twin on the zip endpoint
    with pytest.raises(Conflict) as refused:
        traffic.deploy(sklearn_only)
    message = str(refused.value)
    assert "has no onnx flavour (it has: sklearn)" in message and "--onnx FILE" in message
    assert "\n" not in message
    # The container flavour asked of the zip endpoint
    with pytest.raises(Conflict, match="zip endpoint serving flavour onnx, not sklearn: leave out --flavour"):
        traffic.deploy(1, flavour="sklearn")
    # An ONNX graph on a container endpoint, or --flavour onnx for a version without ONNX
    _endpoint_flavour(lam, "sklearn")
    with pytest.raises(
        Conflict, match=r"has no sklearn flavour \(it has: onnx\).* deploy it to a zip endpoint"
    ):
        traffic.deploy(graph)
    with pytest.raises(Conflict, match="container endpoint serving flavour sklearn, not onnx"):
        traffic.deploy(sklearn_only, flavour="onnx")
    assert not [e for e in registry.history("credit") if e["kind"] == "deployed"]
