"""An MLflow model directory, read from its ``MLmodel`` file without importing mlflow.

:func:`read_mlmodel` finds the scikit-learn model in the directory: the ``sklearn`` flavour
(``pickled_model`` and ``serialization_format``: ``cloudpickle``, ``pickle`` or ``skops``), or a
``python_function`` flavour whose ``loader_module`` is ``mlflow.sklearn``. The model's
``signature.inputs`` (a JSON list of ``{"name", "type", "required"}`` column specs) is kept, so
:func:`check_signature` can check that the reference data has the columns and types the model
was logged with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.errors import SluiceError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MLMODEL = "MLmodel"
FORMATS = ("cloudpickle", "pickle", "skops")
# MLflow column types -> the pandas dtype kinds a reference column of that type may have
# ("b" bool, "i"/"u" integers, "f" floats, "O"/"U"/"T" strings; see numpy's dtype.kind).
_TYPE_KINDS = {
    "boolean": "b",
    "integer": "iu",
    "long": "iu",
    "float": "fiu",
    "double": "fiu",
    "string": "OUT",
}


@dataclass(frozen=True)
class MlflowModel:
    """What Sluice uses of an MLflow model directory.

    Parameters
    ----------
    directory
        The model directory (holding ``MLmodel``).
    model_file
        The serialized estimator, inside ``directory``.
    serialization_format
        ``cloudpickle``, ``pickle`` or ``skops``.
    inputs
        The signature's input column specs, or ``None`` when the model has no column signature.
    sklearn_version, mlflow_version
        What the ``MLmodel`` file records ("" when it does not).
    """

    directory: Path
    model_file: Path
    serialization_format: str
    inputs: list[dict[str, Any]] | None = None
    sklearn_version: str = ""
    mlflow_version: str = ""
    flavour: str = field(default="sklearn")

    @property
    def optional(self) -> list[str]:
        """Input columns the signature marks ``"required": false``."""
        return [str(c["name"]) for c in self.inputs or () if c.get("required") is False]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "mlflow",
            "flavour": self.flavour,
            "model_file": self.model_file.name,
            "serialization_format": self.serialization_format,
            "sklearn_version": self.sklearn_version,
            "mlflow_version": self.mlflow_version,
        }


def is_mlflow_directory(path: Path) -> bool:
    return path.is_dir() and (path / MLMODEL).is_file()


def read_mlmodel(directory: Path) -> MlflowModel:
    """The scikit-learn model of an MLflow model directory.

    Raises
    ------
    SluiceError
        If ``MLmodel`` is not a YAML mapping, has no scikit-learn flavour, names a model file
        outside the directory or missing, or has a malformed signature.
    """
    import yaml

    where = f"--model {directory}"
    try:
        data = yaml.safe_load((directory / MLMODEL).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SluiceError(f"{where}: MLmodel cannot be read as YAML ({_first_line(err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise SluiceError(f"{where}: MLmodel has no 'flavors' mapping")
    flavors: dict[str, Any] = data["flavors"]
    sklearn, pyfunc = flavors.get("sklearn"), flavors.get("python_function")
    if isinstance(sklearn, dict) and sklearn.get("pickled_model"):
        flavour, file_name = "sklearn", str(sklearn["pickled_model"])
        serialization = str(sklearn.get("serialization_format") or "cloudpickle")
    elif isinstance(pyfunc, dict) and pyfunc.get("loader_module") == "mlflow.sklearn":
        flavour, file_name, serialization = "python_function", str(pyfunc.get("model_path") or ""), "pickle"
    else:
        raise SluiceError(
            f"{where}: MLmodel has no scikit-learn model (flavours: {', '.join(sorted(flavors)) or 'none'}; "
            "expected 'sklearn', or 'python_function' with loader_module mlflow.sklearn)"
        )
    if serialization not in FORMATS:
        raise SluiceError(
            f"{where}: serialization_format {serialization!r} is not one of {', '.join(FORMATS)}"
        )
    return MlflowModel(
        directory=directory,
        model_file=_inside(directory, file_name, where),
        serialization_format=serialization,
        inputs=_signature_inputs(data.get("signature"), where),
        sklearn_version=str((sklearn or {}).get("sklearn_version") or ""),
        mlflow_version=str(data.get("mlflow_version") or ""),
        flavour=flavour,
    )


def check_signature(model: MlflowModel, features: pd.DataFrame) -> None:
    """Check that the reference features are the signature's columns, with compatible types.

    Raises
    ------
    SluiceError
        Naming the first column that is missing, extra or of another type.
    """
    if model.inputs is None:
        return
    names = [str(c["name"]) for c in model.inputs]
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise SluiceError(f"--reference lacks column(s) of the MLflow signature: {', '.join(missing)}")
    extra = [str(c) for c in features.columns if c not in names]
    if extra:
        raise SluiceError(
            f"--reference has column(s) the MLflow signature does not: {', '.join(extra)} "
            "(drop them, or name the label with --target)"
        )
    for column in model.inputs:
        kinds = _TYPE_KINDS.get(str(column.get("type")))
        dtype = features[column["name"]].dtype
        kind = "T" if str(dtype) in ("str", "string", "category") else getattr(dtype, "kind", "O")
        if kinds is not None and kind not in kinds:
            raise SluiceError(
                f"--reference column {column['name']!r} is {dtype}; the MLflow signature says {column['type']}"
            )


def _inside(directory: Path, file_name: str, where: str) -> Path:
    if not file_name:
        raise SluiceError(f"{where}: MLmodel names no model file")
    path = (directory / file_name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise SluiceError(f"{where}: MLmodel names a model file outside the directory: {file_name!r}")
    if not path.is_file():
        raise SluiceError(f"{where}: the model file {file_name!r} that MLmodel names does not exist")
    return path


def _signature_inputs(signature: Any, where: str) -> list[dict[str, Any]] | None:
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    raw = signature["inputs"]
    try:
        inputs = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as err:
        raise SluiceError(f"{where}: MLmodel signature inputs are not JSON ({err})") from None
    if not isinstance(inputs, list) or not all(isinstance(c, dict) for c in inputs):
        raise SluiceError(f"{where}: MLmodel signature inputs must be a list of column specs")
    if not _named_columns(inputs):
        return None  # a tensor signature: no columns to check
    return inputs


def _named_columns(inputs: Sequence[dict[str, Any]]) -> bool:
    return bool(inputs) and all(isinstance(c.get("name"), str) and c.get("type") != "tensor" for c in inputs)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
