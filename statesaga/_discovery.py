"""Finding saga definitions, for the CLIs and the diagram generator.

``load_sagas`` is what a ``--definitions PACKAGE`` option calls: it imports the
package and every module in it and returns their saga classes, and whatever
stops it is one ``ImportError`` whose message names the module and the fix (a
``ModuleNotFoundError`` when the package itself is not there).

``configured_definitions`` says which package that is when the option is not
given, the way Python tools find their settings: the ``STATESAGA_DEFINITIONS``
environment variable, then ``definitions`` under ``[tool.statesaga]`` in the
nearest ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
import tomllib
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from statesaga._definition import Saga

#: The environment variable a ``--definitions`` option falls back to.
ENV_VAR = "STATESAGA_DEFINITIONS"

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@attrs.frozen
class Setting:
    """Which definitions package to load, and where that was said.

    Attributes:
        package: the dotted module name.
        source: where it came from, for messages (``--definitions``,
            ``STATESAGA_DEFINITIONS``, or a ``pyproject.toml`` path).
        root: the folder it is looked up from first (that of the
            ``pyproject.toml`` that named it), or ``None``: the current one.
    """

    package: str
    source: str
    root: Path | None = None


def configured_definitions(given: str | None = None, cwd: Path | None = None) -> Setting | None:
    """The definitions package a command should load.

    Args:
        given: the value of the ``--definitions`` option, if any; it wins.
        cwd: where to start looking for ``pyproject.toml`` (default: the
            current directory); the nearest one, going up, is read.

    Returns:
        The setting, or ``None`` when nothing names a package.

    Raises:
        ValueError: the value found is not a dotted module name, or the
            nearest ``pyproject.toml`` cannot be read; the message says where.
    """
    if given is not None:
        return Setting(_checked(given, "--definitions"), "--definitions")
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Setting(_checked(from_env, ENV_VAR), ENV_VAR)
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            return _from_pyproject(pyproject)
    return None


def _from_pyproject(path: Path) -> Setting | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    value = data.get("tool", {}).get("statesaga", {}).get("definitions")
    if value is None:
        return None
    where = f"{path} [tool.statesaga] definitions"
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string (a dotted module name), not {value!r}")
    return Setting(_checked(value, where), str(path), path.parent)


def _checked(name: str, where: str) -> str:
    if not _MODULE_NAME.fullmatch(name):
        raise ValueError(
            f"{where} is {name!r}, which is not a Python module name: give a dotted "
            "name such as myapp.sagas"
        )
    return name


def import_module(name: str, root: Path | None = None) -> ModuleType:
    """Import a user module by dotted name, looking in ``root`` (default: the
    current directory) first, as ``python -m`` does, so ``definitions.order``
    works from a checkout.

    Raises:
        ModuleNotFoundError: there is no such module; the message says where
            it was looked for.
        ImportError: the module was found but importing it failed (something
            it imports is missing, a syntax error, an exception in its code);
            the message names the file and line.
    """
    folder = str(root) if root is not None else os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(f"{missing}.")):
            raise ModuleNotFoundError(
                f"cannot import {name!r}: no module named {missing!r} in {folder} or on "
                "sys.path. Run from the folder that contains it, or put it on PYTHONPATH.",
                name=missing,
            ) from exc
        raise ImportError(  # found, but something it imports is not
            f"cannot import {name!r}: {exc}. It was found, but an import in it failed: "
            f"install or fix what {name} imports.",
            name=name,
        ) from exc
    except ImportError as exc:
        raise ImportError(f"cannot import {name!r}: {exc}.", name=name) from exc
    except Exception as exc:
        raise ImportError(
            f"cannot import {name!r}: {_where(exc)} raised {type(exc).__name__}: {exc}; "
            "fix that module.",
            name=name,
        ) from exc


def _where(exc: Exception) -> str:
    """The file and line a module's import failed at: its own code, not importlib's."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno},"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    return f"{frames[-1].filename}, line {frames[-1].lineno}," if frames else "it"


def find_sagas(package: str | ModuleType, root: Path | None = None) -> list[type[Saga]]:
    """Every saga class a package and its submodules define or export.

    Args:
        package: a package or module, or its dotted name.
        root: the folder a dotted name is looked up in first (default: the
            current directory).

    Returns:
        The concrete ``Saga`` subclasses defined in those modules, or listed
        in a module's ``__all__`` (a module re-exporting another's sagas);
        classes a module merely imports are not counted. Each once, sorted by
        name and version.

    Raises:
        ImportError: the package or one of its modules cannot be imported.
        ValueError: two classes share a name and version.
    """
    from statesaga._definition import Saga

    root_module = import_module(package, root) if isinstance(package, str) else package
    modules = [root_module]
    if hasattr(root_module, "__path__"):
        for info in pkgutil.walk_packages(root_module.__path__, prefix=f"{root_module.__name__}."):
            modules.append(import_module(info.name, root))
    found: dict[tuple[str, int], type[Saga]] = {}
    for module in modules:
        exported = set(getattr(module, "__all__", ()))
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Saga)
                and (cls.__module__ == module.__name__ or name in exported)
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


def load_sagas(package: str, root: Path | None = None) -> list[type[Saga]]:
    """The saga classes of the package a ``--definitions`` option names.

    Args:
        package: the dotted name of a package or module, looked up in ``root``
            (default: the current directory) first, then on ``sys.path``.
        root: see ``package``.

    Returns:
        Its saga classes, as ``find_sagas`` finds them.

    Raises:
        ModuleNotFoundError: the package is not there.
        ImportError: one of its modules cannot be imported, or two of its
            classes share a name and version; the message says which and what
            to do.
    """
    try:
        return find_sagas(package, root)
    except ValueError as exc:
        raise ImportError(f"cannot load the sagas of {package!r}: {exc}") from exc


def qualname(cls: type) -> str:
    """``module.Class`` of a class, as messages show it."""
    return f"{cls.__module__}.{cls.__qualname__}"
