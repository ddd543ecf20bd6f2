"""Model references, one grammar for every command: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

``sluice models describe credit-risk:2``, ``sluice models approve credit-risk:2``,
``sluice endpoint deploy credit-risk@champion``. The older forms (a version as a separate
positional, ``--version N``, ``--alias A``) still work; they fill what the reference leaves open.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sluice.errors import SluiceError

if TYPE_CHECKING:
    from sluice.registry.store import ModelRegistry

_REF = re.compile(r"^(?P<name>[^:@\s]+)(?::(?P<version>[^:@\s]*)|@(?P<alias>[^:@\s]*))?$")
GRAMMAR = "NAME, NAME:VERSION or NAME@ALIAS"


@dataclass(frozen=True)
class ModelRef:
    """A model, optionally one version of it (``version``) or the version an alias names (``alias``)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name

    @property
    def pinned(self) -> bool:
        """Whether it names one version (by number or alias)."""
        return self.version is not None or self.alias is not None

    def with_version(self, version: int | str | None = None, alias: str | None = None) -> ModelRef:
        """Fill the version (or alias) from an older form; a conflict with the reference is an error."""
        if version is None and alias is None:
            return self
        try:
            number = positive_int(str(version)) if version is not None else None
        except argparse.ArgumentTypeError as err:
            raise SluiceError(f"{self} {version}: {err}") from None
        if self.pinned and (number, alias) != (self.version, self.alias):
            given = f"version {number}" if number is not None else f"alias {alias}"
            raise SluiceError(f"{self} already names a version; drop the extra {given}")
        return replace(self, version=number, alias=alias)

    def require_version(self, registry: ModelRegistry | None = None) -> int:
        """The version number: given, or the alias's version (read from ``registry``)."""
        if self.version is not None:
            return self.version
        if self.alias and registry is not None:
            aliases = registry.aliases(self.name)
            if self.alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise SluiceError(f"{self}: model {self.name} has no alias {self.alias!r} (aliases: {known})")
            return int(aliases[self.alias])
        raise SluiceError(f"{self}: name a version, as {self.name}:VERSION or {self.name}@ALIAS")


def parse_ref(text: str) -> ModelRef:
    """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``; raises :class:`SluiceError` otherwise."""
    match = _REF.match(text.strip())
    if not match:
        raise SluiceError(f"model reference {text!r}: expected {GRAMMAR}")
    version, alias = match.group("version"), match.group("alias")
    if version is not None:
        try:
            return ModelRef(match.group("name"), version=positive_int(version))
        except argparse.ArgumentTypeError as err:
            raise SluiceError(f"model reference {text!r}: {err}") from None
    if alias is not None and not alias:
        raise SluiceError(f"model reference {text!r}: empty alias after @")
    return ModelRef(match.group("name"), alias=alias or None)


def model_ref(text: str) -> ModelRef:
    """``parse_ref`` as an argparse ``type`` (its errors become argparse's usage errors)."""
    try:
        return parse_ref(text)
    except SluiceError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {value}")
    return value


def split_version(ref: ModelRef, rest: list[str], *, keep: int) -> tuple[ModelRef, list[str]]:
    """The older ``NAME VERSION ...`` form: with ``keep`` arguments expected after the reference,
    one more before them is the version."""
    if len(rest) == keep + 1 and not ref.pinned:
        return ref.with_version(rest[0]), rest[1:]
    if len(rest) != keep:
        raise SluiceError(
            f"expected {GRAMMAR} and {keep} more argument(s), got {' '.join([str(ref), *rest])}"
        )
    return ref, rest
