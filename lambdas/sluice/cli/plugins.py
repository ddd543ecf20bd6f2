"""Command groups and generated datasets that other installed packages add to ``sluice``.

Two entry-point groups (:mod:`importlib.metadata`), declared in a package's ``pyproject.toml``:

- ``sluice.cli``: ``name = "module:add_parser"``, where ``add_parser(subparsers)`` adds one
  command group. The embedded local AWS adds ``local`` (``localaws.cli``) and the demo adds
  ``demo`` (``sluice_demo.cli``).
- ``sluice.datasets``: ``name = "module:OBJECT"``, an object shaped like :class:`GeneratedDataset`:
  a frame generator and the spec of its columns, for ``sluice models register --dataset NAME``.
  The demo adds ``credit`` (``sluice_demo.datasets.CREDIT``).

The runtime imports neither package: it loads what is installed, so the Lambda code asset and
image carry no emulator or demo code and need no exclude rule for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

from sluice.errors import SluiceError

CLI_GROUP = "sluice.cli"
DATASET_GROUP = "sluice.datasets"


class GeneratedDataset(Protocol):
    """What a ``sluice.datasets`` entry point names: labelled frames and their columns."""

    @property
    def target(self) -> str: ...

    @property
    def numeric(self) -> Sequence[str]: ...

    @property
    def categorical(self) -> Sequence[str]: ...

    def generate(self, n_rows: int, *, seed: int = 0) -> Any:
        """``n_rows`` labelled rows (a pandas DataFrame), the same for the same ``seed``."""
        ...


def installed_command_groups() -> list[EntryPoint]:
    """The installed ``sluice.cli`` entry points, by name (so ``sluice --help`` lists them stably)."""
    return sorted(entry_points(group=CLI_GROUP), key=lambda entry: entry.name)


def dataset_names() -> list[str]:
    """Names of the installed generated datasets."""
    return sorted({entry.name for entry in entry_points(group=DATASET_GROUP)})


def load_dataset(name: str) -> GeneratedDataset:
    """The generated dataset ``name``; raises :class:`SluiceError` naming the installed ones if unknown."""
    found = sorted(entry_points(group=DATASET_GROUP, name=name), key=lambda entry: entry.value)
    if not found:
        installed = ", ".join(dataset_names()) or "none installed"
        raise SluiceError(f"--dataset {name}: no such generated dataset (installed: {installed})")
    dataset: GeneratedDataset = found[0].load()
    return dataset
