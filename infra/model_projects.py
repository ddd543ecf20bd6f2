"""A model's own code: the project folder a model entry names (``"project": "examples/credit_decisions"``).

The project declares its code in ``[tool.sluice]`` of its ``pyproject.toml`` (package, entry
points, pinned requirements). The CDK app builds one image per such model from
``containers/model/Dockerfile``: Sluice's base image (``containers/model/requirements.txt``) plus
the project's pinned requirements and the project itself; the model's container endpoint, batch
steps and retraining steps run it (:class:`infra.constructs.runtime.ModelImage`).

Read here with ``tomllib`` at synth time: the runtime's reader (``sluice.models.project``) is
not imported, since infra imports no runtime code. :func:`read_project` checks, each failure a
one-line ``ValueError`` that :mod:`infra.config` prefixes with the key and the model:

- the folder lies inside the app directory (it is part of the image's build context);
- it has a ``pyproject.toml`` with a ``[tool.sluice]`` table naming a ``package``;
- its requirements file, if declared, exists and pins every requirement with ``==``;
- it pins any library the base image also pins (scikit-learn, numpy, pandas, ...) to the base
  image's version, so the project cannot change what serves and loads every model.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

APP_DIR = Path(__file__).resolve().parents[1]
MODEL_IMAGE_DIR = APP_DIR / "containers" / "model"
#: The base image's pins (Sluice's runtime dependencies); its lock is ``requirements-hashed.txt``.
BASE_REQUIREMENTS = MODEL_IMAGE_DIR / "requirements.txt"
_BASE_NAME = "containers/model/requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;,*]+)\s*(;.*)?$")


@dataclass(frozen=True)
class ModelProject:
    """A checked model project.

    Attributes
    ----------
    path
        The folder, relative to the app directory in POSIX form: the image's ``PROJECT`` build arg.
    package
        ``[tool.sluice] package``.
    pins
        ``{library: version}`` of the project's requirements file (names as written).
    """

    path: str
    package: str
    pins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def root(self) -> Path:
        return APP_DIR / self.path


def read_project(path_text: str, *, app_dir: Path | None = None) -> ModelProject:
    """The project at ``path_text`` (relative to ``app_dir``, default the app directory), checked;
    ``ValueError`` in one line."""
    app_dir = (app_dir or APP_DIR).resolve()
    root = (app_dir / path_text).resolve()
    if root == app_dir or not root.is_relative_to(app_dir):
        raise ValueError(f"{path_text} must be a folder inside {app_dir.name}/ (the image's build context)")
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ValueError(f"{path_text}/pyproject.toml not found: a model project declares its code there")
    try:
        document = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path_text}/pyproject.toml is not valid TOML ({err})") from None
    table = document.get("tool", {}).get("sluice")
    if not isinstance(table, dict):
        raise ValueError(f"{path_text}/pyproject.toml has no [tool.sluice] table")
    package = table.get("package")
    if not isinstance(package, str) or not package.strip():
        raise ValueError(f"{path_text}/pyproject.toml: [tool.sluice] must name the project's 'package'")
    pins: dict[str, str] = {}
    requirements = table.get("requirements")
    if requirements is not None:
        where = f"{path_text}/{requirements}"
        if not isinstance(requirements, str) or not (root / requirements).is_file():
            raise ValueError(f"{where} not found ([tool.sluice] requirements)")
        if not (root / requirements).resolve().is_relative_to(root):
            raise ValueError(f"{where} must lie inside the project folder ([tool.sluice] requirements)")
        pins = read_pins(root / requirements, where=where)
        _check_base_pins(pins, where=where)
    relative = root.relative_to(app_dir).as_posix()
    return ModelProject(path=relative, package=package, pins=MappingProxyType(pins))


def read_pins(path: Path, *, where: str | None = None) -> dict[str, str]:
    """``{library: version}`` of a requirements file; ``ValueError`` on a line not pinned with ``==``."""
    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _PIN.match(text)
        if match is None:
            raise ValueError(f"{where or path.name}: {text!r} is not pinned: pin every requirement with ==")
        pins[match.group(1)] = match.group(3)
    return pins


def base_pins() -> dict[str, str]:
    """``{normalized library name: version}`` of the model image's base (``containers/model``)."""
    return {package_name(name): version for name, version in read_pins(BASE_REQUIREMENTS).items()}


def package_name(name: str) -> str:
    """``name`` as package names compare: case, ``-``, ``_`` and ``.`` alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_base_pins(pins: Mapping[str, str], *, where: str) -> None:
    base = base_pins()
    for name, version in pins.items():
        pinned = base.get(package_name(name))
        if pinned is not None and pinned != version:
            raise ValueError(
                f"{where} pins {name}=={version} but Sluice's model image pins {name}=={pinned} "
                f"({_BASE_NAME}): pin {pinned}"
            )
