"""Stage discovery: ``sluice --stage dev ...`` finds the stage's resources, endpoint and credentials.

Where a stage is found
----------------------
1. **A running local stack** of that stage (``sluice local up`` or ``sluice demo --keep``). Each
   running stack registers itself in the per-user registry :func:`stacks_dir`
   (``~/.sluice/stacks/<pid>.json``, written by the emulator's CLI) with this JSON::

       {"pid": 1234, "stage": "Dev", "kind": "local" | "demo",
        "state_file": "/abs/path/state.json", "started_at": 1733400000.0, "cwd": "/abs/path"}

   An entry counts while its process is alive and its state file's ``pid`` is that process. The
   state file (written by the local stack, ``localaws.env.LocalAws.write_state``) is JSON with at
   least ``stage``, ``account``, ``region``, ``endpoint_url``, ``stacks`` (each with ``outputs``
   and ``resources``: ``logical_id``, ``physical_id``, ``resource_type``), ``apis`` (each with
   ``api_id``, ``logical_id`` and the local ``url``) and, once issued, ``credentials``
   (``aws_access_key_id``, ``aws_secret_access_key``, ``user_arn``). The runtime reads this JSON;
   it never imports the emulator.
2. **Otherwise AWS**: the outputs of the stage's CloudFormation stacks (``Dev-Stateful``,
   ``Dev-Service``; output names in :data:`sluice.names.STAGE_OUTPUTS`), with the caller's
   credentials and region (the region falls back to ``cdk.json``'s ``<stage>:region``).

The result is a set of environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...,
``SLUICE_REGISTRY_TABLE``, ...) that the command then runs with. Variables the caller set
explicitly win over discovered ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.errors import SluiceError
from sluice.names import STAGE_OUTPUTS, registry_table_name, stage_bucket_name, stage_stack_names

STACK_KINDS = ("local", "demo")
_EXECUTE_API = re.compile(r"^https://([a-z0-9]+)\.execute-api\.[^/]+(/.*)?$")
#: moto's own pair, accepted by a local stack that issues no credentials of its own.
_LOCAL_DEFAULT_CREDENTIALS = ("testing", "testing")


def stacks_dir() -> Path:
    """The per-user registry of running local stacks: ``~/.sluice/stacks``."""
    return Path.home() / ".sluice" / "stacks"


@dataclass(frozen=True)
class RunningStack:
    """A local stack whose process is alive, with the state it wrote."""

    pid: int
    stage: str
    kind: str
    state_file: Path
    started_at: float
    cwd: str
    state: dict[str, Any]


# -- the registry of running stacks (written by the emulator's CLI, read here) ----------------------


def register_stack(state_file: str | Path, *, stage: str, kind: str, pid: int | None = None) -> Path:
    """Record a running local stack; returns the entry (remove it with :func:`unregister_stack`)."""
    if kind not in STACK_KINDS:
        raise ValueError(f"kind must be one of {STACK_KINDS}, got {kind!r}")
    pid = os.getpid() if pid is None else pid
    folder = stacks_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "pid": pid,
        "stage": stage,
        "kind": kind,
        "state_file": str(Path(state_file).resolve()),
        "started_at": time.time(),
        "cwd": os.getcwd(),
    }
    path = folder / f"{pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry, indent=2))
    tmp.replace(path)
    return path


def unregister_stack(pid: int | None = None) -> None:
    (stacks_dir() / f"{os.getpid() if pid is None else pid}.json").unlink(missing_ok=True)


def running_stacks(stage: str | None = None) -> list[RunningStack]:
    """Live local stacks (of ``stage``, case-insensitive, if given), newest first.

    Entries of processes that are gone are removed on the way.
    """
    found = []
    folder = stacks_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        stack = _read_entry(path)
        if stack is None:
            path.unlink(missing_ok=True)
            continue
        if stage is None or stack.stage.lower() == stage.lower():
            found.append(stack)
    return sorted(found, key=lambda s: -s.started_at)


def _read_entry(path: Path) -> RunningStack | None:
    try:
        entry = json.loads(path.read_text())
        pid = int(entry["pid"])
        state_file = Path(entry["state_file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not process_alive(pid):
        return None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or int(state.get("pid") or 0) != pid:
        return None  # a reused pid, or a state file another process has taken over since
    return RunningStack(
        pid=pid,
        stage=str(entry.get("stage") or state.get("stage", "")),
        kind=str(entry.get("kind", "local")),
        state_file=state_file,
        started_at=float(entry.get("started_at") or 0.0),
        cwd=str(entry.get("cwd", "")),
        state=state,
    )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of this process is reaped and counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child: kill(0) answered, so it runs
        return True


# -- the environment of a stage -----------------------------------------------------------------


def local_environment(state: Mapping[str, Any], *, stage: str | None = None) -> dict[str, str]:
    """The environment that points the AWS SDKs, the AWS CLI and ``sluice`` at a local stack."""
    stage = (stage or str(state.get("stage", "dev"))).lower()
    credentials = state.get("credentials") or {}
    key = credentials.get("aws_access_key_id") or _LOCAL_DEFAULT_CREDENTIALS[0]
    secret = credentials.get("aws_secret_access_key") or _LOCAL_DEFAULT_CREDENTIALS[1]
    region = str(state.get("region", ""))
    outputs: dict[str, str] = {}
    for stack in state.get("stacks") or []:
        outputs.update({k: str(v) for k, v in (stack.get("outputs") or {}).items()})
    apis = {api.get("api_id"): str(api["url"]).rstrip("/") for api in state.get("apis") or []}
    # API URLs: the outputs name the API (https://<id>.execute-api...); locally it is served here.
    for name, value in outputs.items():
        outputs[name] = _local_url(value, apis)
    if outputs.get("Models"):  # each model's URL inside the JSON output
        with contextlib.suppress(ValueError, AttributeError):
            models = json.loads(outputs["Models"])
            for entry in models.values():
                entry["url"] = _local_url(str(entry.get("url", "")), apis)
            outputs["Models"] = json.dumps(models)
    env = {
        "AWS_ENDPOINT_URL": str(state.get("endpoint_url", "")),
        "AWS_ACCESS_KEY_ID": str(key),
        "AWS_SECRET_ACCESS_KEY": str(secret),
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **_conventional(stage, account=str(state.get("account", "")), region=region, state=state),
        **_from_outputs(outputs),
    }
    env["SLUICE_STAGE"] = stage
    return {k: v for k, v in env.items() if v}


def _local_url(value: str, apis: Mapping[Any, str]) -> str:
    """An API's AWS URL (``https://<id>.execute-api...``) as the local gateway serves it, else ``value``."""
    match = _EXECUTE_API.match(value)
    if not match or match.group(1) not in apis:
        return value
    path = (match.group(2) or "/").split("/", 2)  # "", "<stage>", "rest"
    return apis[match.group(1)] + ("/" + path[2] if len(path) > 2 and path[2] else "")


