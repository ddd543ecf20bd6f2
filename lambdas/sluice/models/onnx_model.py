"""The ``onnx`` flavour of the model contract: any ONNX graph, run by ONNX Runtime with numpy alone.

:class:`OnnxModel` serves a registered ``model.onnx``: a graph registered as it is (descriptor
flavour ``"onnx"``) or the parity-checked ONNX twin of a fitted scikit-learn model. The zip
endpoint has numpy and ONNX Runtime only, so this module never imports pandas.

Inputs are bound one of two ways (:func:`input_binding`):

* by name: one graph input per schema feature, a numeric one as float ``[n, 1]`` (NaN where
  missing), a categorical one as string ``[n, 1]`` ("" where missing); what skl2onnx makes of a
  ``Pipeline`` given one initial type per column;
* a single 2-D float input taking the numeric features in schema order (no categoricals).

Outputs (:func:`output_roles`): a classifier's label output (an integer or string tensor) and its
probabilities (a float tensor ``[n, k]``, or skl2onnx's ZipMap ``seq(map)``); a regressor's one
float output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError

if TYPE_CHECKING:  # pragma: no cover
    from sluice.models.schema import FeatureSchema

ONNX = "onnx"
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_LABEL_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(string)")


@dataclass(frozen=True)
class Binding:
    """How validated columns become the graph's inputs: ``{input: (features, dtype)}``."""

    inputs: dict[str, tuple[tuple[str, ...], Any]]
    matrix: bool = False


@dataclass(frozen=True)
class Outputs:
    """The names of the outputs :class:`OnnxModel` reads (``""`` where the graph has none)."""

    label: str = ""
    probabilities: str = ""
    zipmap: bool = False
    value: str = ""


