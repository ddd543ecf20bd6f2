"""A retraining whose train step runs on Fargate, end to end on the embedded local AWS.

``credit-decisions`` (the example project, its own image) retrains with
``"trainingCompute": "fargate"``: preprocess (Lambda) → train (``ecs:runTask.sync``; locally the
task definition's container command runs in a process, :mod:`localaws.ecs`) → collect → evaluate
→ register. If the session's ``infra/models.json`` does not already say ``fargate`` for it, this
module synthesizes the app with that override.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import joblib
import pytest

from sluice.models.imports import register_fitted
from sluice.names import registry_table_name, stage_bucket_name
from sluice.pipelines.datasource import write_table
from sluice.registry.store import ModelRegistry
from sluice_demo import datasets
from tests.local.conftest import wait_execution

pytestmark = pytest.mark.local

MODEL = "credit-decisions"
ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "credit_decisions"
HYPERPARAMETERS = {"max_iter": 40, "learning_rate": 0.12, "max_leaf_nodes": 15}


def _fargate_models() -> list[dict]:
    models = json.loads((ROOT / "infra" / "models.json").read_text())
    for model in models:
        if model["name"] == MODEL:
            model["trainingCompute"] = "fargate"
    return models


@pytest.fixture(scope="module")
def fargate_assembly(assembly_dir, tmp_path_factory) -> Path:
    """The session's assembly if it trains ``credit-decisions`` on Fargate, else one that does."""
    models = json.loads((ROOT / "infra" / "models.json").read_text())
    if any(m["name"] == MODEL and m.get("trainingCompute") == "fargate" for m in models):
        return assembly_dir
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out.fargate")
    build_app(context={"sluice:models": _fargate_models()}, outdir=str(outdir)).synth()
    return outdir


@pytest.fixture(scope="module")
def local_fargate(fargate_assembly, tmp_path_factory):
    from localaws import LocalAws

    with LocalAws.start(
        assembly_dir=fargate_assembly, state_dir=tmp_path_factory.mktemp("local-fargate")
    ) as aws:
        yield aws


@pytest.fixture(scope="module")
def stage(local_fargate, tmp_path_factory):
    """The example's pipeline fitted here, registered, approved and champion; data in the work bucket."""
    aws = local_fargate

    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage="dev", account=aws.account, region=aws.region)

    sys.path.insert(0, str(PROJECT / "src"))
    try:
        from credit_decisions import steps
    finally:
        sys.path.remove(str(PROJECT / "src"))
    registry = ModelRegistry(table_name=registry_table_name("dev"), bucket_name=bucket("artifacts"))
    data = steps.preprocess(datasets.credit_applications(2_000, seed=1))
    path = tmp_path_factory.mktemp("model") / "pipeline.joblib"
    joblib.dump(steps.train(data, HYPERPARAMETERS), path)
    record = register_fitted(registry, MODEL, path, data, target=steps.TARGET, packages=["credit_decisions"])
    registry.approve(MODEL, record.version, actor="tester")
    registry.set_alias(MODEL, "champion", record.version, actor="tester")
    data_uri = f"s3://{bucket('work')}/datasets/{MODEL}/latest.parquet"
    write_table(datasets.credit_applications(1_500, seed=21, shift={"income": 0.5}), data_uri)
    models = json.loads(aws.outputs["Models"])
    return {
        "registry": registry,
        "champion": record.version,
        "data": data_uri,
        "machine": models[MODEL]["retrain"],
    }


def _cluster(aws) -> str:
    return aws.physical_id("TrainingNetworkCluster", resource_type="AWS::ECS::Cluster")


def test_a_fargate_retraining_registers_a_pending_child_and_its_task_stopped_with_exit_code_0(
    local_fargate, stage
):
    aws, registry = local_fargate, stage["registry"]
    sfn = aws.client("stepfunctions")
    # When a retraining run is started by hand
    arn = sfn.start_execution(
        stateMachineArn=stage["machine"],
        name="fargate-1",
        input=json.dumps({"model": MODEL, "data_uri": stage["data"], "run_id": "fargate-1"}),
    )["executionArn"]
    described = wait_execution(sfn, arn)
    # Then it succeeds and registers a child of the champion, pending approval
    assert described["status"] == "SUCCEEDED", described.get("cause")
    output = json.loads(described["output"])
    child = registry.get(MODEL, version=output["version"])
    assert (child.status, child.parent_version) == ("PendingManualApproval", stage["champion"])
    assert registry.get(MODEL, alias="champion").version == stage["champion"]
    # And the train step ran as an ECS task, which DescribeTasks shows STOPPED with exit code 0
    ecs = aws.client("ecs")
    task_arns = ecs.list_tasks(cluster=_cluster(aws))["taskArns"]
    (task,) = ecs.describe_tasks(cluster=_cluster(aws), tasks=task_arns)["tasks"]
    assert task["lastStatus"] == "STOPPED"
    assert task["stopCode"] == "EssentialContainerExited"
    assert [c["exitCode"] for c in task["containers"]] == [0]
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    submitted = [e for e in history if e["type"] == "TaskSubmitted"]
    assert [e["taskSubmittedEventDetails"]["resourceType"] for e in submitted] == ["ecs"]


