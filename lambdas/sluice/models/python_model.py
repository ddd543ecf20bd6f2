"""The ``python`` flavour of the model contract: a class of the user's own package.

A model project declares its model class in ``[tool.sluice]``::

    model = "credit_decisions.scorecard:Scorecard"

The class has ``load(artifacts)`` (a classmethod taking ``{relative path: bytes}``, the files of the
model's directory) returning an instance with ``predict(frame)`` and, for a classifier,
``predict_proba(frame)`` (one column per class, in ``classes_`` order). ``frame`` is a DataFrame
of the schema's features, built as :func:`~sluice.models.contract.schema_frame` builds it.

Registration (:func:`bundle_python`, run by ``sluice models register NAME --model DIR --flavour
python``) stores the directory's files as the version's ``model/<relative path>`` artifacts, with
a ``model.json`` naming the project's package (and version), never a module or a class. The class
is taken from the project given (``--project``, else the deployed one), and the model must load
and predict the reference rows before anything is uploaded.

Serving (:func:`load_python_model`) takes the class only from the deployed project
(``SLUICE_PROJECT``, :func:`~sluice.models.project.deployed_project`): the container endpoint
built from the model's project. It refuses, in one line, when no project is deployed or when the
version's package is not the deployed project's. The instance is served through
:class:`sluice.models.contract.PythonModel`.

pandas is imported only when a python model is registered or served, never by the zip endpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError
from sluice.models.contract import PYTHON, PythonModel
from sluice.models.project import Project, deployed_project

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from sluice.models.contract import Columns, Descriptor
    from sluice.models.schema import FeatureSchema
    from sluice.registry.bundle import ModelBundle
    from sluice.registry.records import VersionRecord

#: The libraries a python model's ``model.json`` records (compared with the image's pins at deploy).
LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy")
_CHECK_ROWS = 1000


# -- serving: the class from the deployed project only --------------------------------------------


def load_python_model(descriptor: Descriptor, record: VersionRecord, artifacts: Mapping[str, bytes]) -> Any:
    """The deployed project's model class, loaded from the version's verified ``model/`` files.

    The class comes from ``[tool.sluice] model`` of the deployed project, whatever the record says;
    the record only has to belong to that project (same ``package``).

    Raises
    ------
    SluiceError
        One line: no project is deployed, the version belongs to another package, or the class
        is missing or cannot load the files.
    """
    where = f"model {record.name!r} version {record.version}"
    project = deployed_project()
    if project is None:
        raise SluiceError(
            f"{where} is a python model of package {descriptor.package!r}, but no project is deployed "
            "with this function (SLUICE_PROJECT is not set): deploy it to its project's container endpoint"
        )
    if project.package != descriptor.package:
        raise SluiceError(
            f"{where} is a python model of package {descriptor.package!r}; the deployed project is "
            f"{project.package!r}: deploy it to the endpoint built from its own project"
        )
    return instantiate(project, artifacts, where=where)


def instantiate(project: Project, artifacts: Mapping[str, bytes], *, where: str) -> Any:
    """``project``'s model class's ``load(artifacts)``: an instance with ``predict``."""
    if not project.has("model"):
        raise SluiceError(
            f"project {project.package!r} declares no model class: add "
            f'model = "{project.package}.module:Class" to [tool.sluice]'
        )
    entry = project.entry_points["model"]
    load = getattr(project.entry_point("model"), "load", None)
    if not callable(load):
        raise SluiceError(f"[tool.sluice] model ({entry}) has no load(artifacts) classmethod")
    try:
        model = load(dict(artifacts))
    except Exception as err:  # the user's code on the user's files: one line
        raise SluiceError(f"{where}: {entry}.load cannot load the model's files ({_one_line(err)})") from None
    if not callable(getattr(model, "predict", None)):
        raise SluiceError(
            f"{where}: {entry}.load returned a {type(model).__name__}, which has no predict(frame)"
        )
    return model


# -- registration ---------------------------------------------------------------------------------


def bundle_python(
    directory: str | Path,
    reference: pd.DataFrame,
    *,
    target: str | None,
    project: Project | str | Path | None = None,
) -> ModelBundle:
    """The artifacts of a python model: ``model.json``, ``schema.json``, ``profile.json``, ``model/*``.

    Parameters
    ----------
    directory
        The model's files; ``load`` receives them by relative path.
    reference
        Reference rows: the features give the schema and the drift baseline.
    target
        The label column of ``reference``; with it, holdout metrics are recorded.
    project
        The project (or its ``pyproject.toml``) whose ``[tool.sluice] model`` class loads the files;
        default: the deployed project (``SLUICE_PROJECT``).

    Raises
    ------
    SluiceError
        One line, before anything is uploaded: no project or model class, the directory is empty
        or not one, or the model cannot load its files or predict the reference rows.
    """
    from sluice.models.contract import PYTHON_PREFIX, Descriptor
    from sluice.models.reference import holdout_metrics, installed_versions, reference_features
    from sluice.models.schema import FeatureSchema
    from sluice.registry.bundle import ModelBundle

    features = reference_features(reference, target)
    files = read_directory(directory)
    found = resolve_project(project)
    schema = FeatureSchema.infer(features)
    with _importable(found):  # the class, and whatever it imports while predicting
        model = instantiate(found, files, where=f"--model {directory}")
        task, classes = _describe(model, schema, features.head(_CHECK_ROWS), where=f"--model {directory}")
        served = PythonModel(model, schema, task=task, classes=classes)
        metrics = holdout_metrics(_Rows(served, classes), reference, target, task=task)
    descriptor = Descriptor(
        model_file=PYTHON_PREFIX, task=task, flavour=PYTHON, classes=classes,
        libraries=installed_versions(LIBRARIES), package=found.package, package_version=project_version(found),
    )  # fmt: skip
    source = {"format": PYTHON, "directory": Path(directory).name, "files": sorted(files)}
    return ModelBundle(
        artifacts=_artifacts(descriptor, schema, features, files),
        metrics=metrics,
        estimator=f"{type(model).__module__}.{type(model).__qualname__}",  # for people; serving never reads it
        notes={"source": {**source, "package": found.package, "package_version": descriptor.package_version}},
    )  # fmt: skip


def _artifacts(
    descriptor: Descriptor, schema: FeatureSchema, features: pd.DataFrame, files: Mapping[str, bytes]
) -> dict[str, bytes]:
    import json

    from sluice.models.contract import PYTHON_PREFIX
    from sluice.monitoring.profile import DriftProfile
    from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, PROFILE_ARTIFACT, SCHEMA_ARTIFACT

    profile = DriftProfile(categorical=[f.name for f in schema.features if f.kind == "categorical"])
    return {
        DESCRIPTOR_ARTIFACT: descriptor.to_json(),
        SCHEMA_ARTIFACT: json.dumps(schema.to_dict(), indent=1).encode(),
        PROFILE_ARTIFACT: json.dumps(profile.fit(features).to_dict(), indent=1).encode(),
        **{PYTHON_PREFIX + name: body for name, body in files.items()},
    }


def read_directory(directory: str | Path) -> dict[str, bytes]:
    """The files under ``directory`` by relative POSIX path (hidden files and ``__pycache__`` left out)."""
    from sluice.models.contract import PYTHON_PREFIX
    from sluice.registry.bundle import safe_artifact_name

    where = Path(directory).expanduser()
    if not where.is_dir():
        raise SluiceError(
            f"--model {directory}: not a directory (--flavour python registers a model directory)"
        )
    files: dict[str, bytes] = {}
    for path in sorted(where.rglob("*")):
        relative = path.relative_to(where)
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in relative.parts):
            continue
        if not safe_artifact_name(PYTHON_PREFIX + relative.as_posix()):
            raise SluiceError(
                f"--model {directory}: file name {relative.as_posix()!r} is not of [A-Za-z0-9._-] parts"
            )
        files[relative.as_posix()] = path.read_bytes()
    if not files:
        raise SluiceError(f"--model {directory}: the directory has no files")
    return files


def resolve_project(project: Project | str | Path | None) -> Project:
    """``project``, its ``pyproject.toml`` read, or the deployed project (one line if none)."""
    if isinstance(project, Project):
        return project
    if project:
        return Project.from_pyproject(Path(project).expanduser())
    found = deployed_project()
    if found is None:
        raise SluiceError(
            "--flavour python needs the model's project: pass --project path/to/pyproject.toml "
            "(or set SLUICE_PROJECT)"
        )
    return found


def project_version(project: Project) -> str:
    """``[project] version`` of the project's ``pyproject.toml`` ("" if it declares none)."""
    try:
        document = tomllib.loads((project.root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    version = document.get("project", {}).get("version", "")
    return version if isinstance(version, str) else ""


@contextlib.contextmanager
def _importable(project: Project) -> Iterator[None]:
    """Import the project's package from its source folder if it is not installed (the CLI side)."""
    top = project.package.split(".")[0]
    source = str(project.source_root)
    if importlib.util.find_spec(top) is not None or source in sys.path:
        yield
        return
    sys.path.insert(0, source)
    try:
        yield
    finally:
        sys.path.remove(source)


def _describe(
    model: Any, schema: FeatureSchema, rows: pd.DataFrame, *, where: str
) -> tuple[str, tuple[Any, ...] | None]:
    """Task and classes from what the model predicts for ``rows`` through the serving path.

    A model with ``predict_proba`` is a classifier; one without, a regressor if it predicts floats.
    Classes are its ``classes_``, else the sorted labels it predicts.
    """
    proba = callable(getattr(model, "predict_proba", None))
    columns = _columns(schema, rows)
    try:
        labels, probabilities = PythonModel(
            model, schema, task="classification" if proba else "regression"
        ).predict(columns)
    except SluiceError as err:
        raise SluiceError(f"{where} cannot predict the --reference rows: {err}") from None
    if not proba and labels.dtype.kind in "fc":
        return "regression", None
    known = getattr(model, "classes_", None)
    classes = tuple(np.asarray(known if known is not None else np.unique(labels)).tolist())
    if probabilities is not None and probabilities.shape[1] != len(classes):
        raise SluiceError(
            f"--model: predict_proba gives {probabilities.shape[1]} columns for {len(classes)} classes "
            f"({', '.join(map(str, classes))}): give the class a classes_ attribute in column order"
        )
    return "classification", classes


class _Rows:
    """The served model as holdout metrics call it: ``predict``/``predict_proba`` of reference rows."""

    def __init__(self, served: PythonModel, classes: tuple[Any, ...] | None) -> None:
        self.served = served
        if classes is not None:
            self.classes_ = np.asarray(classes)
        if served.has_proba:
            self.predict_proba = self._probabilities

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.served.predict(_columns(self.served.schema, rows))[0]

    def _probabilities(self, rows: pd.DataFrame) -> np.ndarray | None:
        return self.served.predict(_columns(self.served.schema, rows))[1]


def _columns(schema: FeatureSchema, rows: pd.DataFrame) -> Columns:
    columns, errors = schema.validate(rows, as_frame=False)
    if errors:
        raise SluiceError(f"--reference rows do not fit the schema inferred from them: {errors[0]}")
    return columns


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return (f"{type(err).__name__}: {first}" if first else type(err).__name__)[:300]
