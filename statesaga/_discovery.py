"""Finding saga definitions in a package, for the CLIs and the diagram generator.

``load_sagas`` is what a ``--definitions PACKAGE`` option calls: it imports the
package and every module in it and returns their saga classes, and whatever
stops it is one ``ImportError`` whose message names the package and the fix.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
from types import ModuleType

from statesaga._definition import Saga


def import_module(name: str) -> ModuleType:
    """Import a user module by dotted name, looking in the current directory first
    (as ``python -m`` does), so ``definitions.order`` works from a checkout.

    Raises:
        ImportError: with a message that says where the module was looked for.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(f"{missing}.")):
            advice = "Run from the folder that contains it, or put it on PYTHONPATH."
        else:  # found, but something it imports is not
            advice = (
                f"It was found, but an import in it failed: install or fix what {name} imports."
            )
        raise ImportError(f"cannot import {name!r}: {exc}. {advice}") from exc


def find_sagas(package: str | ModuleType) -> list[type[Saga]]:
    """Every saga class defined in a package and its submodules.

    Args:
        package: a package or module, or its dotted name (imported as is:
            it must be importable from ``sys.path``).

    Returns:
        The concrete ``Saga`` subclasses defined there (not merely imported),
        sorted by name and version.

    Raises:
        ImportError: the package or one of its modules cannot be imported.
        ValueError: two classes share a name and version.
    """
    root = import_module(package) if isinstance(package, str) else package
    modules = [root]
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{root.__name__}."):
            modules.append(import_module(info.name))
    found: dict[tuple[str, int], type[Saga]] = {}
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Saga)
                and cls.__module__ == module.__name__
                and "spec" in cls.__dict__
            ):
                key = (cls.spec.name, cls.spec.version)
                other = found.get(key)
                if other is not None and other is not cls:
                    raise ValueError(
                        f"{cls.spec.key} is defined twice: {qualname(other)} and "
                        f"{qualname(cls)}; give one of them another name or version"
                    )
                found[key] = cls
    return [found[k] for k in sorted(found)]


def load_sagas(package: str) -> list[type[Saga]]:
    """The saga classes of the package a ``--definitions`` option names.

    Args:
        package: the dotted name of a package or module, looked up in the
            current directory first, then on ``sys.path``.

    Returns:
        Its saga classes, as ``find_sagas`` finds them.

    Raises:
        ImportError: the package or one of its modules cannot be imported, or
            two of its classes share a name and version; the message says which
            and what to do.
    """
    try:
        return find_sagas(package)
    except ValueError as exc:
        raise ImportError(f"cannot load the sagas of {package!r}: {exc}") from exc


def qualname(cls: type) -> str:
    """``module.Class`` of a class, as messages show it."""
    return f"{cls.__module__}.{cls.__qualname__}"
