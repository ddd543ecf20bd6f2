"""The one way the embedded local AWS changes moto: each patch names the moto gap it fills.

moto 5.2.5 is the emulator's engine, and where it falls short of AWS a module of this package
replaces one of its attributes. Every such replacement is a :class:`Patch` constant declared
by the module that needs it, next to the code it installs::

    SEND_TO_TARGETS = Patch(
        target="moto.events.models.Rule.send_to_targets",
        gap="put_events raises NotImplementedError for Lambda, Step Functions and SNS targets",
        replace=_routed_send_to_targets,  # the original in, the replacement out
        owner=__name__,
        name="event_router",
    )
    SEND_TO_TARGETS.apply()  # idempotent; SEND_TO_TARGETS.undo() restores moto's own

The same helper resolves the moto names a module only reads (:func:`moto_symbol`, and
:class:`Needs` to check them all when the emulator starts). Whatever moto moves or reshapes in
an upgrade, the error is a ``RuntimeError`` naming the moto symbol and the emulator module to
update, raised when the emulator starts instead of a wrong answer later.

The replacement of an applied patch carries ``__sluice_<name>__`` and, under
``__sluice_original__``, what it replaced: applying twice wraps once, and :meth:`Patch.undo`
needs no state of its own.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

ORIGINAL = "__sluice_original__"


def _gone(path: str, owner: str, detail: str = "") -> RuntimeError:
    reason = f" ({detail})" if detail else ""
    return RuntimeError(f"{path} is gone{reason} (moto upgraded?); {owner} must be updated")


def _locate(path: str, owner: str) -> tuple[Any, str]:
    """The object holding the last name of ``path`` (a module or a class) and that name."""
    parts = path.split(".")
    try:
        node: Any = importlib.import_module(parts[0])
    except ImportError as err:
        raise _gone(path, owner, str(err)) from err
    for index, part in enumerate(parts[1:-1], start=1):
        if hasattr(node, part):
            node = getattr(node, part)
        elif isinstance(node, ModuleType):
            try:
                node = importlib.import_module(".".join(parts[: index + 1]))
            except ImportError as err:
                raise _gone(path, owner, str(err)) from err
        else:
            raise _gone(path, owner)
    last = parts[-1]
    if isinstance(node, ModuleType) and not hasattr(node, last):
        with contextlib.suppress(ImportError):  # a submodule that was not imported yet
            importlib.import_module(path)
    return node, last


def moto_symbol(path: str, *, owner: str = "localaws") -> Any:
    """The moto object at the dotted ``path`` (``moto.events.models.EventPattern``).

    Raises
    ------
    RuntimeError
        Naming ``path`` and ``owner`` if moto no longer has it.
    """
    holder, name = _locate(path, owner)
    if not hasattr(holder, name):
        raise _gone(path, owner)
    return getattr(holder, name)


@dataclass(frozen=True)
class Needs:
    """The moto names an emulator module reads without replacing them, checked in one call.

    Parameters
    ----------
    owner
        The emulator module that reads them (named in errors).
    symbols
        Dotted paths that must resolve.
    code
        ``(function path, name)`` pairs: the moto function must still refer to that constant
        or global. For behaviour switched on through moto's own configuration
        (``execute_state_machine``), which would otherwise silently do nothing.
    instances
        ``(class path, constructor arguments, attributes)``: an instance built with those
        arguments must have the attributes the emulator reads.
    """

    owner: str
    symbols: tuple[str, ...] = ()
    code: tuple[tuple[str, str], ...] = ()
    instances: tuple[tuple[str, tuple[Any, ...], tuple[str, ...]], ...] = ()

    def check(self) -> None:
        """Raise ``RuntimeError`` naming the first moto name that moved or changed."""
        for path in self.symbols:
            moto_symbol(path, owner=self.owner)
        for path, mention in self.code:
            code = getattr(moto_symbol(path, owner=self.owner), "__code__", None)
            if code is None or mention not in set(code.co_consts) | set(code.co_names):
                raise RuntimeError(
                    f"{path} no longer uses {mention!r} (moto upgraded?); {self.owner} must be updated"
                )
        for path, args, attributes in self.instances:
            sample = moto_symbol(path, owner=self.owner)(*args)
            for attribute in attributes:
                if not hasattr(sample, attribute):
                    raise _gone(f"{path}.{attribute}", self.owner)


def _function(value: Any) -> Any:
    """The function inside a ``classmethod``/``staticmethod`` (where the marks go), else ``value``."""
    return getattr(value, "__func__", value)


@dataclass(frozen=True)
class Patch:
    """One replaced moto attribute, the gap it fills, and how to undo it.

    Parameters
    ----------
    target
        Dotted path of the moto attribute (``moto.firehose.models.FirehoseBackend.put_s3_records``).
        A class attribute must be defined on that class itself, not inherited.
    gap
        What moto gets wrong or lacks, in one sentence: why the patch exists.
    replace
        Takes moto's original (for a class attribute: as stored on the class, e.g. a
        ``classmethod``) and returns what replaces it.
    owner
        The emulator module that declares the patch (named in errors).
    name
        Marks the replacement as ``__sluice_<name>__``.
    params
        The parameters moto's original must take, when the replacement mirrors them.
    requires
        Other moto names the replacement reads, resolved before applying.
    """

    target: str
    gap: str
    replace: Callable[[Any], Any]
    owner: str
    name: str = "patch"
    params: tuple[str, ...] | None = None
    requires: tuple[str, ...] = ()

    @property
    def mark(self) -> str:
        return f"__sluice_{self.name}__"

    def current(self) -> tuple[Any, str, Any]:
        """(holder, attribute, value now in place); raises if moto no longer has the target."""
        holder, attribute = _locate(self.target, self.owner)
        found = holder.__dict__.get(attribute) if isinstance(holder, type) else getattr(holder, attribute, None)
        if found is None or not callable(_function(found)):
            raise _gone(self.target, self.owner)
        return holder, attribute, found

    def check(self) -> Any:
        """Resolve the target and every required name, check the parameters; return the value in place."""
        _, _, found = self.current()
        Needs(self.owner, symbols=self.requires).check()
        if self.params is not None and not self.is_applied():
            params = tuple(inspect.signature(_function(found)).parameters)
            if params != self.params:
                raise RuntimeError(
                    f"{self.target} changed its signature to {list(params)}, expected {list(self.params)} "
                    f"(moto upgraded?); {self.owner} must be updated"
                )
        return found

    def is_applied(self) -> bool:
        return bool(getattr(_function(self.current()[2]), self.mark, False))

    def apply(self) -> Any | None:
        """Replace the target (idempotent); return moto's original, or None if already applied."""
        original = self.check()
        if getattr(_function(original), self.mark, False):
            return None
        replacement = self.replace(original)
        function = _function(replacement)
        setattr(function, self.mark, True)
        setattr(function, ORIGINAL, original)
        if not hasattr(function, "__wrapped__"):
            function.__wrapped__ = _function(original)
        holder, attribute, _ = self.current()
        setattr(holder, attribute, replacement)
        return original

    def undo(self) -> None:
        """Put moto's original back (nothing to do if the patch is not applied)."""
        holder, attribute, found = self.current()
        if getattr(_function(found), self.mark, False):
            setattr(holder, attribute, getattr(_function(found), ORIGINAL))


def apply_all(patches: Iterable[Patch]) -> None:
    """Apply each patch in order (every one is idempotent)."""
    for patch in patches:
        patch.apply()
