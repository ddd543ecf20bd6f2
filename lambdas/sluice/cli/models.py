"""``sluice models``: register, list, describe, approve, reject, alias, history and download.

Versions are named ``NAME:VERSION`` or ``NAME@ALIAS`` (:mod:`sluice.cli.refs`). Reads the registry
from ``SLUICE_REGISTRY_TABLE`` and ``SLUICE_REGISTRY_BUCKET`` (found by ``sluice --stage``). Every
subcommand prints a table, or JSON with ``--json``; user errors exit 2 with one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sluice.cli.fitted import add_fitted_arguments, register_fitted_model
from sluice.cli.refs import ModelRef, model_ref, positive_int
from sluice.errors import SluiceError
from sluice.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.training import TrainingSpec
    from sluice.registry.records import VersionRecord
    from sluice.registry.store import ModelRegistry


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("models", help="the model registry: versions, approval, aliases, audit")
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    _add_register(commands)

    listing = commands.add_parser("list", help="registered models, or the versions of one model")
    listing.add_argument("name", nargs="?", help="list this model's versions")
    _json_flag(listing)
    listing.set_defaults(func=cmd_list)

    describe = commands.add_parser("describe", help="one version: status, artifacts, metrics, lineage")
    _ref_argument(describe, "latest")
    describe.add_argument("old_version", nargs="?", type=positive_int, help=argparse.SUPPRESS)
    _version_or_alias(describe)
    _json_flag(describe)
    describe.set_defaults(func=cmd_describe)

    for decision in ("approve", "reject"):
        sub = commands.add_parser(decision, help=f"{decision} a version")
        _ref_argument(sub, None)
        sub.add_argument("old_version", nargs="?", type=positive_int, help=argparse.SUPPRESS)
        sub.add_argument("--reason", default="", help="recorded in the audit trail")
        _json_flag(sub)
        sub.set_defaults(func=cmd_decide, decision=decision)

    alias = commands.add_parser(
        "alias", help="point an alias at a version: alias NAME:VERSION ALIAS (e.g. credit-risk:1 champion)"
    )
    _ref_argument(alias, None)
    alias.add_argument("words", nargs="+", metavar="ALIAS", help="the alias (older form: NAME ALIAS VERSION)")
    _json_flag(alias)
    alias.set_defaults(func=cmd_alias)

    history = commands.add_parser("history", help="the model's audit trail, oldest first")
    history.add_argument("name")
    _json_flag(history)
    history.set_defaults(func=cmd_history)

    download = commands.add_parser("download", help="fetch a version's artifacts (sha256-verified)")
    _ref_argument(download, "latest")
    _version_or_alias(download)
    download.add_argument("--out", required=True, help="directory to write the artifacts to")
    download.add_argument("--artifact", action="append", default=[], help="only these artifacts (repeatable)")
    _json_flag(download)
    download.set_defaults(func=cmd_download)


def _add_register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register = commands.add_parser(
        "register", help="train a model on a data file and register it, or register a fitted model"
    )
    register.add_argument("name", help="model name")
    source = register.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CSV or Parquet training data (path or s3://bucket/key)")
    source.add_argument(
        "--dataset", metavar="NAME", help="a generated dataset instead of a file (e.g. credit)"
    )
    add_fitted_arguments(register, source)
    register.add_argument(
        "--rows", type=int, default=5000, help="rows of the generated dataset (default 5000)"
    )
    register.add_argument("--seed", type=int, default=0, help="seed of the generated dataset (default 0)")
    register.add_argument("--spec", help="training spec as a JSON file (TrainingSpec.to_dict form)")
    register.add_argument("--target", help="label column (with --model: optional, for holdout metrics)")
    register.add_argument("--numeric", help="comma-separated numeric feature columns")
    register.add_argument("--categorical", default="", help="comma-separated categorical feature columns")
    register.add_argument("--estimator", default=None, help="scikit-learn estimator class path")
    register.add_argument("--task", choices=("classification", "regression"), default=None)
    register.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter (value parsed as JSON)",
    )
    register.add_argument("--parent-version", type=int, default=None, help="the version this one retrains")
    register.add_argument("--idempotency-key", default=None, help="retries with the same key register once")
    register.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (zip flavour)")
    _json_flag(register)
    register.set_defaults(func=cmd_register)


# -- commands ------------------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    from sluice.models.packaging import bundle_from_training
    from sluice.models.training import train
    from sluice.registry.lineage import Lineage
    from sluice.registry.validation import check_model_name

    registry = _registry()
    check_model_name(args.name)  # before minutes of training, not after
    if args.model or args.reference:  # a model fitted elsewhere: nothing to train
        return _registered(args, registry, register_fitted_model(args, registry))
    console = Console(stderr=True)
    # Transient and terminal-only: the spinner disappears, so an error stays a single line.
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        step = bar.add_task("loading data", total=None)
        frame, data = _load_data(args)
        spec = _spec(args, frame)
        bar.update(step, description=f"training {spec.estimator.rsplit('.', 1)[-1]} on {len(frame)} rows")
        result = train(frame, spec)
        bar.update(
            step, description="building artifacts" + ("" if args.no_onnx else " (with ONNX parity check)")
        )
        bundle = bundle_from_training(result, onnx=not args.no_onnx)
        bar.update(step, description="registering")
        lineage = Lineage(
            **data,
            code_version=_code_version(),
            image_digest=_image_digest(),
            hyperparameters=result.hyperparameters,
            parent_version=args.parent_version,
        )
        record = registry.register(args.name, bundle, lineage=lineage, idempotency_key=args.idempotency_key)
    return _registered(args, registry, record)


def _registered(args: argparse.Namespace, registry: ModelRegistry, record: VersionRecord) -> int:
    if args.json:
        _print_json(record.to_dict())
        return 0
    _describe_table(record, registry.aliases(args.name))
    Console().print(f"Registered [bold]{record.name} v{record.version}[/] as {record.status}.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.name:
        records = registry.list_versions(args.name)
        aliases = registry.aliases(args.name)
        if args.json:
            _print_json([r.to_dict() for r in records])
            return 0
        by_version: dict[int, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        table = Table(title=f"{args.name}: versions")
        for column in ("version", "status", "aliases", "metrics", "created", "flavours"):
            table.add_column(column)
        for r in records:
            table.add_row(
                str(r.version),
                r.status,
                ", ".join(sorted(by_version.get(r.version, []))),
                _metrics_text(r.metrics),
                r.created_at[:19],
                ", ".join(r.flavours),
            )
        Console().print(table)
        return 0
    models = registry.list_models()
    if args.json:
        _print_json(models)
        return 0
    table = Table(title="models")
    for column in ("name", "latest", "aliases", "updated"):
        table.add_column(column)
    for m in models:
        pointers = ", ".join(f"{k}=v{v}" for k, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], str(m["latest_version"]), pointers, m["updated_at"][:19])
    Console().print(table if models else "No models registered yet.")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    registry = _registry()
    ref = args.ref.with_version(args.old_version).with_version(args.version, args.alias)
    record = registry.get(ref.name, version=ref.version, alias=ref.alias)
    aliases = registry.aliases(ref.name)
    if args.json:
        data = record.to_dict()
        data["aliases"] = sorted(a for a, v in aliases.items() if v == record.version)
        _print_json(data)
        return 0
    _describe_table(record, aliases)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    """Approve or reject: through the stage's registry API where it has one, as AWS requires.

    Only the registry API's function may sign approvals, and only the approver role may call
    approve or reject (the API's resource policy), so the decision is a signed request to the
    API (``SLUICE_REGISTRY_API_URL``, which ``--stage`` sets). Without an API (a registry used as
    a library, in tests) the registry is called directly, as the verified caller.
    """
    registry = _registry()
    ref = args.ref.with_version(args.old_version)
    version = ref.require_version(registry)
    api = os.environ.get("SLUICE_REGISTRY_API_URL", "")
    if api:
        from sluice.registry.api_client import decide_via_api

        data = decide_via_api(api, ref.name, version, args.decision, reason=args.reason)
    else:
        actor = (
            registry.verified_caller()
        )  # who approves is who signs: never a name given on the command line
        decide = registry.approve if args.decision == "approve" else registry.reject
        data = decide(ref.name, version, actor=actor, reason=args.reason).to_dict()
    if args.json:
        _print_json(data)
    else:
        Console().print(
            f"{data['name']} v{data['version']} is now [bold]{data['status']}[/] (by {data.get('decided_by')})."
        )
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    ref: ModelRef = args.ref
    if len(args.words) == 2 and not ref.pinned:  # the older form: NAME ALIAS VERSION
        ref, alias = ref.with_version(args.words[1]), args.words[0]
    elif len(args.words) == 1:
        alias = args.words[0]
    else:
        raise SluiceError("expected: sluice models alias NAME:VERSION ALIAS")
    registry = _registry()
    version = ref.require_version(registry)
    actor = registry.verified_caller()
    registry.set_alias(ref.name, alias, version, actor=actor)
    if args.json:
        _print_json({"name": ref.name, "alias": alias, "version": version})
    else:
        Console().print(f"{ref.name}: {alias} -> v{version}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    events = _registry().history(args.name)
    if args.json:
        _print_json(events)
        return 0
    table = Table(title=f"{args.name}: audit trail")
    for column in ("time (UTC)", "event", "version", "actor", "detail"):
        table.add_column(column)
    for e in events:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v not in ("", None))
        table.add_row(
            e["ts"][:23], e["kind"], "" if e["version"] is None else str(e["version"]), e["actor"], detail
        )
    Console().print(table)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    registry = _registry()
    ref = args.ref.with_version(args.version, args.alias)
    record = registry.get(ref.name, version=ref.version, alias=ref.alias)
    names = args.artifact or sorted(record.artifacts)
    out = Path(args.out)
    # Fetch (and verify) everything before writing anything: no partial download on a mismatch.
    bodies = {artifact: registry.fetch(record.name, record.version, artifact) for artifact in names}
    written = []
    for artifact, body in bodies.items():
        target = out / artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        written.append(
            {"artifact": artifact, "path": str(target), "sha256": hashlib.sha256(body).hexdigest()}
        )
    (out / "record.json").write_text(json.dumps(record.to_dict(), indent=2))
    if args.json:
        _print_json({"name": record.name, "version": record.version, "files": written})
        return 0
    table = Table(title=f"{record.name} v{record.version}: downloaded to {out}")
    table.add_column("artifact")
    table.add_column("sha256 (verified)")
    for item in written:
        table.add_row(item["artifact"], item["sha256"][:16] + "...")
    Console().print(table)
    return 0


# -- helpers -------------------------------------------------------------------------------------


def _registry() -> ModelRegistry:
    from sluice.registry.store import ModelRegistry

    return ModelRegistry.from_settings(Settings.from_env())


def _load_data(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    if args.dataset:
        from sluice.cli.plugins import load_dataset

        dataset = load_dataset(args.dataset)
        if args.rows < 10:
            raise SluiceError(f"--rows must be at least 10; got {args.rows}")
        frame = dataset.generate(args.rows, seed=args.seed)
        # The generated data has no file: its lineage is the generator call and the CSV bytes' hash.
        body = frame.to_csv(index=False).encode()
        uri = f"sluice:datasets/{args.dataset}?rows={args.rows}&seed={args.seed}"
        return frame, {
            "data_uri": uri,
            "data_version": "",
            "data_sha256": hashlib.sha256(body).hexdigest(),
            "data_rows": len(frame),
        }
    from sluice.models.imports import read_reference

    return read_reference(args.data, option="--data")


def _spec(args: argparse.Namespace, frame: Any) -> TrainingSpec:
    from sluice.models.training import TrainingSpec

    if args.spec:
        path = Path(args.spec)
        try:
            data = json.loads(path.read_text())
        except OSError:
            raise SluiceError(f"--spec {args.spec}: cannot read the file") from None
        except json.JSONDecodeError as err:
            raise SluiceError(f"--spec {args.spec}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise SluiceError(f"--spec {args.spec}: expected a JSON object")
    elif args.dataset and not args.target:
        from sluice.cli.plugins import load_dataset

        dataset = load_dataset(args.dataset)
        data = {
            "target": dataset.target,
            "numeric": list(dataset.numeric),
            "categorical": list(dataset.categorical),
        }
    else:
        if not args.target or not args.numeric:
            raise SluiceError("give --spec FILE, or --target and --numeric (and optionally --categorical)")
        data = {
            "target": args.target,
            "numeric": _names(args.numeric),
            "categorical": _names(args.categorical),
        }
    data.setdefault("estimator", "sklearn.linear_model.LogisticRegression")
    if args.estimator:
        data["estimator"] = args.estimator
    if args.task:
        data["task"] = args.task
    hyperparameters = dict(data.get("hyperparameters") or {})
    hyperparameters.update(_params(args.param))
    data["hyperparameters"] = hyperparameters
    spec = TrainingSpec.from_dict(data)
    absent = [c for c in (spec.target, *spec.features) if c not in frame.columns]
    if absent:
        raise SluiceError(f"training data lacks column(s): {', '.join(absent)}")
    return spec


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SluiceError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _names(text: str) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _code_version() -> str:
    from sluice.registry.lineage import code_version

    return code_version()


def _image_digest() -> str:
    return os.environ.get("SLUICE_IMAGE_DIGEST", "")


def _describe_table(record: VersionRecord, aliases: dict[str, int]) -> None:
    console = Console()
    mine = sorted(a for a, v in aliases.items() if v == record.version)
    summary = Table(title=f"{record.name} v{record.version}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    rows = [
        ("status", record.status),
        ("aliases", ", ".join(mine) or "-"),
        ("estimator", record.estimator or "-"),
        ("metrics", _metrics_text(record.metrics) or "-"),
        ("created", f"{record.created_at} by {record.created_by}"),
        ("parent version", "-" if record.parent_version is None else str(record.parent_version)),
        ("flavours", ", ".join(record.flavours)),
    ]
    if record.decided_by:
        rows.append(
            ("decision", f"{record.decided_at} by {record.decided_by} {record.decision_reason}".strip())
        )
    lineage = record.lineage
    rows += [
        ("data", lineage.get("data_uri", "")),
        ("data version", lineage.get("data_version") or "-"),
        ("data sha256", lineage.get("data_sha256", "")),
        ("data rows", str(lineage.get("data_rows", ""))),
        ("code version", lineage.get("code_version") or "-"),
        ("image digest", lineage.get("image_digest") or "-"),
        ("role", lineage.get("role", "")),
    ]
    for field, value in rows:
        summary.add_row(field, value)
    console.print(summary)
    artifacts = Table(title="artifacts")
    for column in ("artifact", "size", "sha256"):
        artifacts.add_column(column)
    for name, info in sorted(record.artifacts.items()):
        artifacts.add_row(name, str(info["size"]), info["sha256"][:16] + "...")
    console.print(artifacts)


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _ref_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    unpinned = f" (NAME alone: the {default} version)" if default else ""
    parser.add_argument("ref", type=model_ref, metavar="MODEL", help=f"NAME:VERSION or NAME@ALIAS{unpinned}")


def _version_or_alias(parser: argparse.ArgumentParser) -> None:
    # The older form of NAME:VERSION and NAME@ALIAS, kept working.
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--version", type=positive_int, default=None, help=argparse.SUPPRESS)
    group.add_argument("--alias", default=None, help=argparse.SUPPRESS)
