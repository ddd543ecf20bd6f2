"""``sluice local up|down|status|env``: the synthesized dev stage on the embedded local AWS.

``up`` deploys the assembly onto an in-process moto server and keeps serving it until Ctrl-C (or
``sluice local down``); ``up --background`` starts that server as a detached process, waits
until it is ready, prints the same table and returns. The running server writes
``<state-dir>/state.json`` (what is deployed, endpoints) and ``<state-dir>/local.pid``, and
registers itself in the per-user registry of running stacks (:mod:`sluice.cli.stage`), where
``sluice --stage dev ...``, ``local status``, ``local env`` and ``local down`` find it, as they
find the demo's (``sluice demo --keep``).

``--keep`` means the same on ``local up`` and ``demo``: when the command's work is done, the
stack stays up (in the foreground) until Ctrl-C or ``sluice local down``. For ``local up`` that
is what it always does; ``--background`` detaches.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sluice.cli.stage import (
    RunningStack,
    choose_local,
    export_lines,
    local_environment,
    process_alive,
    register_stack,
    running_stacks,
    unregister_stack,
)
from sluice.errors import SluiceError

PID_FILE = "local.pid"
LOG_FILE = "local.log"
READY_TIMEOUT_S = 300.0
DEFAULT_STATE_DIR = ".sluice/local"
_STATE_DIR_HELP = "the stack started with this --state-dir (default: the running one, else .sluice/local)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("local", help="run the synthesized dev stage on the embedded local AWS")
    commands = parser.add_subparsers(dest="local_command", required=True, metavar="ACTION")

    up = commands.add_parser("up", help="deploy the assembly locally and serve it (Ctrl-C stops)")
    up.add_argument("--assembly", default="cdk.out", help="synthesized cloud assembly (default: cdk.out)")
    up.add_argument("--stage", default="Dev", help="stage to deploy (default: Dev)")
    up.add_argument(
        "--state-dir", default=".sluice/local", help="state, logs and pid file (default: .sluice/local)"
    )
    up.add_argument("--port", type=int, default=0, help="moto server port (default: a free one)")
    up.add_argument("--gateway-port", type=int, default=0, help="first REST API port (default: free ones)")
    up.add_argument(
        "--background",
        "-d",
        dest="background",
        action="store_true",
        help="run the server as a detached process and return once it is ready",
    )
    up.add_argument(
        "--keep",
        action="store_true",
        help="stay up until Ctrl-C or `sluice local down` (what `up` always does; as on `sluice demo`)",
    )
    up.add_argument("--echo-logs", action="store_true", help="print Lambda worker logs to stderr")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="start empty: drop the journal and snapshot of earlier runs (<state-dir>/data)",
    )
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="stop the running local stack (`local up` or `demo --keep`)")
    down.add_argument("--state-dir", default=None, help=_STATE_DIR_HELP)
    down.set_defaults(func=cmd_down)

    status = commands.add_parser("status", help="show the running local stacks (the demo's too)")
    status.add_argument("--state-dir", default=None, help=_STATE_DIR_HELP)
    status.set_defaults(func=cmd_status)

    env = commands.add_parser(
        "env",
        help='print `export` lines for other tools (aws CLI, curl --aws-sigv4): eval "$(sluice local env)"',
    )
    env.add_argument("--state-dir", default=None, help=_STATE_DIR_HELP)
    env.add_argument("--stage", default="dev", help="the stage's stack to describe (default dev)")
    env.add_argument(
        "--role",
        default=None,
        help="credentials of a session of this role of the stage (e.g. sluice-dev-approver) instead of "
        "the developer's key, as `aws sts assume-role` gives them",
    )
    env.add_argument(
        "--session", default="local-user", help="the role session's name, with --role (a person)"
    )
    env.set_defaults(func=cmd_env)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    running = _running_pid(state_dir)
    if running is not None:
        raise SluiceError(
            f"a local stage already runs from {state_dir} (pid {running}); `sluice local down` first"
        )
    if not (Path(args.assembly) / "manifest.json").is_file():
        raise SluiceError(
            f"no cloud assembly at {args.assembly} (run `make synth` or `cdk synth -o {args.assembly}`)"
        )
    if args.background:
        return _up_background(args, state_dir)
    return _up_foreground(args, state_dir)


def _up_foreground(args: argparse.Namespace, state_dir: Path) -> int:
    from localaws import LocalAws

    if args.echo_logs:
        os.environ["SLUICE_LOCAL_ECHO_LOGS"] = "1"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.fresh:
        shutil.rmtree(state_dir / "data", ignore_errors=True)
    aws = LocalAws.start(
        assembly_dir=args.assembly,
        state_dir=state_dir,
        stage=args.stage,
        port=args.port,
        gateway_port=args.gateway_port,
        persist=True,
    )
    pid_file = state_dir / PID_FILE
    try:
        pid_file.write_text(str(os.getpid()))
        register_stack(state_dir / "state.json", stage=aws.stage, kind="local")
        print_state(aws.state(), header=f"Local {aws.stage} stage is up in {aws.timings.total:.1f} s")
        print("Ctrl-C or `sluice local down` stops it.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        unregister_stack()
        aws.stop()
        pid_file.unlink(missing_ok=True)
    print("local stage stopped", flush=True)
    return 0


def _up_background(args: argparse.Namespace, state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "sluice",
        "local",
        "up",
        "--assembly",
        str(args.assembly),
        "--stage",
        args.stage,
        "--state-dir",
        str(state_dir),
        "--port",
        str(args.port),
        "--gateway-port",
        str(args.gateway_port),
    ]
    if args.echo_logs:
        command.append("--echo-logs")
    if args.fresh:
        command.append("--fresh")
    (state_dir / PID_FILE).unlink(missing_ok=True)
    with open(state_dir / LOG_FILE, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (state_dir / LOG_FILE).read_text()[-2000:]
            raise SluiceError(f"the local stage exited with status {process.returncode}:\n{tail}")
        if _running_pid(state_dir) == process.pid:
            from localaws.env import read_state

            state = read_state(state_dir) or {}
            print_state(state, header=f"Local {state.get('stage', '')} stage is up (pid {process.pid})")
            print(f"`sluice local down --state-dir {state_dir}` stops it; logs: {state_dir / LOG_FILE}")
            return 0
        time.sleep(0.2)
    process.terminate()
    raise SluiceError(
        f"the local stage was not ready after {READY_TIMEOUT_S:.0f} s (see {state_dir / LOG_FILE})"
    )


def cmd_down(args: argparse.Namespace) -> int:
    target = _target(args.state_dir)
    if target is None:
        print(f"no local stack runs (from {args.state_dir or 'any state dir'})")
        return 0
    pid, state_dir = target
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.2)
    if process_alive(pid):
        raise SluiceError(f"local stage (pid {pid}) did not stop within 30 s")
    (state_dir / PID_FILE).unlink(missing_ok=True)
    unregister_stack(pid)
    print(f"stopped the local stage (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from localaws.env import read_state

    shown = 0
    for stack in running_stacks():
        if args.state_dir and stack.state_file.parent.resolve() != Path(args.state_dir).resolve():
            continue
        print_state(stack.state, header=_header(stack))
        shown += 1
    if shown:
        return 0
    state_dir = Path(args.state_dir or DEFAULT_STATE_DIR)
    state = read_state(state_dir)
    if state is None:
        raise SluiceError(f"no local stack runs and no state in {state_dir} (run `sluice local up`)")
    pid = _running_pid(state_dir)
    header = f"Local {state['stage']} stage: " + (f"running (pid {pid})" if pid else "stopped")
    print_state(state, header=header)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from localaws.env import read_state

    if args.state_dir:
        state = read_state(Path(args.state_dir))
        if state is None or not process_alive(int(state.get("pid") or 0)):
            raise SluiceError(f"no local stack runs from {args.state_dir} (run `sluice local up`)")
    else:
        chosen = choose_local(args.stage)
        if chosen is None:
            raise SluiceError(
                f"no local {args.stage} stack runs (run `sluice local up` or `sluice demo --keep`)"
            )
        state = chosen.state
    env = local_environment(state, stage=args.stage)
    if args.role:
        env.update(_role_session(env, role=args.role, session=args.session))
    print(f'# the local {args.stage} stack: eval "$(sluice local env)"')
    print("\n".join(export_lines(env)))
    return 0


def _role_session(env: dict[str, str], *, role: str, session: str) -> dict[str, str]:
    """``AWS_*`` credentials of a session of ``role``, assumed with the developer's key."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    account = sts.get_caller_identity()["Account"]
    issued = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName=session, SourceIdentity=session
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": issued["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": issued["SecretAccessKey"],
        "AWS_SESSION_TOKEN": issued["SessionToken"],
    }


