"""Lambda code runs in warm worker processes on the embedded local AWS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from localaws.lambdas import routing, runtime, telemetry
from tests.local.conftest import create_fixture_function, create_tiny_function, create_two_versions

pytestmark = pytest.mark.local


def _invoke(aws, name: str, payload: dict | None = None, **kwargs) -> tuple[dict, dict]:
    response = aws.client("lambda").invoke(FunctionName=name, Payload=json.dumps(payload or {}), **kwargs)
    return response, json.loads(response["Payload"].read())


@pytest.fixture(scope="module")
def tiny(local_aws):
    return create_tiny_function(local_aws, timeout=2)


def test_second_invoke_reuses_the_warm_worker(local_aws, tiny):
    # Given a function invoked once (cold start)
    _, first = _invoke(local_aws, tiny)
    # When it is invoked again
    _, second = _invoke(local_aws, tiny)
    # Then the same process served both and imported the handler once
    assert first["pid"] == second["pid"]
    assert first["inits"] == second["inits"] == 1
    assert first["request_id"] != second["request_id"]
    assert [w.pid for w in local_aws.runtime.workers(tiny)] == [first["pid"]]


def test_template_function_runs_with_its_template_configuration(local_aws):
    # Given the registry API function created by the synthesized template
    name = local_aws.physical_id("RegistryApiHandlerFunction", resource_type="AWS::Lambda::Function")
    # When it is invoked twice through the Lambda API
    response, _ = _invoke(local_aws, name, {"httpMethod": "GET", "path": "/models", "resource": "/models"})
    _invoke(local_aws, name, {"httpMethod": "GET", "path": "/models", "resource": "/models"})
    # Then it ran (no Docker error) in one warm worker with the template's handler and environment
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    [worker] = local_aws.runtime.workers(name)
    assert worker.spec.handler == "sluice.handlers.registry_api.lambda_handler"
    table = local_aws.physical_id("RegistryTable", resource_type="AWS::DynamoDB::Table")
    assert worker.spec.environment["SLUICE_REGISTRY_TABLE"] == table  # Fn::ImportValue across stacks
    assert worker.spec.memory_mb == 512 and worker.spec.timeout_s == 30
    assert worker.invocations == 2


def test_function_error_comes_back_unhandled_with_the_message(local_aws, tiny):
    response, payload = _invoke(local_aws, tiny, {"fail": "on purpose"})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "asked to fail: on purpose"


def test_timeout_kills_the_worker_and_reports_task_timed_out(local_aws):
    name = create_tiny_function(local_aws, timeout=1)
    _, warm = _invoke(local_aws, name)  # cold start outside the timeout under test
    response, payload = _invoke(local_aws, name, {"sleep": 5})
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"]
    # The next invocation gets a fresh execution environment
    _, after = _invoke(local_aws, name)
    assert after["pid"] != warm["pid"]


def test_qualifiers_pick_the_version(local_aws):
    # Given version 1 (blue) and version 2 (green) of a function
    name = create_two_versions(local_aws)
    client = local_aws.client("lambda")
    client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    # Then each way of naming a version runs that version, in its own worker
    assert _invoke(local_aws, f"{name}:1")[1]["colour"] == "blue"
    assert _invoke(local_aws, name, Qualifier="2")[1]["colour"] == "green"
    response, live = _invoke(local_aws, f"{name}:live")
    assert (live["version"], live["colour"]) == ("1", "blue")
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amz-executed-version"] == "1"
    assert _invoke(local_aws, name)[1]["version"] == "$LATEST"


def test_alias_routing_weights_are_honoured_in_process(local_aws):
    name = create_two_versions(local_aws)
    client = local_aws.client("lambda")
    client.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    executed = {local_aws.invoke(name, qualifier="live").executed_version for _ in range(40)}
    assert executed == {"1", "2"}


def test_event_invocation_returns_202_and_runs(local_aws, tiny):
    response = local_aws.client("lambda").invoke(FunctionName=tiny, InvocationType="Event", Payload=b"{}")
    assert response["StatusCode"] == 202


def test_emf_log_lines_become_cloudwatch_metrics(local_aws, tiny):
    _invoke(local_aws, tiny, {"emf": 7})
    cloudwatch = local_aws.client("cloudwatch")
    deadline = time.monotonic() + 20
    metrics: list = []
    while time.monotonic() < deadline and not metrics:
        metrics = cloudwatch.list_metrics(Namespace="SluiceLocalTest", MetricName="Score")["Metrics"]
        time.sleep(0.2)
    assert metrics and metrics[0]["Dimensions"] == [{"Name": "service", "Value": "tiny"}]


def test_logs_stream_to_the_function_log_group(local_aws, tiny):
    _invoke(local_aws, tiny)
    logs = local_aws.client("logs")
    deadline = time.monotonic() + 20
    messages: list[str] = []
    while time.monotonic() < deadline and not any(m.startswith("REPORT RequestId") for m in messages):
        time.sleep(0.2)  # logs arrive shortly after the invocation, as in Lambda (group included)
        try:
            streams = logs.describe_log_streams(logGroupName=f"/aws/lambda/{tiny}").get("logStreams", [])
        except logs.exceptions.ResourceNotFoundException:
            continue
        messages = [
            e["message"]
            for s in streams
            for e in logs.get_log_events(
                logGroupName=f"/aws/lambda/{tiny}", logStreamName=s["logStreamName"]
            )["events"]
        ]
    assert any(m.startswith("START RequestId") for m in messages)
    assert any(m.startswith("REPORT RequestId") for m in messages)


def test_logs_of_many_invocations_are_shipped_in_batches(local_aws, tiny, monkeypatch):
    # Given the telemetry thread flushing every 2 s, and a count of its PutLogEvents batches
    telemetry = local_aws.runtime.telemetry
    monkeypatch.setattr(telemetry, "interval_s", 2.0)
    batches: list[int] = []
    put_logs = telemetry._put_logs

    def counting(worker, events):
        batches.append(len(events))
        put_logs(worker, events)

    monkeypatch.setattr(telemetry, "_put_logs", counting)
    time.sleep(2.5)  # let a flush on the old interval pass, so the new one is in force
    batches.clear()
    # When the function is invoked 20 times
    for _ in range(20):
        _invoke(local_aws, tiny)
    telemetry.flush()
    # Then every invocation's START/END/REPORT lines went out, in far fewer calls than invocations
    assert sum(batches) >= 20 * 3
    assert 1 <= len(batches) < 20


def test_unknown_function_is_404(local_aws):
    client = local_aws.client("lambda")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


def test_emf_record_conversion():
    record = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "N",
                    "Dimensions": [["model", "version"]],
                    "Metrics": [{"Name": "Latency", "Unit": "Milliseconds"}],
                }
            ],
        },
        "model": "credit",
        "version": 3,
        "Latency": [1.5, 2.5],
    }
    [(namespace, data)] = telemetry.emf_to_metric_data(record)
    assert namespace == "N"
    assert data[0]["Values"] == [1.5, 2.5] and data[0]["Unit"] == "Milliseconds"
    assert data[0]["Dimensions"] == [{"Name": "model", "Value": "credit"}, {"Name": "version", "Value": "3"}]


def test_pick_version_follows_weights():
    routing.seed_routing(7)
    picks = [routing.pick_version("1", {"AdditionalVersionWeights": {"2": 0.25}}) for _ in range(4000)]
    assert 0.22 < picks.count("2") / len(picks) < 0.28
    assert routing.pick_version("1", None) == "1"


def test_seeded_routing_repeats_its_draws_and_other_seeds_differ():
    weights = {"AdditionalVersionWeights": [{"FunctionVersion": "2", "FunctionWeight": 0.5}]}

    def draws(seed):
        routing.seed_routing(seed)
        return [routing.pick_version("1", weights) for _ in range(64)]

    assert draws("a") == draws("a")
    assert draws("a") != draws("b")
    assert set(draws("a")) == {"1", "2"}


def test_moto_internals_guard_fails_loudly(monkeypatch):
    # Given moto's Lambda backend without the invoke this module replaces (a moto upgrade)
    from moto.awslambda.models import LambdaBackend

    monkeypatch.setattr(LambdaBackend, "invoke", lambda self, name, payload: None)
    # Then installing the runtime names the moved symbol
    with pytest.raises(RuntimeError, match=r"moto\.awslambda\.models\.LambdaBackend\.invoke"):
        runtime.INVOKE.check()
    monkeypatch.delattr(LambdaBackend, "invoke")
    with pytest.raises(RuntimeError, match=r"LambdaBackend\.invoke is gone"):
        runtime.INVOKE.check()


def test_idle_workers_are_recycled(local_aws):
    name = create_tiny_function(local_aws)
    _, first = _invoke(local_aws, name)
    [pool] = [p for (fname, _), p in local_aws.runtime._pools.items() if fname == name]
    assert pool.reap(idle_s=3600) == 0
    assert pool.reap(idle_s=0) == 1
    _, second = _invoke(local_aws, name)
    assert second["pid"] != first["pid"] and second["inits"] == 1


def test_a_payload_that_is_not_json_is_a_400(local_aws, tiny):
    client = local_aws.client("lambda")
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName=tiny, Payload=b"{not json")


def test_the_pool_refills_to_its_size_after_worker_kills(local_aws):
    # Given a function whose pool grew to its size under a burst of invocations
    name = create_tiny_function(local_aws)
    size = local_aws.runtime.max_workers
    with ThreadPoolExecutor(max_workers=size * 2) as callers:
        list(callers.map(lambda _: _invoke(local_aws, name, {"sleep": 0.3}), range(size * 2)))
    assert len(local_aws.runtime.workers(name)) == size
    # When 7 workers are killed during a second burst, the last ones as the burst ends
    killed: set[int] = set()
    done = threading.Event()

    def caller() -> list[int]:
        statuses = []
        while not done.is_set():
            statuses.append(_invoke(local_aws, name, {"sleep": 0.05})[0]["StatusCode"])
        return statuses

    with ThreadPoolExecutor(max_workers=size * 2) as callers:
        burst = [callers.submit(caller) for _ in range(size * 2)]
        while len(killed) < 7:
            # (A worker that dies before its init is done is not replaced: it would crash-loop.)
            live = [w.pid for w in local_aws.runtime.workers(name) if w.ready and w.pid not in killed]
            if live:
                os.kill(live[0], signal.SIGKILL)
                killed.add(live[0])
            time.sleep(0.1)
        done.set()
        statuses = [status for future in burst for status in future.result()]
    assert set(statuses) == {200}  # a killed environment fails its invocation, not the API
    # Then, with no more invocations, the pool is back at its size, none of them a killed worker
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(local_aws.runtime.workers(name)) < size:
        time.sleep(0.1)
    pids = {w.pid for w in local_aws.runtime.workers(name)}
    assert len(pids) == size and not pids & killed
    # And they serve
    with ThreadPoolExecutor(max_workers=size) as callers:
        served = list(callers.map(lambda _: _invoke(local_aws, name, {"sleep": 0.3}), range(size)))
    assert all("FunctionError" not in response for response, _ in served)
    assert {body["pid"] for _, body in served} <= pids


def test_a_worker_that_dies_during_init_is_not_replaced(local_aws):
    # Given a function whose init kills its process
    name = create_fixture_function(local_aws, "crash_handler")
    # When it is invoked
    response, payload = _invoke(local_aws, name)
    # Then the invocation fails as Lambda reports a runtime exit, and no replacement crash-loops
    assert response["FunctionError"] == "Unhandled" and payload["errorType"] == "Runtime.ExitError"
    time.sleep(1.0)
    assert local_aws.runtime.workers(name) == []


def test_a_model_images_functions_get_its_project_as_the_image_would(local_aws):
    # Given the endpoint of credit-decisions, whose image bakes in examples/credit_decisions
    # (build arg PROJECT), and credit-risk's batch step (training image, no project)
    runtime_ = local_aws.runtime
    project_fn, _ = runtime_.resolve("sluice-dev-credit-decisions-endpoint", None)
    plain_name = local_aws.physical_id("BatchPreprocessFunction", resource_type="AWS::Lambda::Function")
    plain_fn, _ = runtime_.resolve(plain_name, None)
    # When the emulator builds their worker specs and environments
    spec, plain = runtime_.spec_for(project_fn), runtime_.spec_for(plain_fn)
    env = runtime_.worker_environment(spec, "stream")
    # Then the project's pyproject.toml in the staged build context is SLUICE_PROJECT, as the
    # Dockerfile's ENV sets it, and its src/ layout's source root is importable
    pyproject = Path(spec.project)
    assert pyproject.parts[-3:] == ("examples", "credit_decisions", "pyproject.toml")
    assert pyproject.is_file() and pyproject.parent.parent.parent.name.startswith("asset.")
    assert env["SLUICE_PROJECT"] == spec.project
    assert str(pyproject.parent / "src") in env["PYTHONPATH"].split(os.pathsep)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import credit_decisions, sluice.models.project as p; "
            "print(credit_decisions.__file__); print(p.deployed_project().package)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, package = probe.stdout.split()
    assert Path(module_file).is_relative_to(pyproject.parent / "src") and package == "credit_decisions"
    # And a function without a project gets neither
    assert plain.package_type == "Image" and plain.project == ""
    assert "SLUICE_PROJECT" not in runtime_.worker_environment(plain, "stream")