def aws_environment(stage: str, *, region: str | None = None) -> dict[str, str]:
    """The environment of a stage deployed in AWS, read from its stacks' CloudFormation outputs.

    Raises
    ------
    SluiceError
        If a stack of the stage does not exist in the caller's account and region.
    """
    from botocore.exceptions import ClientError

    from sluice import aws

    region = region or _session_region() or _cdk_json_region(stage)
    if not region:
        raise SluiceError(
            f"stage {stage}: no AWS region (set AWS_REGION, configure one in your profile, or run "
            f"from the app directory, whose cdk.json names {stage}:region)"
        )
    cfn = aws.client("cloudformation", region=region)
    outputs: dict[str, str] = {}
    for stack_name in stage_stack_names(stage):
        try:
            stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as err:
            if "does not exist" in str(err):
                raise SluiceError(
                    f"stage {stage}: stack {stack_name} does not exist in {region} "
                    f"(deploy it: npx cdk deploy -c stage={stage} '{stage.capitalize()}/*', "
                    "or start a local one: sluice local up)"
                ) from None
            raise
        outputs.update({o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])})
    env = {"AWS_DEFAULT_REGION": region, **_from_outputs(outputs)}
    env["SLUICE_ENDPOINT_URL"] = env.get("SLUICE_ENDPOINT_URL", "").rstrip("/")
    env["SLUICE_REGISTRY_API_URL"] = env.get("SLUICE_REGISTRY_API_URL", "").rstrip("/")
    env["SLUICE_STAGE"] = stage
    return {k: v for k, v in env.items() if v}


