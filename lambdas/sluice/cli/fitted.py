"""``sluice models register NAME --model FILE_OR_DIR --reference DATA [--onnx FILE]``: register a fitted model.

``--model`` takes a scikit-learn file, an MLflow model directory or an ONNX graph (``.onnx``,
served by the zip endpoint); ``--onnx`` gives a scikit-learn model an ONNX twin, kept only if it
predicts the reference rows as the model does.

``--flavour python --model DIR [--project PYPROJECT]`` registers the files of ``DIR`` for the
project's own model class (``[tool.sluice] model``; the project given, else ``SLUICE_PROJECT``),
which must load them and predict the reference rows first.

The options join ``sluice models register`` (:mod:`sluice.cli.models`); the work is
:func:`sluice.models.imports.register_fitted` and :func:`~sluice.models.imports.register_python`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sluice.errors import SluiceError

if TYPE_CHECKING:  # pragma: no cover
    from sluice.registry.records import VersionRecord
    from sluice.registry.store import ModelRegistry


def add_fitted_arguments(register: argparse.ArgumentParser, source: argparse._MutuallyExclusiveGroup) -> None:
    """``--model`` (a third source beside ``--data`` and ``--dataset``), ``--reference`` and ``--trust``."""
    source.add_argument(
        "--model",
        metavar="FILE_OR_DIR",
        help="register this fitted model as it is: a .skops, .joblib, .pkl or .onnx file, or an MLflow "
        "model directory (with --reference)",
    )
    register.add_argument(
        "--onnx",
        metavar="FILE",
        help="with a scikit-learn --model: its ONNX twin for the zip endpoint, kept only if it predicts "
        "the --reference rows as the model does (the version's notes say why not)",
    )
    register.add_argument(
        "--reference",
        metavar="DATA",
        help="with --model: CSV or Parquet reference rows (path or s3://bucket/key) for the request "
        "schema, the drift baseline and, with --target, the holdout metrics",
    )
    register.add_argument(
        "--flavour",
        choices=("python",),
        default=None,
        help="python: --model is a directory of files that the project's own model class loads "
        "([tool.sluice] model)",
    )
    register.add_argument(
        "--project",
        metavar="PYPROJECT",
        help="with --flavour python: the model project's pyproject.toml (default: SLUICE_PROJECT)",
    )
    register.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="with --model: a type (or PACKAGE.*) a skops file may hold beyond scikit-learn, numpy and "
        "scipy (repeatable)",
    )


def register_fitted_model(args: argparse.Namespace, registry: ModelRegistry) -> VersionRecord:
    """Register ``args.model`` with the reference data ``args.reference``; return the new version."""
    from sluice.models.imports import read_reference, register_fitted, register_python

    if not (args.model and args.reference):
        raise SluiceError("--model FILE_OR_DIR and --reference DATA go together")
    if args.flavour != "python" and args.project:
        raise SluiceError("--project names the project of a --flavour python model")
    if args.flavour == "python" and (args.onnx or args.trust):
        raise SluiceError("--onnx and --trust are for scikit-learn files, not --flavour python")
    training = {"--spec": args.spec, "--numeric": args.numeric, "--categorical": args.categorical,
                "--estimator": args.estimator, "--task": args.task, "--param": args.param}  # fmt: skip
    given = [flag for flag, value in training.items() if value]
    if given:
        raise SluiceError(f"{', '.join(given)}: training options, not for --model (registered as it is)")
    if args.onnx and not Path(args.onnx).expanduser().is_file():
        raise SluiceError(f"--onnx {args.onnx}: no such file")
    frame, data = read_reference(args.reference)
    if args.flavour == "python":
        return register_python(
            registry, args.name, args.model, frame, target=args.target, project=args.project,
            lineage_extra={**data, "parent_version": args.parent_version}, idempotency_key=args.idempotency_key,
        )  # fmt: skip
    return register_fitted(
        registry,
        args.name,
        args.model,
        frame,
        target=args.target,
        trusted=args.trust,
        lineage_extra={**data, "parent_version": args.parent_version},
        idempotency_key=args.idempotency_key,
        onnx=args.onnx,
    )