def _header(stack: RunningStack) -> str:
    what = "sluice demo --keep" if stack.kind == "demo" else "sluice local up"
    return f"Local {stack.stage} stage: running (pid {stack.pid}, {what}, state {stack.state_file.parent})"


def _target(state_dir: str | None) -> tuple[int, Path] | None:
    """The pid and state dir of the stack to stop: the one of ``state_dir``, else the only
    registered one (newest first), else the default state dir's."""
    if state_dir:
        pid = _running_pid(Path(state_dir))
        return (pid, Path(state_dir)) if pid is not None else None
    stacks = running_stacks()
    if stacks:
        return stacks[0].pid, stacks[0].state_file.parent
    pid = _running_pid(Path(DEFAULT_STATE_DIR))
    return (pid, Path(DEFAULT_STATE_DIR)) if pid is not None else None


def print_state(state: dict, *, header: str) -> None:
    """The endpoints and names a user needs, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header, show_lines=False)
    table.add_column("What")
    table.add_column("Value", overflow="fold")
    table.add_row("AWS endpoint", state.get("endpoint_url", ""))
    table.add_row("Account / region", f"{state.get('account')} / {state.get('region')}")
    for api in state.get("apis", []):
        table.add_row(f"REST API {api.get('logical_id') or api['name']}", api["url"])
    wanted = {
        "AWS::Lambda::Function": "Function",
        "AWS::DynamoDB::Table": "Table",
        "AWS::S3::Bucket": "Bucket",
        "AWS::StepFunctions::StateMachine": "State machine",
        "AWS::KinesisFirehose::DeliveryStream": "Firehose",
        "AWS::SNS::Topic": "Topic",
    }
    counts: dict[str, int] = {}
    for stack in state.get("stacks", []):
        for resource in stack["resources"]:
            kind = resource["support"].split(" ")[0]
            counts[kind] = counts.get(kind, 0) + 1
            label = wanted.get(resource["resource_type"])
            if label:
                table.add_row(f"{label} {resource['logical_id']}", resource["physical_id"])
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    table.add_row("Resources", f"{sum(counts.values())} ({summary})")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if state.get("endpoint_url"):
        print(f"AWS endpoint: AWS_ENDPOINT_URL={state['endpoint_url']}")
        stage = str(state.get("stage", "dev")).lower()
        print(
            f"`sluice --stage {stage} ...` finds this stack by itself; "
            f'for other tools (aws CLI, curl --aws-sigv4): eval "$(sluice local env --stage {stage})"'
        )


def _running_pid(state_dir: Path) -> int | None:
    pid_file = state_dir / PID_FILE
    if not pid_file.is_file():
        return None
    try:
        pid = int(pid_file.read_text().strip())
    except ValueError:
        return None
    return pid if process_alive(pid) else None