def test_a_train_task_that_fails_reads_stopped_with_its_exit_code(local_fargate, stage):
    # Given the train task definition, When it runs for a run that has no staged state
    aws = local_fargate
    ecs = aws.client("ecs")
    definition = aws.physical_id(
        "ModelcreditdecisionsRetrainingTrainTask", resource_type="AWS::ECS::TaskDefinition"
    )
    container = ecs.describe_task_definition(taskDefinition=definition)["taskDefinition"][
        "containerDefinitions"
    ][0]
    (task,) = ecs.run_task(
        cluster=_cluster(aws),
        taskDefinition=definition,
        launchType="FARGATE",
        overrides={
            "containerOverrides": [
                {
                    "name": container["name"],
                    "environment": [
                        {"name": "SLUICE_RETRAIN_MODEL", "value": MODEL},
                        {"name": "SLUICE_RETRAIN_RUN_ID", "value": "never-staged"},
                    ],
                }
            ]
        },
    )["tasks"]
    deadline = time.monotonic() + 120
    described = task
    while time.monotonic() < deadline and described["lastStatus"] != "STOPPED":
        time.sleep(0.5)
        (described,) = ecs.describe_tasks(cluster=_cluster(aws), tasks=[task["taskArn"]])["tasks"]
    # Then it stops with exit code 1
    assert described["lastStatus"] == "STOPPED"
    assert [c["exitCode"] for c in described["containers"]] == [1]


def test_a_stopped_task_with_a_non_zero_exit_code_fails_the_sync_state(monkeypatch):
    # Given moto's interpreter following a task whose container exited 1 (no server needed)
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcomeFailureError

    from localaws.stepfunctions import ecs_sync

    class Client:
        status = "RUNNING"

        def describe_tasks(self, cluster, tasks):
            container = {"name": "Train", "exitCode": 1, "lastStatus": Client.status}
            return {"tasks": [{"taskArn": tasks[0], "lastStatus": Client.status, "containers": [container]}]}

    class Env:
        def __init__(self) -> None:
            self.stack = [{"Tasks": [{"TaskArn": "arn:task/1", "ClusterArn": "arn:cluster"}]}]

    monkeypatch.setattr(ecs_sync, "_client", lambda *args: Client())
    resolve = ecs_sync.build_sync_resolver(None, Env(), None, {}, None)
    # When it polls: running, then stopped
    assert resolve() is None
    Client.status = "STOPPED"
    with pytest.raises(CallbackOutcomeFailureError) as failed:
        resolve()
    # Then the state fails with States.TaskFailed and the task's description (PascalCase) as the cause
    outcome = failed.value.callback_outcome_failure
    assert outcome.error == "States.TaskFailed"
    assert json.loads(outcome.cause)["Containers"][0]["ExitCode"] == 1


def _sleeper(aws, *, stop_timeout: int) -> str:
    """A task definition whose container sleeps for ten minutes (it ignores nothing: SIGTERM ends it)."""
    return aws.client("ecs").register_task_definition(
        family=f"sleeper-{stop_timeout}",
        containerDefinitions=[
            {
                "name": "Sleep",
                "image": "sleeper:latest",
                "entryPoint": ["python3", "-c", "import time; time.sleep(600)"],
                "memory": 128,
                "stopTimeout": stop_timeout,
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def _until_stopped(ecs, cluster: str, arn: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (task,) = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
        if task["lastStatus"] == "STOPPED":
            return task
        time.sleep(0.3)
    raise AssertionError(f"{arn} still {task['lastStatus']} after {timeout} s")


def test_stop_task_ends_the_tasks_process_as_ecs_stops_a_container(local_fargate):
    # Given a running local task
    aws = local_fargate
    ecs, cluster = aws.client("ecs"), _cluster(aws)
    (task,) = ecs.run_task(
        cluster=cluster, taskDefinition=_sleeper(aws, stop_timeout=5), launchType="FARGATE"
    )["tasks"]
    # When it is stopped
    stopped = ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="drill")["task"]
    assert stopped["desiredStatus"] == "STOPPED"
    # Then its process ends on SIGTERM: STOPPED, UserInitiated, with the reason and exit code 143
    task = _until_stopped(ecs, cluster, task["taskArn"])
    assert (task["stopCode"], task["stoppedReason"]) == ("UserInitiated", "drill")
    assert [c["exitCode"] for c in task["containers"]] == [143]


def test_a_sync_state_that_times_out_stops_its_task(local_fargate):
    from localaws.stepfunctions.ecs_sync import TIMEOUT_REASON

    # Given a state machine whose ecs:runTask.sync state may wait 3 seconds for a sleeping task
    aws = local_fargate
    ecs, sfn, cluster = aws.client("ecs"), aws.client("stepfunctions"), _cluster(aws)
    definition = {
        "StartAt": "Run",
        "States": {
            "Run": {
                "Type": "Task",
                "Resource": "arn:aws:states:::ecs:runTask.sync",
                "TimeoutSeconds": 3,
                "Parameters": {
                    "Cluster": cluster,
                    "TaskDefinition": _sleeper(aws, stop_timeout=2),
                    "LaunchType": "FARGATE",
                },
                "End": True,
            }
        },
    }
    machine = sfn.create_state_machine(
        name="sleeper-timeout",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{aws.account}:role/sleeper",
    )["stateMachineArn"]
    # When it runs
    described = wait_execution(sfn, sfn.start_execution(stateMachineArn=machine)["executionArn"], timeout=120)
    # Then the state fails with States.Timeout and its task is stopped, not left running
    assert (described["status"], described.get("error")) == ("FAILED", "States.Timeout")
    (arn,) = [a for a in ecs.list_tasks(cluster=cluster)["taskArns"] if _is_sleeper(ecs, cluster, a, 2)]
    task = _until_stopped(ecs, cluster, arn)
    assert (task["stopCode"], task["stoppedReason"]) == ("UserInitiated", TIMEOUT_REASON)
    assert [c["exitCode"] for c in task["containers"]] == [143]


def _is_sleeper(ecs, cluster: str, arn: str, stop_timeout: int) -> bool:
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    return f"task-definition/sleeper-{stop_timeout}:" in task["taskDefinitionArn"]
