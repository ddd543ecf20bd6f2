"""The model contract: :class:`ServedModel`, the one interface every served model meets.

Scoring (:mod:`sluice.serving.scoring`) and batch scoring validate a request against the
version's :class:`~sluice.models.schema.FeatureSchema` and hand the validated columns to
``model.predict``; they never ask which kind of model it is. The implementations:

* :class:`BuiltinRecipe` (``flavour="builtin"``): the built-in tabular recipe, its JSON
  preprocessing (:class:`~sluice.models.features.Preprocessor`) then a predictor (the
  scikit-learn estimator or its ONNX graph). It works on the column arrays, with numpy alone.
* :class:`SklearnModel` (``flavour="sklearn"``): any fitted scikit-learn estimator or
  ``Pipeline`` that takes a DataFrame; the frame is built from the validated columns, in
  schema order, with the schema's dtypes.
* :class:`~sluice.models.onnx_model.OnnxModel` (``flavour="onnx"``): any ONNX graph, run by ONNX
  Runtime with numpy alone: a graph registered as it is, or a scikit-learn version's
  parity-checked ONNX twin (``model.onnx`` beside its model file).
* :class:`PythonModel` (``flavour="python"``): a class of the user's
  own package with ``load(artifacts)`` and ``predict(frame)``; its files are the version's
  ``model/`` artifacts, and the class comes only from the deployed project's ``[tool.sluice]``
  (:mod:`sluice.models.python_model`).

A version is described by its descriptor artifact ``model.json`` (:class:`Descriptor`,
written with :func:`describe_sklearn`)::

    {"flavour": "sklearn" | "onnx" | "python",
     "model_file": "model.skops" | "model.joblib" | "model.onnx" | "model/",
     "task": "classification" | "regression", "classes": [...] | null,
     "libraries": {"scikit-learn": "1.9.1", ...}, "skops_trusted": ["module.Type", ...],
     "package": "credit_decisions", "package_version": "1.0.0"}     # python only

A python descriptor names the project's package, never a module or class: serving refuses a
version whose package is not the deployed project's, and a ``model.json`` with a field that
could name code (``model_class``, ``module``, ``entry_point``...) is refused outright.

A version without ``model.json`` is the built-in recipe (every version registered before it).

pandas, scikit-learn and skops are imported lazily: the zip endpoint flavour (numpy and ONNX
Runtime) imports this module for :class:`BuiltinRecipe`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sluice.errors import SluiceError
from sluice.models.cells import is_missing

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from sluice.models.features import Preprocessor
    from sluice.models.schema import FeatureSchema
    from sluice.registry.loading import LoadedModel

#: Validated request columns, one array per feature (``FeatureSchema.validate(as_frame=False)``).
Columns = Mapping[str, np.ndarray]
Prediction = tuple[np.ndarray, np.ndarray | None]

BUILTIN = "builtin"
SKLEARN = "sklearn"
ONNX = "onnx"
PYTHON = "python"
DESCRIBED_FLAVOURS = (SKLEARN, ONNX, PYTHON)
SKOPS_FILE = "model.skops"
JOBLIB_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
#: Where a python model's files live: its directory's files become ``model/<relative path>``.
PYTHON_PREFIX = "model/"
MODEL_FILES = (SKOPS_FILE, JOBLIB_FILE)
#: The model files each described flavour may name (a name ending in ``/`` is a prefix).
FLAVOUR_FILES = {SKLEARN: MODEL_FILES, ONNX: (ONNX_FILE,), PYTHON: (PYTHON_PREFIX,)}
#: model.json fields that could name code to import: refused (a python version's code is the
#: deployed project's; ``package`` only names which project it belongs to).
_CODE_FIELDS = ("model", "model_class", "class", "module", "entry_point", "entry_points", "callable", "code")
TASKS = ("classification", "regression")


class ServedModel(Protocol):
    """What scoring needs of a model version.

    Attributes
    ----------
    flavour
        ``"builtin"``, ``"sklearn"``, ``"onnx"`` or ``"python"``.
    schema
        The input schema requests are validated against before :meth:`predict`.
    """

    flavour: str
    schema: FeatureSchema

    def predict(self, columns: Columns) -> Prediction:
        """Labels and class probabilities (sorted ``classes_`` order; ``None`` for regressors).

        ``columns`` holds the validated columns of every schema feature: float arrays for
        numerics (NaN where missing), object arrays for categoricals (``None`` where missing).
        """
        ...


class Predictor(Protocol):
    """The predict step of the built-in recipe (:mod:`sluice.serving.predictors`)."""

    def predict(self, matrix: np.ndarray) -> Prediction: ...


class BuiltinRecipe:
    """The built-in recipe: JSON preprocessing, then the estimator or its ONNX graph.

    Parameters
    ----------
    schema
        The version's input schema.
    preprocessor
        The fitted preprocessing (imputation, standardisation, one-hot).
    predictor
        :class:`~sluice.serving.predictors.SklearnPredictor` or
        :class:`~sluice.serving.predictors.OnnxPredictor`.
    """

    flavour = BUILTIN

    def __init__(self, schema: FeatureSchema, preprocessor: Preprocessor, predictor: Predictor) -> None:
        missing = [c for c in (*preprocessor.numeric, *preprocessor.categorical) if c not in schema.names]
        if missing:
            raise SluiceError("preprocessing uses feature(s) not in schema.json: " + ", ".join(missing))
        self.schema = schema
        self.preprocessor = preprocessor
        self.predictor = predictor

    def predict(self, columns: Columns) -> Prediction:
        return self.predictor.predict(self.preprocessor.transform_columns(columns))


class SklearnModel:
    """A fitted scikit-learn estimator or ``Pipeline`` that takes a DataFrame of the schema's features.

    Parameters
    ----------
    estimator
        Fitted; ``predict`` (and ``predict_proba`` with ``classes_`` for classifiers).
    schema
        The version's input schema: the frame's columns, their order and dtypes.
    """

    flavour = SKLEARN

    def __init__(self, estimator: Any, schema: FeatureSchema) -> None:
        from sluice.serving.predictors import SklearnPredictor

        self.estimator = estimator
        self.schema = schema
        self._predictor = SklearnPredictor(estimator)

    def predict(self, columns: Columns) -> Prediction:
        return self._predictor.predict(schema_frame(columns, self.schema))


class PythonModel:
    """A class of the user's own project (``[tool.sluice] model``), loaded from the version's files.

    Built by :func:`sluice.models.python_model.load_python_model`, which takes the class only from
    the deployed project. ``predict(frame)`` gives labels and, for a classifier,
    ``predict_proba(frame)`` one column per class in ``classes`` order; ``frame`` is
    :func:`schema_frame` of the validated columns.
    """

    flavour = PYTHON

    def __init__(
        self, model: Any, schema: FeatureSchema, *, task: str, classes: tuple[Any, ...] | None = None
    ) -> None:
        self.model = model
        self.schema = schema
        self.task = task
        self.classes = classes
        self.has_proba = task == "classification" and callable(getattr(model, "predict_proba", None))

    def predict(self, columns: Columns) -> Prediction:
        frame = schema_frame(columns, self.schema)
        labels = np.asarray(self._call("predict", frame)).reshape(-1)
        if len(labels) != len(frame):
            raise SluiceError(
                f"the python model's predict returned {len(labels)} values for {len(frame)} rows"
            )
        if not self.has_proba:
            return labels, None
        probabilities = np.asarray(self._call("predict_proba", frame), dtype=float)
        shape = probabilities.shape
        if len(shape) != 2 or shape[0] != len(frame) or (self.classes and shape[1] != len(self.classes)):
            raise SluiceError(
                f"the python model's predict_proba returned shape {shape} for {len(frame)} rows"
                f" of {len(self.classes or ())} classes"
            )
        return labels, probabilities

    def _call(self, method: str, frame: pd.DataFrame) -> Any:
        try:
            return getattr(self.model, method)(frame)
        except SluiceError:
            raise
        except Exception as err:  # the user's code: one line naming the method and the error
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise SluiceError(f"the python model's {method} failed ({type(err).__name__}: {first})") from None


def served_model(loaded: LoadedModel, flavour: str) -> ServedModel:
    """The :class:`~sluice.models.contract.ServedModel` of a loaded version, for ``flavour``.

    A version with a descriptor serves its own model: its fitted estimator (``sklearn``), or its
    ONNX graph (``onnx``: a graph registered as it is, or a scikit-learn model's twin), or the
    instance of the deployed project's model class (``python``). One without is the built-in
    recipe, predicting with its estimator or its ONNX graph.
    """
    from sluice.serving.predictors import OnnxPredictor, SklearnPredictor

    record = loaded.record
    if loaded.descriptor is not None:
        return _described_model(loaded, flavour)
    if loaded.preprocessor is None:
        raise SluiceError(f"model {record.name!r} version {record.version} has no preprocessing")
    if flavour == "onnx":
        if not loaded.onnx_bytes:
            raise SluiceError(
                f"model {record.name!r} version {record.version} has no model.onnx artifact "
                "(ONNX conversion unsupported or parity check failed); serve it with the container flavour"
            )
        predictor: SklearnPredictor | OnnxPredictor = OnnxPredictor(loaded.onnx_bytes)
    else:
        predictor = SklearnPredictor(loaded.estimator)
    try:
        return BuiltinRecipe(loaded.schema, loaded.preprocessor, predictor)
    except SluiceError as err:
        raise SluiceError(f"model {record.name!r} version {record.version}: {err}") from None


def _described_model(loaded: LoadedModel, flavour: str) -> ServedModel:
    from sluice.models.onnx_model import OnnxModel

    descriptor, record = loaded.descriptor, loaded.record
    assert descriptor is not None
    if descriptor.flavour == PYTHON or flavour == PYTHON:
        if descriptor.flavour != flavour:
            raise SluiceError(
                f"model {record.name!r} version {record.version} is a {descriptor.flavour} model, "
                f"not served by the {flavour} flavour"
            )
        return PythonModel(loaded.estimator, loaded.schema, task=descriptor.task, classes=descriptor.classes)
    if flavour != ONNX:
        return SklearnModel(loaded.estimator, loaded.schema)
    if not loaded.onnx_bytes:
        raise SluiceError(
            f"model {record.name!r} version {record.version} has no model.onnx (no ONNX graph or "
            "parity-checked twin); serve it with the container flavour"
        )
    try:
        return OnnxModel(loaded.onnx_bytes, loaded.schema, task=descriptor.task, classes=descriptor.classes)
    except SluiceError as err:
        raise SluiceError(f"model {record.name!r} version {record.version}: {err}") from None


def schema_frame(columns: Columns, schema: FeatureSchema) -> pd.DataFrame:
    """The DataFrame of validated ``columns``: schema order, the schema's dtypes where values allow.

    The same frame :meth:`FeatureSchema.validate` returns with ``as_frame=True``: integer
    numerics without NaN and categoricals are cast to the dtype seen at training.
    """
    import pandas as pd

    from sluice.models.validation import _cast_categorical

    arrays: list[Any] = []
    for f in schema.features:
        values = np.asarray(columns[f.name])
        if f.kind == "categorical":
            values = _cast_categorical(values, f, has_missing=bool(is_missing(values).any()))
        elif f.dtype.startswith(("int", "uint")) and not np.isnan(values.astype(float)).any():
            values = values.astype(f.dtype)
        arrays.append(values)
    names, index = pd.Index(schema.names), pd.RangeIndex(len(arrays[0]))
    from_arrays = getattr(pd.DataFrame, "_from_arrays", None)
    if from_arrays is not None:
        # A tenth of the constructor's time on a one-row request (17 µs against 175 µs): the
        # arrays are validated, one per column, of one length and already of their dtypes.
        frame: pd.DataFrame = from_arrays(arrays, columns=names, index=index, verify_integrity=False)
        return frame
    return pd.DataFrame(dict(zip(names, arrays, strict=True)), index=index, columns=names, copy=False)


# ---------------------------------------------------------------------------------------------
# The descriptor artifact, model.json
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """A version's ``model.json``: which implementation serves it, from which file.

    Build it with :func:`describe_sklearn` and :meth:`to_json`; read it with :meth:`from_json`.
    """

    model_file: str
    task: str
    flavour: str = SKLEARN
    classes: tuple[Any, ...] | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    skops_trusted: tuple[str, ...] = ()
    package: str = ""
    package_version: str = ""

    def __post_init__(self) -> None:
        if self.flavour not in DESCRIBED_FLAVOURS:
            raise SluiceError(
                f"model.json: flavour must be one of {', '.join(DESCRIBED_FLAVOURS)}, got {self.flavour!r}"
            )
        files = FLAVOUR_FILES[self.flavour]
        if self.model_file not in files:
            raise SluiceError(
                f"model.json: model_file must be one of {', '.join(files)} for flavour {self.flavour}, "
                f"got {self.model_file!r}"
            )
        if self.task not in TASKS:
            raise SluiceError(f"model.json: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.libraries.items()):
            raise SluiceError(
                'model.json: libraries must map names to version strings, e.g. {"scikit-learn": "1.9.1"}'
            )
        if not all(isinstance(t, str) for t in self.skops_trusted):
            raise SluiceError("model.json: skops_trusted must be a list of type names")
        if not isinstance(self.package, str) or not isinstance(self.package_version, str):
            raise SluiceError("model.json: package and package_version must be strings")
        if (self.flavour == PYTHON) != bool(self.package):
            raise SluiceError("model.json: package (the project's package name) is for flavour python only")
        if self.package and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", self.package
        ):
            raise SluiceError(f"model.json: package must be an importable package name, got {self.package!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "flavour": self.flavour,
            "model_file": self.model_file,
            "task": self.task,
            "classes": None if self.classes is None else list(self.classes),
            "libraries": dict(self.libraries),
            "skops_trusted": list(self.skops_trusted),
            **({"package": self.package, "package_version": self.package_version} if self.package else {}),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        """Raises :class:`SluiceError` naming the field that is missing or malformed."""
        if not isinstance(data, Mapping):
            raise SluiceError("model.json must hold a JSON object")
        named = [key for key in _CODE_FIELDS if key in data]
        if named:
            raise SluiceError(
                f"model.json field {named[0]!r} is not accepted: a model's code comes only from the "
                "deployed project ([tool.sluice] model in its pyproject.toml)"
            )
        for key in ("model_file", "task"):
            if key not in data:
                raise SluiceError(f"model.json lacks {key!r}")
        classes = data.get("classes")
        libraries = data.get("libraries") or {}
        trusted = data.get("skops_trusted") or []
        if classes is not None and not isinstance(classes, list):
            raise SluiceError("model.json: classes must be a list or null")
        if not isinstance(libraries, Mapping) or not isinstance(trusted, list):
            raise SluiceError("model.json: libraries must be an object and skops_trusted a list")
        return cls(
            model_file=data["model_file"],
            task=data["task"],
            flavour=data.get("flavour", SKLEARN),
            classes=None if classes is None else tuple(classes),
            libraries=dict(libraries),
            skops_trusted=tuple(trusted),
            package=data.get("package") or "",
            package_version=data.get("package_version") or "",
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> Descriptor:
        try:
            data = json.loads(body)
        except ValueError:
            raise SluiceError("model.json is not valid JSON") from None
        return cls.from_dict(data)


def describe_sklearn(
    estimator: Any,
    *,
    model_file: str,
    libraries: Mapping[str, str] | None = None,
    trusted: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``model.json`` object of a fitted scikit-learn estimator or pipeline.

    Parameters
    ----------
    estimator
        The fitted estimator; a classifier has ``classes_`` (``task="classification"``).
    model_file
        ``"model.skops"`` or ``"model.joblib"``: the artifact holding the estimator.
    libraries
        Versions of the libraries that made the model; ``scikit-learn`` defaults to the
        installed one.
    trusted
        For ``model.skops``: the types :func:`skops.io.loads` may load beyond its defaults
        (see :func:`skops_bytes`).
    """
    import sklearn

    classes = getattr(estimator, "classes_", None)
    task = "classification" if classes is not None and hasattr(estimator, "predict_proba") else "regression"
    return Descriptor(
        model_file=model_file,
        task=task,
        classes=None if classes is None else tuple(np.asarray(classes).tolist()),
        libraries={"scikit-learn": sklearn.__version__, **(libraries or {})},
        skops_trusted=tuple(trusted),
    ).to_dict()


def skops_bytes(estimator: Any) -> tuple[bytes, list[str]]:
    """``estimator`` in the skops format, and the types outside skops' defaults it holds.

    Record those types as ``skops_trusted`` only after checking they are the user's own code.
    """
    import skops.io as sio

    body = sio.dumps(estimator)
    return body, sorted(sio.get_untrusted_types(data=body))


def load_estimator(descriptor: Descriptor, body: bytes) -> Any:
    """The estimator in ``body``, the descriptor's ``model_file``: verified bytes only.

    ``model.skops`` loads with :func:`skops.io.loads`, trusting only the descriptor's
    ``skops_trusted`` types; ``model.joblib`` unpickles, so call this only after the bytes'
    sha256 and the manifest signature have been checked.

    Raises
    ------
    SluiceError
        If the skops file holds a type outside the trusted list.
    """
    if descriptor.model_file == SKOPS_FILE:
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        try:
            return sio.loads(body, trusted=list(descriptor.skops_trusted))
        except UntrustedTypesFoundException as err:
            raise SluiceError(f"model.skops holds type(s) not in model.json's skops_trusted: {err}") from None
    import joblib

    return joblib.load(io.BytesIO(body))


def library_mismatch(recorded: Mapping[str, str], serving: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The first library both name with different versions: ``(library, recorded, serving)``.

    Names compare as package names do (case, ``-``, ``_`` and ``.`` alike); libraries only one
    side names are not compared.
    """
    have = {_package(name): (name, version) for name, version in serving.items()}
    for name, version in sorted(recorded.items()):
        found = have.get(_package(name))
        if found is not None and str(found[1]).strip() != str(version).strip():
            return name, str(version), str(found[1])
    return None


def _package(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