class OnnxModel:
    """A served model that runs an ONNX graph (contract flavour ``"onnx"``).

    Parameters
    ----------
    onnx_bytes
        The serialised graph.
    schema
        The version's input schema; requests are validated against it before :meth:`predict`.
    task
        ``"classification"`` or ``"regression"``.
    classes
        A classifier's classes, in the order of its probability columns.
    threads
        ONNX Runtime's intra-op threads (a Lambda has one or two vCPUs).

    Raises
    ------
    SluiceError
        One line: the bytes are no graph ONNX Runtime can load, or its inputs or outputs do not
        fit the schema and task.
    """

    flavour = ONNX

    def __init__(
        self,
        onnx_bytes: bytes,
        schema: FeatureSchema,
        *,
        task: str,
        classes: Sequence[Any] | None = None,
        threads: int = 1,
    ) -> None:
        self.schema = schema
        self.task = task
        self.classes = None if classes is None else np.asarray(list(classes))
        self.session = load_session(onnx_bytes, threads)
        self.binding = input_binding(self.session.get_inputs(), schema)
        self.outputs = output_roles(self.session.get_outputs(), task)
        self._wanted = [n for n in (self.outputs.label, self.outputs.probabilities, self.outputs.value) if n]

    def feeds(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs for validated ``columns``."""
        out = {}
        for name, (features, dtype) in self.binding.inputs.items():
            if self.binding.matrix:
                out[name] = np.column_stack([np.asarray(columns[f], dtype=dtype) for f in features])
            elif dtype is str:
                out[name] = _strings(columns[features[0]]).reshape(-1, 1)
            else:
                out[name] = np.asarray(columns[features[0]], dtype=dtype).reshape(-1, 1)
        return out

    def run(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The raw outputs the model reads, by name."""
        try:
            found = self.session.run(self._wanted, self.feeds(columns))
        except Exception as err:  # onnxruntime raises its own types for shape and type errors
            raise SluiceError(f"model.onnx cannot score these rows: {_short(err)}") from None
        return dict(zip(self._wanted, found, strict=True))

    def predict(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.run(columns)
        if self.task == "regression":
            return np.asarray(outputs[self.outputs.value], dtype=float).reshape(-1), None
        probabilities = self._probabilities(outputs)
        if self.outputs.label:
            labels = np.asarray(outputs[self.outputs.label]).reshape(-1)
        elif self.classes is not None and probabilities is not None:
            labels = self.classes[np.argmax(probabilities, axis=1)]
        else:
            raise SluiceError("model.onnx has no label output and no classes to name its probability columns")
        return labels, probabilities

    def _probabilities(self, outputs: Mapping[str, Any]) -> np.ndarray | None:
        found = outputs.get(self.outputs.probabilities) if self.outputs.probabilities else None
        if found is None:
            return None
        if not self.outputs.zipmap:
            return np.asarray(found, dtype=float)
        keys = list(found[0]) if len(found) else []
        order = keys if self.classes is None else [_key(keys, c) for c in self.classes.tolist()]
        return np.array([[row[k] for k in order] for row in found], dtype=float).reshape(
            len(found), len(order)
        )


def input_binding(inputs: Sequence[Any], schema: FeatureSchema) -> Binding:
    """Bind the graph's ``inputs`` (ONNX Runtime ``NodeArg`` s) to the schema's features.

    Raises
    ------
    SluiceError
        One line naming the graph's inputs and the schema's features when neither binding fits.
    """
    kinds = {f.name: f.kind for f in schema.features}
    names = [i.name for i in inputs]
    if sorted(names) == sorted(kinds):
        bound: dict[str, tuple[tuple[str, ...], Any]] = {}
        for arg in inputs:
            dtype = str if arg.type == "tensor(string)" else _FLOAT_TYPES.get(arg.type)
            if dtype is None or (dtype is str) != (kinds[arg.name] == "categorical"):
                raise SluiceError(
                    f"model.onnx input {arg.name!r} is {arg.type}; a {kinds[arg.name]} feature needs "
                    + ("tensor(string)" if kinds[arg.name] == "categorical" else "tensor(float)")
                )
            bound[arg.name] = ((arg.name,), dtype)
        return Binding(bound)
    numeric = tuple(f.name for f in schema.features if f.kind == "numeric")
    if len(inputs) == 1 and len(numeric) == len(kinds) and inputs[0].type in _FLOAT_TYPES:
        shape = list(inputs[0].shape or [])
        if len(shape) == 2 and (shape[1] == len(numeric) or not isinstance(shape[1], int)):
            return Binding({names[0]: (numeric, _FLOAT_TYPES[inputs[0].type])}, matrix=True)
    raise SluiceError(
        f"model.onnx inputs ({', '.join(names)}) do not match the reference features "
        f"({', '.join(kinds)}): give one input per feature by name, or one 2-D float input of the numeric features"
    )


def output_roles(outputs: Sequence[Any], task: str) -> Outputs:
    """Which of the graph's ``outputs`` hold labels, probabilities or a regressor's values.

    Raises
    ------
    SluiceError
        If a classifier has neither labels nor probabilities, or a regressor no float output.
    """
    label = probabilities = ""
    zipmap = False
    for arg in outputs:
        if arg.type.startswith("seq(map(") and not probabilities:
            probabilities, zipmap = arg.name, True
        elif arg.type in _FLOAT_TYPES and not probabilities and _columns(arg.shape) != 1:
            probabilities = arg.name
        elif arg.type in _LABEL_TYPES and not label:
            label = arg.name
    if task == "regression":
        values = [a.name for a in outputs if a.type in _FLOAT_TYPES]
        if not values:
            raise SluiceError("model.onnx has no float output for a regressor's predictions")
        return Outputs(value=values[0])
    if not (label or probabilities):
        raise SluiceError("model.onnx has no label or probability output for a classifier")
    return Outputs(label=label, probabilities=probabilities, zipmap=zipmap)


def graph_task(outputs: Sequence[Any]) -> str:
    """``"classification"`` if the graph's ``outputs`` hold labels or probabilities, else ``"regression"``.

    A ZipMap, an integer or string output, or a float ``[n, k>1]`` output makes a classifier.
    """
    for arg in outputs:
        if arg.type.startswith("seq(") or arg.type in _LABEL_TYPES:
            return "classification"
        if arg.type in _FLOAT_TYPES and isinstance(_columns(arg.shape), int) and _columns(arg.shape) > 1:
            return "classification"
    return "regression"


def recorded_classes(onnx_bytes: bytes) -> tuple[Any, ...] | None:
    """The class labels a classifier graph's nodes record (skl2onnx's ``classlabels_*``), if any.

    Registration side: uses the ``onnx`` package, and answers ``None`` without it.
    """
    try:
        import onnx

        graph = onnx.load_from_string(onnx_bytes).graph
    except Exception:  # no onnx package, or bytes ONNX Runtime loads but onnx does not parse
        return None
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_ints", "classlabels_int64s") and attribute.ints:
                return tuple(int(v) for v in attribute.ints)
            if attribute.name == "classlabels_strings" and attribute.strings:
                return tuple(v.decode() for v in attribute.strings)
    return None


def load_session(onnx_bytes: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime session of the graph, on the CPU (one line if the bytes are not a graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # A Lambda has one or two vCPUs; extra threads only add scheduling latency for small batches.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad graphs
        raise SluiceError(f"model.onnx cannot be loaded by ONNX Runtime: {_short(err)}") from None


def _columns(shape: Sequence[Any] | None) -> Any:
    return shape[1] if shape is not None and len(shape) == 2 else None


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array(["" if v is None else str(v) for v in values.tolist()], dtype=object)


def _key(keys: Sequence[Any], wanted: Any) -> Any:
    for key in keys:
        if key == wanted or str(key) == str(wanted):
            return key
    raise SluiceError(
        f"model.onnx's probabilities have no class {wanted!r} (it has {', '.join(map(str, keys))})"
    )


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
