"""ECS tasks on the embedded local AWS: ``RunTask`` runs the container's command in a local process.

moto 5.2.5 records a task on ``RunTask`` and runs nothing; the task reads ``STOPPED`` on the
next ``DescribeTasks`` with exit code 0. With :func:`start`, a task runs as AWS would run its
container, the way Lambda workers run functions (:mod:`localaws.lambdas`):

* the command is the container definition's ``entryPoint`` + ``command`` (a ``command``
  override replaces the latter), with ``python``/``python3`` this interpreter;
* the code is the ``lambdas/`` source root the image copies (the working directory); an image
  built with a ``PROJECT`` build arg (a model's image) also gets ``SLUICE_PROJECT`` and the
  project's source root on ``PYTHONPATH``, as :mod:`localaws.lambdas.spec` does;
* the environment is the container definition's plus the overrides', and the credentials a
  session of the task definition's ``TaskRoleArn`` (:data:`TASK_DEFINITION_CFN` registers what
  moto's CloudFormation drops);
* ``DescribeTasks`` shows ``RUNNING`` until the process exits, then ``STOPPED`` with
  ``stopCode`` ``EssentialContainerExited`` and the container's ``exitCode``. The output goes to
  the container's ``awslogs`` group (stream ``<prefix>/<container>/<task id>``) and to
  ``<state dir>/ecs/<task id>.log``;
* ``StopTask`` stops the process as ECS stops a container: ``SIGTERM``, then ``SIGKILL`` after
  the container's ``stopTimeout`` (default 30 s). The task reads ``desiredStatus`` ``STOPPED`` at
  once and ``lastStatus`` ``STOPPED`` when the process has exited, with ``stopCode``
  ``UserInitiated``, the call's reason and exit code 128 + the signal (143, or 137), as Docker
  reports it. (moto marks the task stopped and leaves whatever it runs running.)

Step Functions' ``ecs:runTask.sync`` polls ``DescribeTasks`` (moto's interpreter), and
:mod:`localaws.stepfunctions.ecs_sync` fails the state when the container exits non-zero, and
stops the task when the state times out.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localaws import credentials
from localaws.lambdas.spec import EMULATOR_ROOT, LAMBDAS_ROOT, _image_assets
from localaws.patches import Patch
from sluice.models.project import PROJECT_ENV, Project

if TYPE_CHECKING:
    from localaws.env import LocalAws

log = logging.getLogger("localaws.ecs")

#: What moto 5.2.5's ECS lacks, and what this module does about it.
GAPS: dict[str, str] = {
    "RunTask runs nothing": "filled: the container's command runs in a local process",
    "DescribeTasks": "filled: RUNNING while the process runs, then STOPPED with the container's exit code",
    "AWS::ECS::TaskDefinition": "filled: moto's CloudFormation drops TaskRoleArn and sizes; they are "
    "registered (TASK_DEFINITION_CFN), and the process gets a session of the task role",
    "awslogs": "filled: the process's output goes to the container's log group after it exits",
    "StopTask": "filled: moto marks the task stopped and leaves it running; the process gets "
    "SIGTERM, then SIGKILL after the container's stopTimeout",
    "cpu, memory, network configuration": "ignored: the process runs on the host's network",
}
#: ECS's wait between SIGTERM and SIGKILL when a container definition sets no ``stopTimeout``.
DEFAULT_STOP_TIMEOUT_S = 30
_PYTHONS = ("python", "python3")
_RUNNER: TaskRunner | None = None
_LOCK = threading.Lock()


def _wrap_run_task(original: Any) -> Any:
    def run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = original(self, *args, **kwargs)
        runner = _RUNNER
        if runner is not None:
            for task in tasks:
                runner.start(task, self.describe_task_definition(task.task_definition_arn))
        return tasks

    return run_task


RUN_TASK = Patch(
    target="moto.ecs.models.EC2ContainerServiceBackend.run_task",
    gap="RunTask records a task and runs nothing",
    replace=_wrap_run_task,
    owner=__name__,
    name="ecs_run_task",
)


def _wrap_stop_task(original: Any) -> Any:
    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        runner = _RUNNER
        task = runner.stopping(task_str, reason) if runner is not None else None
        return task if task is not None else original(self, cluster_str, task_str, reason)

    return stop_task


STOP_TASK = Patch(
    target="moto.ecs.models.EC2ContainerServiceBackend.stop_task",
    gap="StopTask marks the task STOPPED and leaves what it runs running",
    replace=_wrap_stop_task,
    owner=__name__,
    name="ecs_stop_task",
)


def _cfn_create(
    cls: Any,
    /,
    resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Any:
    """``AWS::ECS::TaskDefinition`` with what moto's CloudFormation drops (roles, sizes, platform).

    Not ``RequiresCompatibilities``/``NetworkMode``: moto's awsvpc ``RunTask`` fails creating the
    task's network interface (``NetworkInterface.private_dns_name``), and a local task runs on
    the host's network anyway. ``RunTask`` with launch type ``FARGATE`` works without them.
    """
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys
    from moto.ecs.models import ecs_backends  # only once moto is patched and serving

    props = cloudformation_json["Properties"]
    containers = remap_nested_keys(props.get("ContainerDefinitions", []), pascal_to_camelcase)
    for container in containers:
        # moto places a task by its containers' memory; Fargate containers may leave it to the task's.
        if props.get("Memory") and not (container.get("memory") or container.get("memoryReservation")):
            container["memory"] = int(props["Memory"])
    return ecs_backends[account_id][region_name].register_task_definition(
        family=props.get("Family", resource_name),
        container_definitions=containers,
        volumes=remap_nested_keys(props.get("Volumes", []), pascal_to_camelcase),
        cpu=props.get("Cpu"),
        memory=props.get("Memory"),
        task_role_arn=props.get("TaskRoleArn"),
        execution_role_arn=props.get("ExecutionRoleArn"),
        runtime_platform=remap_nested_keys(props.get("RuntimePlatform") or {}, pascal_to_camelcase) or None,
    )


TASK_DEFINITION_CFN = Patch(
    target="moto.ecs.models.TaskDefinition.create_from_cloudformation_json",
    gap="AWS::ECS::TaskDefinition drops TaskRoleArn, ExecutionRoleArn, Cpu and RuntimePlatform; "
    "RunTask needs container memory",
    replace=lambda _: classmethod(_cfn_create),
    owner=__name__,
    name="ecs_task_definition_cfn",
)


def install() -> None:
    """Apply the CloudFormation fix (a :data:`localaws.env.MOTO_PATCHES` entry; idempotent)."""
    TASK_DEFINITION_CFN.apply()


class TaskRunner:
    """Runs each task moto's ``RunTask`` records in a process, and marks it STOPPED when it exits."""

    def __init__(self, local: LocalAws) -> None:
        self.local = local
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._tasks: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._threads: list[threading.Thread] = []
        self._assets: dict[str, tuple[Path, dict[str, Any]]] | None = None

    def start(self, task: Any, definition: Any) -> None:
        """Start ``task``'s first container as a process; the task stays RUNNING until it exits."""
        container = definition.container_definitions[0]
        task._transitions = []  # moto's managed state must not move it to STOPPED by itself
        task.status = "RUNNING"
        task.desired_status = "RUNNING"
        argv, environment = self._command(task, definition, container)
        log_file = self.local.state_dir / "ecs" / f"{task.id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=str(LAMBDAS_ROOT), env=environment, stdout=out, stderr=subprocess.STDOUT
            )
        self._processes[task.task_arn] = process
        self._tasks[task.task_arn] = (task, container)
        thread = threading.Thread(
            target=self._wait, args=(task, container, process, log_file), name=f"ecs-{task.id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def stopping(self, task_ref: str, reason: str) -> Any:
        """``StopTask`` of a task this runner runs: signal its process; ``None`` for any other task."""
        arn = next((a for a in self._tasks if a == task_ref or a.endswith("/" + task_ref)), None)
        process = self._processes.get(arn or "")
        if arn is None or process is None:
            return None
        task, container = self._tasks[arn]
        task.desired_status = "STOPPED"
        task.stop_code = "UserInitiated"
        task.stopped_reason = reason or "Task stopped by user"
        grace = int(container.get("stopTimeout") or DEFAULT_STOP_TIMEOUT_S)
        process.terminate()
        killer = threading.Timer(grace, _kill_if_running, args=(process,))
        killer.daemon = True
        killer.start()
        return task

    def stop(self) -> None:
        """Stop the tasks still running (their tasks read STOPPED with the signal's exit code)."""
        for process in list(self._processes.values()):
            if process.poll() is None:
                process.terminate()
        for thread in self._threads:
            thread.join(timeout=10)

    def _wait(
        self, task: Any, container: dict[str, Any], process: subprocess.Popen[bytes], log_file: Path
    ) -> None:
        code = process.wait()
        if code < 0:  # killed by a signal: Docker reports 128 + the signal (143 for SIGTERM)
            code = 128 - code
        for each in task.containers:
            each.last_status = "STOPPED"
            each.exitCode = each.exit_code = code
            each.reason = "" if code == 0 else f"exit code {code}"
        if getattr(task, "stop_code", None) != "UserInitiated":
            task.stop_code = "EssentialContainerExited"
            task.stopped_reason = "Essential container in task exited"
        task.desired_status = "STOPPED"
        task.status = "STOPPED"
        self._processes.pop(task.task_arn, None)
        try:
            self._ship_logs(task, container, log_file)
        except Exception:  # the task's outcome stands without its logs
            log.exception("could not ship the logs of task %s", task.id)

    def _command(
        self, task: Any, definition: Any, container: dict[str, Any]
    ) -> tuple[list[str], dict[str, str]]:
        """The process's argv and environment: the container's, with its overrides applied."""
        override: dict[str, Any] = next(
            (
                o
                for o in task.overrides.get("containerOverrides", [])
                if o.get("name") == container.get("name")
            ),
            {},
        )
        argv = list(container.get("entryPoint") or []) + list(
            override.get("command") or container.get("command") or []
        )
        if not argv:
            raise ValueError(f"task definition {definition.arn}: the container has no entryPoint or command")
        if argv[0] in _PYTHONS:
            argv[0] = sys.executable
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
        }
        for pair in [*(container.get("environment") or []), *(override.get("environment") or [])]:
            env[pair["name"]] = str(pair["value"])
        path = [str(LAMBDAS_ROOT)]
        project = self._project(str(container.get("image") or ""))
        if project:
            env[PROJECT_ENV] = project
            path.append(str(Project.from_pyproject(project).source_root))
        role = str(getattr(definition, "task_role_arn", "") or "")
        env.update(
            {
                **credentials.function_environment(self.local, role, f"ecs-{task.id}"),
                "AWS_ENDPOINT_URL": self.local.endpoint_url,
                "AWS_REGION": self.local.region,
                "AWS_DEFAULT_REGION": self.local.region,
                "PYTHONPATH": os.pathsep.join([*path, str(EMULATOR_ROOT)]),
                "PYTHONDONTWRITEBYTECODE": "1",
                "SLUICE_LOCAL": "1",
            }
        )
        return argv, env

    def _project(self, image: str) -> str:
        """``pyproject.toml`` of the image's ``PROJECT`` build arg (a model's image), else ``""``."""
        if self._assets is None:
            self._assets = _image_assets(self.local)
        found = self._assets.get(image.rsplit(":", 1)[-1])
        if found is None:
            return ""
        directory, source = found
        project = (source.get("dockerBuildArgs") or {}).get("PROJECT")
        return str(directory / project / "pyproject.toml") if project else ""

    def _ship_logs(self, task: Any, container: dict[str, Any], log_file: Path) -> None:
        options = (container.get("logConfiguration") or {}).get("options") or {}
        group = options.get("awslogs-group")
        if not group:
            return
        stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{container.get('name')}/{task.id}"
        logs = self.local.client("logs")
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        lines = log_file.read_text(errors="replace").splitlines()[-5000:]
        events = [{"timestamp": now, "message": line} for line in lines if line] or [
            {"timestamp": now, "message": "(no output)"}
        ]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def _kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()


class EcsService:
    """What :func:`start` started: the runner and the patch (``stop`` undoes both)."""

    def __init__(self, runner: TaskRunner) -> None:
        self.runner = runner

    def stop(self) -> None:
        global _RUNNER
        with _LOCK:
            if _RUNNER is self.runner:
                _RUNNER = None
                RUN_TASK.undo()
                STOP_TASK.undo()
        self.runner.stop()


def start(local: LocalAws) -> EcsService:
    """Run the local stage's ECS tasks as processes (a :data:`localaws.env.SERVICES` entry)."""
    global _RUNNER
    runner = TaskRunner(local)
    with _LOCK:
        RUN_TASK.apply()
        STOP_TASK.apply()
        _RUNNER = runner
    return EcsService(runner)
