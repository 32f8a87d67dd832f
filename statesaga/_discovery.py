"""Finding saga definitions in a package, for the CLI and the diagram generator."""

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
        raise ImportError(
            f"cannot import {name!r}: {exc}. Run from the folder that contains it, "
            "or put it on PYTHONPATH."
        ) from exc


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
            modules.append(importlib.import_module(info.name))
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


def qualname(cls: type) -> str:
    """``module.Class`` of a class, as messages show it."""
    return f"{cls.__module__}.{cls.__qualname__}"