def _from_outputs(outputs: Mapping[str, str]) -> dict[str, str]:
    env = {variable: outputs[name].rstrip("/") for name, variable in STAGE_OUTPUTS.items() if name in outputs}
    if env.get("SLUICE_ENDPOINT_URL"):
        # The batch pipeline's endpoint variant (and `batch run --here --via-endpoint`) posts here.
        env["SLUICE_BATCH_ENDPOINT_URL"] = env["SLUICE_ENDPOINT_URL"] + "/predict"
    return env


def _conventional(stage: str, *, account: str, region: str, state: Mapping[str, Any]) -> dict[str, str]:
    """Names that follow from ``sluice.names`` (for a state written before the stage had outputs)."""
    if not account or not region:
        return {}

    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage=stage, account=account, region=region)

    env = {
        "SLUICE_REGISTRY_TABLE": registry_table_name(stage),
        "SLUICE_REGISTRY_BUCKET": bucket("artifacts"),
        "SLUICE_CAPTURE_BUCKET": bucket("capture"),
        "SLUICE_WORK_BUCKET": bucket("work"),
    }
    for stack in state.get("stacks") or []:
        for resource in stack.get("resources") or []:
            if resource.get("resource_type") == "AWS::StepFunctions::StateMachine" and str(
                resource.get("logical_id", "")
            ).startswith("RetrainingStateMachine"):
                env["SLUICE_RETRAIN_STATE_MACHINE_ARN"] = str(resource.get("physical_id", ""))
    for api in state.get("apis") or []:
        logical_id = str(api.get("logical_id", ""))
        if logical_id.startswith("EndpointRestApi"):
            env["SLUICE_ENDPOINT_URL"] = str(api["url"]).rstrip("/")
            env["SLUICE_BATCH_ENDPOINT_URL"] = env["SLUICE_ENDPOINT_URL"] + "/predict"
        elif logical_id.startswith("RegistryApiRestApi"):
            env["SLUICE_REGISTRY_API_URL"] = str(api["url"]).rstrip("/")
    return env


def _session_region() -> str | None:
    import boto3

    region: str | None = boto3.session.Session().region_name
    return region


def _cdk_json_region(stage: str) -> str | None:
    """``<stage>:region`` of the app's ``cdk.json`` in this directory or a parent, if any."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        path = folder / "cdk.json"
        if path.is_file():
            try:
                value = json.loads(path.read_text()).get("context", {}).get(f"{stage}:region")
            except (OSError, ValueError, AttributeError):
                return None
            return str(value) if value else None
    return None


# -- choosing and applying ----------------------------------------------------------------------


def choose_local(stage: str) -> RunningStack | None:
    """The running local stack of ``stage``: the only one, else the one started from this
    directory, else the newest."""
    stacks = running_stacks(stage)
    if len(stacks) <= 1:
        return stacks[0] if stacks else None
    here = [s for s in stacks if s.cwd == os.getcwd()]
    return (here or stacks)[0]


def discover(stage: str, *, aws_only: bool = False) -> tuple[dict[str, str], str]:
    """The environment of ``stage`` and where it was found (``local stack (pid N)`` or ``AWS``)."""
    if not aws_only:
        local = choose_local(stage)
        if local is not None:
            return local_environment(local.state, stage=stage), f"local {local.kind} stack (pid {local.pid})"
    return aws_environment(stage), "AWS"


@contextmanager
def stage_environment(env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Within the block, ``os.environ`` has ``env``'s variables the caller has not set; yields those.

    The credentials pair is set only as a pair, so explicit credentials are never mixed with
    discovered ones.
    """
    added = {k: v for k, v in env.items() if k not in os.environ}
    if "AWS_ACCESS_KEY_ID" in os.environ or "AWS_SECRET_ACCESS_KEY" in os.environ:
        added.pop("AWS_ACCESS_KEY_ID", None)
        added.pop("AWS_SECRET_ACCESS_KEY", None)
    os.environ.update(added)
    try:
        yield added
    finally:
        for key in added:
            os.environ.pop(key, None)


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` lines for a shell (``eval "$(sluice local env)"``)."""
    import shlex

    return [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
