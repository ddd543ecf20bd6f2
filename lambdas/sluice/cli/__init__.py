"""The ``sluice`` command line. Each command group lives in its own module and registers itself.

The runtime's groups are listed in :func:`runtime_command_groups`. Installed packages add more
through the ``sluice.cli`` entry-point group (see :mod:`sluice.cli.plugins`): the embedded local
AWS adds ``sluice local`` and the demo adds ``sluice demo``; the runtime imports neither.

User errors print one line, ``sluice: error: <message>``, and exit with code 2; so do missing
credentials or region, an unreachable endpoint and an AWS error response (never a traceback).

``sluice --stage dev COMMAND`` (or ``SLUICE_STAGE=dev``) runs the runtime's commands against that
stage: a running local stack of it, else its CloudFormation stacks in AWS (:mod:`sluice.cli.stage`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from sluice import __version__
from sluice.cli.plugins import installed_command_groups
from sluice.errors import SluiceError

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

EXIT_USER_ERROR = 2
#: The runtime's command groups, which run against a stage (plugins such as ``local`` and ``demo`` do not).
STAGE_COMMANDS = ("models", "endpoint", "retrain", "batch", "promote", "monitor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Serverless MLOps on AWS.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    parser.add_argument(
        "--stage",
        default=None,
        help="the stage to act on (e.g. dev; default: $SLUICE_STAGE): its names, endpoint and "
        "credentials come from the running local stack of that stage, else from its CloudFormation "
        "outputs in AWS; variables you set yourself win",
    )
    parser.add_argument(
        "--aws", action="store_true", help="with --stage: use the stage in AWS even if a local stack runs"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in runtime_command_groups():
        add_parser(subparsers)
    for entry in installed_command_groups():
        _add_plugin(subparsers, entry)
    return parser


def runtime_command_groups() -> tuple[AddParser, ...]:
    """The runtime's own command groups, in the order ``sluice --help`` lists them (plugins follow).

    Imported here rather than at the top, so importing one command module (``sluice.cli.promote``)
    does not import them all.
    """
    from sluice.cli import batch, endpoint, models, monitor, promote, retrain

    return (
        models.add_parser,
        endpoint.add_parser,
        retrain.add_parser,
        batch.add_parser,
        promote.add_parser,
        monitor.add_parser,
    )


def _add_plugin(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], entry: EntryPoint) -> None:
    """Add an installed command group; one that cannot be imported is skipped with a warning."""
    try:
        add_parser: AddParser = entry.load()
    except ImportError as err:
        # A broken plugin must not take the runtime's own commands down with it.
        print(
            f"sluice: warning: command group {entry.name!r} ({entry.value}) not loaded: {err}",
            file=sys.stderr,
        )
        return
    add_parser(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _stage(args):
            result = args.func(args)
    except SluiceError as err:
        print(f"sluice: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NoCredentialsError:
        return _error(
            "no AWS credentials (for a local stack: `sluice local up`, then `sluice --stage dev ...`; "
            "for AWS: configure a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    except NoRegionError:
        return _error("no AWS region (set AWS_REGION, or run from the app directory with its cdk.json)")
    except ClientError as err:
        error = err.response.get("Error", {})
        return _error(f"{err.operation_name}: {error.get('Code', 'error')}: {error.get('Message', err)}")
    except BotoCoreError as err:  # EndpointConnectionError, PartialCredentialsError, ProfileNotFound, ...
        return _error(str(err))
    except KeyboardInterrupt:
        print("sluice: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _stage(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The environment of ``--stage``/``SLUICE_STAGE`` for a runtime command (nothing otherwise)."""
    stage = getattr(args, "stage", None) or os.environ.get("SLUICE_STAGE")
    if args.command not in STAGE_COMMANDS or not stage:
        return contextlib.nullcontext()
    from sluice.cli.stage import discover, stage_environment

    args.stage = stage
    env, _where = discover(stage, aws_only=args.aws)
    return stage_environment(env)


def _error(message: str) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"sluice: error: {first}", file=sys.stderr)
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
