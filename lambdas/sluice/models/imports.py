"""Register a model fitted anywhere: a scikit-learn file, an MLflow model directory, an ONNX graph,
or a directory of files that the project's own model class loads (:func:`register_python`).

:func:`read_model` recognises what ``sluice models register NAME --model FILE_OR_DIR`` is given:

* a ``.skops`` file. Its types outside scikit-learn, numpy and scipy are refused unless the
  caller trusts them (``trusted``, exact type names or ``package.*``, or ``packages``);
* a ``.joblib`` or ``.pkl`` file: the user's own file, unpickled on their own say-so. It is
  then stored in the skops format where that round-trips (same predictions on the reference
  rows), with the types skops needs recorded as trusted; otherwise its own bytes are kept as
  ``model.joblib`` (joblib loads plain pickles too);
* an MLflow model directory (:mod:`sluice.models.mlflow_model`), read without mlflow;
* and, to :func:`register_fitted`, a ``.onnx`` file: any ONNX graph (:mod:`~sluice.models.onnx_export`).

:func:`register_fitted` turns the model and its reference data into a version whose artifacts
are the descriptor ``model.json`` (:class:`sluice.models.contract.Descriptor`), ``schema.json``
(:meth:`FeatureSchema.infer` on the reference features), ``profile.json`` (the drift baseline)
and the model file. With a target column it records holdout metrics as training does
(:func:`sluice.models.training.prediction_metrics`). Every check runs before the registry uploads
anything, and the registry refuses a version record DynamoDB would reject before uploading, so a
failed registration leaves no objects behind.

This module runs on the CLI side only (it imports pandas, scikit-learn and skops).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sluice.errors import SluiceError
from sluice.models.contract import JOBLIB_FILE, ONNX_FILE, SKOPS_FILE, Descriptor, skops_bytes
from sluice.models.mlflow_model import MlflowModel, check_signature, is_mlflow_directory, read_mlmodel
from sluice.models.reference import holdout_metrics as holdout_metrics  # (re-exported: project training)
from sluice.models.reference import installed_versions, one_line, predict_rows, reference_calibration
from sluice.models.reference import reference_features as reference_features
from sluice.registry.bundle import (
    CALIBRATION_ARTIFACT,
    DESCRIPTOR_ARTIFACT,
    PROFILE_ARTIFACT,
    SCHEMA_ARTIFACT,
    ModelBundle,
)
from sluice.registry.lineage import Lineage, code_version
from sluice.registry.validation import check_model_name

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.project import Project
    from sluice.registry.records import VersionRecord
    from sluice.registry.store import ModelRegistry

#: Packages whose types a skops file may hold without being trusted by name.
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")
#: The libraries recorded in ``model.json`` (serving refuses an image whose versions differ).
LIBRARIES = ("scikit-learn", "numpy", "scipy", "skops")
UNRECOGNISED = (
    "--model {path}: format not recognised (expected a .skops, .joblib, .pkl or .onnx file, "
    "or an MLflow model directory with an MLmodel file)"
)
_CHECK_ROWS = 1000


@dataclass(frozen=True)
class ImportedModel:
    """A fitted model read by :func:`read_model`, and the bytes it will be stored as.

    Attributes
    ----------
    estimator
        The fitted estimator or ``Pipeline``.
    model_file, body
        ``"model.skops"`` or ``"model.joblib"``, and its bytes.
    skops_trusted
        The types beyond skops' defaults that ``body`` (a skops file) holds.
    source
        What was read: ``format`` (``skops``, ``joblib`` or ``mlflow``), the file, and for a joblib
        source kept as joblib, why skops could not hold it.
    mlflow
        The MLflow model directory, when that is what was read.
    """

    estimator: Any
    model_file: str
    body: bytes
    skops_trusted: tuple[str, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)
    mlflow: MlflowModel | None = None

    @property
    def task(self) -> str:
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(self.estimator):
            return "classification"
        if is_regressor(self.estimator):
            return "regression"
        raise SluiceError(
            f"--model: {type(self.estimator).__name__} is neither a scikit-learn classifier nor a regressor"
        )

    @property
    def final_step(self) -> Any:
        """The estimator at the end of a ``Pipeline`` (the estimator itself otherwise)."""
        steps = getattr(self.estimator, "steps", None)
        return steps[-1][1] if isinstance(steps, list) and steps else self.estimator


def read_model(
    path: str | Path,
    *,
    trusted: Sequence[str] = (),
    packages: Sequence[str] = (),
    sample: pd.DataFrame | None = None,
) -> ImportedModel:
    """Read a fitted scikit-learn model from a file or an MLflow model directory.

    Parameters
    ----------
    path
        A ``.skops``, ``.joblib`` or ``.pkl`` file, or an MLflow model directory.
    trusted
        Types a skops file may hold beyond scikit-learn, numpy and scipy: exact names
        (``mypkg.features.Ratio``) or whole packages (``mypkg.*``).
    packages
        The user's own packages, whose types are trusted (like ``trusted=["pkg.*"]``).
    sample
        Feature rows: a pickled model is stored with skops only if the skops copy predicts
        these rows as the original does.

    Raises
    ------
    SluiceError
        One line: the format is not recognised, the file cannot be loaded, or a skops file
        holds types nobody trusted.
    """
    where = Path(path).expanduser()
    allowed = _Trust.of(trusted, packages)
    if is_mlflow_directory(where):
        mlflow = read_mlmodel(where)
        if mlflow.serialization_format == "skops":
            model = _from_skops(mlflow.model_file, allowed)
        else:
            model = _from_pickle(mlflow.model_file, sample)
        return replace(model, source={**model.source, **mlflow.to_dict()}, mlflow=mlflow)
    if not where.exists():
        raise SluiceError(f"--model {path}: no such file or directory")
    suffix = where.suffix.lower()
    if where.is_file() and suffix == ".skops":
        return _from_skops(where, allowed)
    if where.is_file() and suffix in (".joblib", ".pkl"):
        return _from_pickle(where, sample)
    raise SluiceError(UNRECOGNISED.format(path=path))


def register_fitted(
    registry: ModelRegistry,
    name: str,
    path: str | Path,
    reference: pd.DataFrame,
    *,
    target: str | None = None,
    trusted: Sequence[str] = (),
    packages: Sequence[str] = (),
    lineage_extra: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    onnx: bytes | str | Path | bool | None = None,
) -> VersionRecord:
    """Register the fitted model at ``path`` as the next version of ``name``.

    Parameters
    ----------
    registry
        Where to register.
    name
        The model name (checked before anything is read).
    path
        What :func:`read_model` reads, or a ``.onnx`` graph (:func:`~sluice.models.onnx_export.bundle_onnx`).
    reference
        Reference rows: the features (every column but ``target``) give the request schema and
        the drift baseline.
    target
        The label column of ``reference``; with it, holdout metrics are recorded.
    trusted, packages
        See :func:`read_model`.
    lineage_extra
        :class:`~sluice.registry.lineage.Lineage` fields, e.g. the reference data's ``data_uri``,
        ``data_version``, ``data_sha256`` (default: the sha256 of ``reference`` as CSV) and
        ``parent_version``.
    idempotency_key
        See :meth:`ModelRegistry.register`.
    onnx
        A scikit-learn model's ONNX twin (a graph's bytes or file, or ``True``): :func:`bundle_fitted`.
    """
    from sluice.models.onnx_export import bundle_onnx

    check_model_name(name)
    features = reference_features(reference, target)
    if Path(path).suffix.lower() == ".onnx":
        if onnx is not None:
            raise SluiceError("--onnx adds a twin to a scikit-learn model; --model is an ONNX graph already")
        bundle = bundle_onnx(path, reference, target=target)
    else:
        imported = read_model(path, trusted=trusted, packages=packages, sample=features.head(_CHECK_ROWS))
        bundle = bundle_fitted(imported, reference, target=target, onnx=onnx)
    libraries = json.loads(bundle.artifacts[DESCRIPTOR_ARTIFACT])["libraries"]  # the same as model.json
    lineage = _lineage(reference, bundle.hyperparameters, {"libraries": libraries, **(lineage_extra or {})})
    return registry.register(name, bundle, lineage=lineage, idempotency_key=idempotency_key)


def register_python(
    registry: ModelRegistry,
    name: str,
    directory: str | Path,
    reference: pd.DataFrame,
    *,
    target: str | None = None,
    project: Project | str | Path | None = None,
    lineage_extra: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> VersionRecord:
    """Register the files in ``directory`` as a python-flavour version of ``name``.

    The project's ``[tool.sluice] model`` class (``project``: a :class:`Project` or its
    ``pyproject.toml``; default the deployed project) must load the files and predict the
    ``reference`` rows before anything is uploaded: :func:`sluice.models.python_model.bundle_python`.
    ``target``, ``lineage_extra`` and ``idempotency_key`` are as for :func:`register_fitted`.
    """
    from sluice.models.python_model import bundle_python

    check_model_name(name)
    bundle = bundle_python(directory, reference, target=target, project=project)
    libraries = json.loads(bundle.artifacts[DESCRIPTOR_ARTIFACT])["libraries"]
    lineage = _lineage(reference, {}, {"libraries": libraries, **(lineage_extra or {})})
    return registry.register(name, bundle, lineage=lineage, idempotency_key=idempotency_key)


def bundle_fitted(
    imported: ImportedModel,
    reference: pd.DataFrame,
    *,
    target: str | None,
    onnx: bytes | str | Path | bool | None = None,
    holdout: pd.DataFrame | None = None,
) -> ModelBundle:
    """The artifacts of a fitted model: ``model.json``, ``schema.json``, ``profile.json``, the model file.

    With ``onnx`` (a graph's bytes or file, or ``True`` to convert the model), ``model.onnx`` is added
    if it predicts the reference rows as the model does (:func:`~sluice.models.onnx_export.onnx_twin`).
    With ``target``, the labelled rows (``holdout`` when given, else ``reference``) give the metrics
    and, for a binary classifier, ``calibration.json`` (label-free performance estimation)."""
    from sluice.models.onnx_export import onnx_twin
    from sluice.models.schema import FeatureSchema
    from sluice.monitoring.profile import DriftProfile

    features = reference_features(reference, target)
    if imported.mlflow is not None:
        check_signature(imported.mlflow, features)
    optional = imported.mlflow.optional if imported.mlflow is not None else []
    schema = FeatureSchema.infer(features, optional=optional)
    categorical = [f.name for f in schema.features if f.kind == "categorical"]
    profile = DriftProfile(categorical=categorical).fit(features)
    task = imported.task
    labelled = reference if holdout is None else holdout
    metrics = holdout_metrics(imported.estimator, labelled, target, task=task)
    if not metrics:  # still prove the model takes these columns, before anything is uploaded
        predict_rows(imported.estimator, features.head(_CHECK_ROWS))
    classes = getattr(imported.estimator, "classes_", None)
    descriptor = Descriptor(
        model_file=imported.model_file,
        task=task,
        classes=None if classes is None or task != "classification" else tuple(np.asarray(classes).tolist()),
        libraries=library_versions(),
        skops_trusted=imported.skops_trusted,
    )
    artifacts = {
        DESCRIPTOR_ARTIFACT: descriptor.to_json(),
        SCHEMA_ARTIFACT: _json_bytes(schema.to_dict()),
        PROFILE_ARTIFACT: _json_bytes(profile.to_dict()),
        imported.model_file: imported.body,
    }
    notes: dict[str, Any] = {"source": imported.source}
    if metrics and target is not None:
        _add_calibration(imported.estimator, labelled, target, artifacts, notes)
    if onnx not in (None, False):
        twin, notes["onnx"] = onnx_twin(
            imported.estimator, onnx, schema, features.head(_CHECK_ROWS), task=task
        )
        if twin is not None:
            artifacts[ONNX_FILE] = twin
    return ModelBundle(
        artifacts=artifacts,
        metrics=metrics,
        hyperparameters=_hyperparameters(imported.final_step),
        estimator=class_path(type(imported.final_step)),
        notes=notes,
    )


def _add_calibration(
    estimator: Any, labelled: pd.DataFrame, target: str, artifacts: dict[str, bytes], notes: dict[str, Any]
) -> None:
    """``holdout_rows`` and, for a binary classifier, ``calibration.json`` from the labelled rows."""
    notes["holdout_rows"] = int(labelled[target].notna().sum())
    calibration = reference_calibration(estimator, labelled, target)
    if calibration is not None:
        artifacts[CALIBRATION_ARTIFACT] = calibration.to_json()
        notes["calibration"] = {"method": calibration.method, "ece_before": calibration.ece_before}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that (re)serialised the model (:data:`LIBRARIES`)."""
    return installed_versions(LIBRARIES)


def class_path(cls: type) -> str:
    """The public dotted path of ``cls``: ``sklearn.ensemble.HistGradientBoostingClassifier``, not
    its private module, where a parent package exports the same class."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module = ".".join(parts[:end])
        try:
            if getattr(import_module(module), cls.__qualname__, None) is cls:
                return f"{module}.{cls.__qualname__}"
        except ImportError:
            continue
    return f"{cls.__module__}.{cls.__qualname__}"


def read_reference(uri: str, *, option: str = "--reference") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A CSV or Parquet file (a path or ``s3://bucket/key``) and its lineage fields.

    The fields are :class:`~sluice.registry.lineage.Lineage`'s ``data_uri`` (``file://`` or
    ``s3://``), ``data_version`` (S3 VersionId, else ETag; "" for a local file), ``data_sha256``
    and ``data_rows``. ``option`` names the command-line option in errors.
    """
    from sluice.pipelines.datasource import load_table

    if not uri.startswith("s3://"):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise SluiceError(f"{option} {uri}: no such file")
        uri = str(path.resolve())
    frame, data = load_table(uri)
    return frame, {
        "data_uri": data.uri if data.uri.startswith("s3://") else Path(data.uri).as_uri(),
        "data_version": data.version_id or data.etag or "",
        "data_sha256": data.sha256,
        "data_rows": data.rows,
    }


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trust:
    names: frozenset[str]
    packages: tuple[str, ...]

    @classmethod
    def of(cls, trusted: Sequence[str], packages: Sequence[str]) -> _Trust:
        names = {t for t in trusted if not t.endswith(".*")}
        prefixes = [t.removesuffix(".*") for t in trusted if t.endswith(".*")]
        return cls(frozenset(names), (*TRUSTED_PACKAGES, *prefixes, *packages))

    def refused(self, types: Sequence[str]) -> list[str]:
        return sorted(t for t in types if t not in self.names and not self._in_package(t))

    def _in_package(self, name: str) -> bool:
        # Test helpers live in these packages too; they are never part of a fitted model.
        if any(part in ("testing", "_testing") for part in name.split(".")):
            return False
        return any(name.startswith(f"{package}.") for package in self.packages)


def _from_skops(path: Path, allowed: _Trust) -> ImportedModel:
    import skops.io as sio

    body = path.read_bytes()
    try:
        types = sorted(sio.get_untrusted_types(data=body))
    except Exception as err:  # whatever the file holds, the user gets one line
        raise SluiceError(f"--model {path}: not a readable skops file ({one_line(err)})") from None
    refused = allowed.refused(types)
    if refused:
        raise SluiceError(
            f"--model {path}: the skops file holds type(s) outside scikit-learn, numpy and scipy: "
            f"{', '.join(refused)} (if they are your code, pass --trust TYPE for each, or --trust PACKAGE.*)"
        )
    try:
        estimator = sio.loads(body, trusted=types)
    except Exception as err:
        raise SluiceError(f"--model {path}: the skops file cannot be loaded ({one_line(err)})") from None
    return ImportedModel(estimator, SKOPS_FILE, body, tuple(types), {"format": "skops", "file": path.name})


def _from_pickle(path: Path, sample: pd.DataFrame | None) -> ImportedModel:
    import joblib
    import skops.io as sio
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            estimator = joblib.load(path)  # the user's own file, loaded on their own say-so
        except Exception as err:
            raise SluiceError(f"--model {path}: cannot be loaded ({one_line(err)})") from None
    if not hasattr(estimator, "predict"):
        raise SluiceError(f"--model {path}: holds a {type(estimator).__name__}, not a fitted estimator")
    source: dict[str, Any] = {"format": "joblib", "file": path.name}
    pickled_with = {
        str(w.message.original_sklearn_version)
        for w in caught
        if isinstance(w.message, InconsistentVersionWarning)
    }
    if pickled_with:  # another scikit-learn pickled it: recorded, the metrics show if it still works
        source["pickled_with_scikit_learn"] = sorted(pickled_with)
    try:
        body, types = skops_bytes(estimator)
        copy = sio.loads(body, trusted=types)
        if sample is not None and not _same_predictions(estimator, copy, sample):
            raise SluiceError("the skops copy predicts differently")
    except Exception as err:  # skops cannot hold it: keep the user's file (joblib loads pickles too)
        source["kept_joblib"] = one_line(err)
        return ImportedModel(estimator, JOBLIB_FILE, path.read_bytes(), (), source)
    return ImportedModel(estimator, SKOPS_FILE, body, tuple(types), source)


def _same_predictions(original: Any, copy: Any, sample: pd.DataFrame) -> bool:
    for method in ("predict", "predict_proba"):
        if not hasattr(original, method):
            continue
        a, b = getattr(original, method)(sample), getattr(copy, method)(sample)
        a, b = np.asarray(a), np.asarray(b)
        same = np.allclose(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)
        if not same:
            return False
    return True


# -- helpers ------------------------------------------------------------------------------------


def _hyperparameters(estimator: Any) -> dict[str, Any]:
    """The JSON-able part of the final step's ``get_params(deep=False)``."""
    from sluice.models.training import jsonable_params

    get_params = getattr(estimator, "get_params", None)
    return jsonable_params(get_params(deep=False) if callable(get_params) else {}, skip_other=True)


def _lineage(
    reference: pd.DataFrame, hyperparameters: dict[str, Any], extra: Mapping[str, Any] | None
) -> Lineage:
    fields: dict[str, Any] = {
        "data_rows": len(reference),
        "code_version": code_version(),
        "image_digest": os.environ.get("SLUICE_IMAGE_DIGEST", ""),
        "hyperparameters": hyperparameters,
        **(extra or {}),
    }
    unknown = sorted(set(fields) - set(Lineage.__dataclass_fields__))
    if unknown:
        raise SluiceError(f"lineage_extra has unknown field(s): {', '.join(unknown)}")
    if not fields.get("data_sha256"):
        fields["data_sha256"] = hashlib.sha256(reference.to_csv(index=False).encode()).hexdigest()
    return Lineage(**fields)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1).encode()
