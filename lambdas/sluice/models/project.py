"""A model project's own code: ``[tool.sluice]`` in its ``pyproject.toml``.

A project declares, in one place::

    [tool.sluice]
    package = "credit_decisions"                          # the importable package
    preprocess = "credit_decisions.steps:preprocess"      # frame -> frame (training and batch)
    train = "credit_decisions.steps:train"                # (data, hyperparameters) -> fitted model
    postprocess = "credit_decisions.steps:postprocess"    # (frame, probabilities) -> frame
    model = "credit_decisions.serving:Model"              # optional: a python-flavour model class
    requirements = "requirements.txt"                     # pinned, installed into the model's image
    target = "default"                                    # the label column of training data

Every entry point is optional and must lie inside ``package``. The CDK app builds one image per
model from the project (``containers/model/Dockerfile``), and the image sets ``SLUICE_PROJECT`` to
the installed ``pyproject.toml``: :func:`deployed_project` reads that file, so **only code deployed
in the image can run**. Nothing at run time (a state-machine input, an event, a registry record)
names an entry point; they only ever say which model and which data.
"""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.errors import SluiceError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: Environment variable naming the deployed project's ``pyproject.toml`` (set by the model image's
#: Dockerfile, and by the local emulator for the same image).
PROJECT_ENV = "SLUICE_PROJECT"
ENTRY_POINTS = ("preprocess", "train", "postprocess", "model")
_KNOWN = {"package", "requirements", "target", *ENTRY_POINTS}
#: Field names a run-time input could use to choose code; inputs refuse them with :data:`NAMES_NO_CODE`.
CODE_FIELDS = frozenset(
    {*ENTRY_POINTS, "entry_point", "entry_points", "model_class", "package", "module", "callable", "code"}
)
NAMES_NO_CODE = "entry points come only from the deployed image ([tool.sluice] in its pyproject.toml)"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Project:
    """A model project's declaration (``[tool.sluice]``).

    Attributes
    ----------
    root
        The folder holding ``pyproject.toml``.
    package
        The project's importable package; every entry point lies inside it.
    entry_points
        ``{"preprocess" | "train" | "postprocess" | "model": "module:attribute"}``, those declared.
    requirements
        The pinned requirements file, relative to ``root`` (``None``: none).
    target
        The label column of the project's training data (``None``: not declared).
    """

    root: Path
    package: str
    entry_points: dict[str, str]
    requirements: str | None = None
    target: str | None = None

    @classmethod
    def from_pyproject(cls, path: str | Path) -> Project:
        """Read and check ``[tool.sluice]``; raises :class:`SluiceError` naming the bad key."""
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text())
        except OSError as err:
            raise SluiceError(f"{path}: cannot read the project file ({err.strerror or err})") from None
        except tomllib.TOMLDecodeError as err:
            raise SluiceError(f"{path}: not valid TOML ({err})") from None
        table = document.get("tool", {}).get("sluice")
        if not isinstance(table, dict):
            raise SluiceError(f"{path}: no [tool.sluice] table")
        unknown = sorted(set(table) - _KNOWN)
        if unknown:
            raise SluiceError(
                f"{path}: [tool.sluice] has unknown key {unknown[0]!r} (known: {', '.join(sorted(_KNOWN))})"
            )
        package = table.get("package")
        if not isinstance(package, str) or not _IDENTIFIER.match(package):
            raise SluiceError(f"{path}: [tool.sluice] package must be an importable package name")
        entry_points: dict[str, str] = {}
        for name in ENTRY_POINTS:
            if name in table:
                entry_points[name] = _entry_point(table[name], package, where=f"{path}: [tool.sluice] {name}")
        for key in ("requirements", "target"):
            if key in table and not isinstance(table[key], str):
                raise SluiceError(f"{path}: [tool.sluice] {key} must be a string")
        return cls(path.parent, package, entry_points, table.get("requirements"), table.get("target"))

    @property
    def source_root(self) -> Path:
        """The folder the package imports from: ``src/`` in a src layout, else the project root."""
        return self.root / "src" if (self.root / "src" / self.package.split(".")[0]).is_dir() else self.root

    def has(self, entry_point: str) -> bool:
        return entry_point in self.entry_points

    def entry_point(self, name: str) -> Callable[..., Any]:
        """The declared callable (class for ``model``); :class:`SluiceError` if not declared or missing."""
        if name not in self.entry_points:
            raise SluiceError(f"project {self.package!r} declares no {name!r} in [tool.sluice]")
        module_name, attribute = self.entry_points[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise SluiceError(f"[tool.sluice] {name}: cannot import {module_name!r} ({err})") from None
        found: Callable[..., Any] | None = getattr(module, attribute, None)
        if found is None or not callable(found):
            raise SluiceError(f"[tool.sluice] {name}: {module_name!r} has no callable {attribute!r}")
        return found

    # -- running the declared steps, their results checked -------------------------------------

    def run_preprocess(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``preprocess(frame)`` if declared (``frame`` itself otherwise); the result must be a DataFrame."""
        if not self.has("preprocess"):
            return frame
        out = self._call("preprocess", frame)
        return _frame(out, "preprocess")

    def run_train(self, data: pd.DataFrame, hyperparameters: dict[str, Any]) -> Any:
        """``train(data, hyperparameters)``: a fitted model with ``predict``."""
        model = self._call("train", data, dict(hyperparameters))
        if not callable(getattr(model, "predict", None)):
            raise SluiceError(
                f"[tool.sluice] train returned a {type(model).__name__}, not a fitted model with predict()"
            )
        return model

    def run_postprocess(self, frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
        """``postprocess(frame, scores)``: a DataFrame of one row per row of ``frame``, same order."""
        out = _frame(self._call("postprocess", frame, scores), "postprocess")
        if len(out) != len(frame):
            raise SluiceError(
                f"[tool.sluice] postprocess returned {len(out)} rows for {len(frame)}: it must keep every row"
            )
        return out.reset_index(drop=True)

    def _call(self, name: str, *args: Any) -> Any:
        step = self.entry_point(name)
        try:
            return step(*args)
        except SluiceError:
            raise
        except Exception as err:  # the user's code: one line naming the step; the chain keeps the trace
            text = str(err).strip().splitlines()
            raise SluiceError(
                f"[tool.sluice] {name} ({self.entry_points[name]}) failed: "
                f"{type(err).__name__}: {text[0][:300] if text else ''}"
            ) from err


def refuse_unknown_fields(event: Mapping[str, Any], known: Iterable[str], *, what: str) -> None:
    """Raise a one-line :class:`SluiceError` for the first field of ``event`` not in ``known``.

    A run-time input says which model and which data, never which code: a field naming code
    (``train``, ``preprocess``, ``entry_point``...) is refused saying so, any other unknown field
    listing the known ones.
    """
    allowed = set(known)
    unknown = sorted(set(event) - allowed, key=lambda key: (key not in CODE_FIELDS, str(key)))
    if not unknown:
        return
    key = unknown[0]
    reason = NAMES_NO_CODE if key in CODE_FIELDS else f"known fields: {', '.join(sorted(allowed))}"
    raise SluiceError(f"{what} field {key!r} is not accepted: {reason}")


def deployed_project() -> Project | None:
    """The project deployed with this function (``SLUICE_PROJECT``), or ``None`` for the built-in recipe."""
    path = os.environ.get(PROJECT_ENV, "")
    return _read(path) if path else None


@cache
def _read(path: str) -> Project:
    return Project.from_pyproject(path)


def _entry_point(value: Any, package: str, *, where: str) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise SluiceError(f"{where} must be 'module:attribute', got {value!r}")
    module, attribute = value.split(":")
    if not _IDENTIFIER.match(module) or not _IDENTIFIER.match(attribute) or "." in attribute:
        raise SluiceError(f"{where} must be 'module:attribute', got {value!r}")
    if module != package and not module.startswith(package + "."):
        raise SluiceError(f"{where} must lie inside the project's package {package!r}, got {value!r}")
    return value


def _frame(value: Any, step: str) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(value, pd.DataFrame):
        raise SluiceError(f"[tool.sluice] {step} returned a {type(value).__name__}, not a pandas DataFrame")
    return value
