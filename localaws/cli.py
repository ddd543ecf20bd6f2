"""``sluice local up|down|status``: the synthesized dev stage on the embedded local AWS.

``up`` deploys the assembly onto an in-process moto server and serves it until Ctrl-C (or
``sluice local down``); ``up --background`` starts that server as a detached process, waits
until it is ready, prints the same table and returns. The running server writes
``<state-dir>/state.json`` (what is deployed, endpoints) and ``<state-dir>/local.pid``.
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

from sluice.errors import SluiceError

PID_FILE = "local.pid"
LOG_FILE = "local.log"
READY_TIMEOUT_S = 300.0


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
        "--keep",
        dest="background",
        action="store_true",
        help="run the server as a detached process and return once it is ready",
    )
    up.add_argument("--echo-logs", action="store_true", help="print Lambda worker logs to stderr")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="start empty instead of restoring the buckets and tables saved by the last `down`",
    )
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="stop the local stage started with `up`")
    down.add_argument("--state-dir", default=".sluice/local")
    down.set_defaults(func=cmd_down)

    status = commands.add_parser("status", help="show what the local stage runs")
    status.add_argument("--state-dir", default=".sluice/local")
    status.set_defaults(func=cmd_status)


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
        print_state(aws.state(), header=f"Local {aws.stage} stage is up in {aws.timings.total:.1f} s")
        print("Ctrl-C or `sluice local down` stops it.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
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
    state_dir = Path(args.state_dir)
    pid = _running_pid(state_dir)
    if pid is None:
        print(f"no local stage runs from {state_dir}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        raise SluiceError(f"local stage (pid {pid}) did not stop within 30 s")
    (state_dir / PID_FILE).unlink(missing_ok=True)
    print(f"stopped the local stage (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from localaws.env import read_state

    state_dir = Path(args.state_dir)
    state = read_state(state_dir)
    if state is None:
        raise SluiceError(f"no local stage state in {state_dir} (run `sluice local up`)")
    pid = _running_pid(state_dir)
    header = f"Local {state['stage']} stage: " + (f"running (pid {pid})" if pid else "stopped")
    print_state(state, header=header)
    return 0


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
        print(f"Point the AWS CLI and SDKs at it: export AWS_ENDPOINT_URL={state['endpoint_url']}")


def _running_pid(state_dir: Path) -> int | None:
    pid_file = state_dir / PID_FILE
    if not pid_file.is_file():
        return None
    try:
        pid = int(pid_file.read_text().strip())
    except ValueError:
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
