"""Plugin registries: ``METHODS``, ``ESTIMATORS``, ``DATASETS``, ``BACKBONES``, ``TABLES``.

A plugin registers itself with a decorator::

    from ssl_bench.core.registry import METHODS

    @METHODS.register("my-method")
    class MyMethod(Method): ...

and is found with ``METHODS.get("my-method")`` (case-insensitive, ``_`` and ``-`` are interchangeable).

Discovery happens once, lazily, on the first look-up, in a fixed order:

1. built-ins: the modules listed in :data:`BUILTIN_MODULES` (an explicit list, tested to be complete);
2. installed distributions' entry points in the groups ``ssl_bench.methods``, ``ssl_bench.estimators``,
   ``ssl_bench.datasets``, ``ssl_bench.backbones``;
3. plugin files passed as ``--plugin path.py`` (or listed in ``$SSL_BENCH_PLUGINS``, ``os.pathsep``-separated),
   loaded with :func:`load_plugin_file`.

A duplicate name raises, naming both sources; an unknown name raises with close matches and a hint.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from ssl_bench.core.errors import PluginError, RegistryError

T = TypeVar("T")

#: Built-in plugin modules, imported on first registry look-up (explicit, no folder scanning).
BUILTIN_MODULES: tuple[str, ...] = (
    "ssl_bench.nets.unet",
    "ssl_bench.nets.ssl4mis_unet",
    "ssl_bench.nets.smp_backbones",
    "ssl_bench.nets.vnet",
    "ssl_bench.nets.resnet3d",
    "ssl_bench.methods.supervised",
    "ssl_bench.methods.estimators",
    "ssl_bench.methods.mean_teacher",
    "ssl_bench.methods.ua_mt",
    "ssl_bench.methods.pi_model",
    "ssl_bench.methods.temporal_ensembling",
    "ssl_bench.methods.pseudo_label",
    "ssl_bench.methods.vat",
    "ssl_bench.methods.coranet",
    "ssl_bench.methods.cps",
    "ssl_bench.methods.mc_net",
    "ssl_bench.methods.urpc",
    "ssl_bench.methods.ict",
    "ssl_bench.methods.entropy_min",
    "ssl_bench.methods.bcp",
    "ssl_bench.methods.abd",
    "ssl_bench.methods.fixmatch",
    "ssl_bench.methods.unimatch",
    "ssl_bench.methods.estimator_reference",
    "ssl_bench.datasets.phantom",
    "ssl_bench.datasets.phantom3d",
    "ssl_bench.datasets.acdc",
    "ssl_bench.reporting.tables",
    "ssl_bench.datasets.common",
    "ssl_bench.datasets.pancreas",
    "ssl_bench.datasets.york",
)

ENTRY_POINT_GROUPS: dict[str, str] = {
    "method": "ssl_bench.methods",
    "estimator": "ssl_bench.estimators",
    "dataset": "ssl_bench.datasets",
    "backbone": "ssl_bench.backbones",
}


def normalize_name(name: str) -> str:
    """Canonical registry key: lower case, ``_`` and spaces become ``-`` (``Mean_Teacher`` -> ``mean-teacher``)."""
    return re.sub(r"[\s_]+", "-", name.strip()).lower()


def name_matches(name: str, pattern: str | None) -> bool:
    """Does registry name ``name`` match ``pattern``? None matches everything; a pattern with glob characters
    (``*?[``) is an fnmatch pattern on the whole name, any other a substring of it (``"mean"`` finds
    ``mean-teacher``). Case, ``_`` and spaces are normalised as in look-ups."""
    if pattern is None:
        return True
    key = normalize_name(pattern)
    if any(c in key for c in "*?["):
        import fnmatch

        return fnmatch.fnmatchcase(name, key)
    return key in name


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and where it came from."""

    name: str
    obj: T
    source: str
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _source_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    plugin = _PLUGIN_MODULES.get(module)
    if plugin is not None:
        return f"plugin file {plugin}"
    return f"module {module}"


def _summary_of(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """A name -> object table of one kind of plugin (see module docstring)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, override: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (kebab-case). ``meta`` is free-form (e.g. ``dims=(2, 3)``)."""
        key = normalize_name(name)
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", key):
            raise RegistryError(f"invalid {self.kind} name {name!r}: use kebab-case letters, digits, '-' and '.'")

        def decorator(obj: T) -> T:
            self.add(key, obj, override=override, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, override: bool = False, **meta: Any) -> None:
        """Register ``obj`` without a decorator (for objects that are not classes or functions)."""
        key = normalize_name(name)
        source = _source_of(obj)
        if key in self._entries and not override:
            old = self._entries[key]
            if old.obj is obj:
                return  # the same object imported twice (e.g. module re-import): harmless
            raise RegistryError(
                f"duplicate {self.kind} name {key!r}: already registered by {old.source}, "
                f"registered again by {source} (rename one, or pass override=True)"
            )
        self._entries[key] = Entry(key, obj, source, _summary_of(obj), dict(meta))

    def _ensure(self) -> None:
        discover()

    def entry(self, name: str) -> Entry[T]:
        self._ensure()
        key = normalize_name(name)
        if key in self._entries:
            return self._entries[key]
        close = difflib.get_close_matches(key, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{hint} See `ssl-bench list {self.plural}`; "
            f"a {self.kind} of your own is loaded with `--plugin FILE.py`."
        )

    def get(self, name: str) -> T:
        """The registered object for ``name`` (raises :class:`RegistryError` with suggestions if unknown)."""
        return self.entry(name).obj

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; ``pattern`` is a glob (``"coranet*"``) or a substring (``"mean"``), see
        :func:`name_matches`."""
        self._ensure()
        return [n for n in sorted(self._entries) if name_matches(n, pattern)]

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return isinstance(name, str) and normalize_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)


METHODS: Registry[Any] = Registry("method")
ESTIMATORS: Registry[Any] = Registry("estimator")
DATASETS: Registry[Any] = Registry("dataset")
BACKBONES: Registry[Any] = Registry("backbone")
TABLES: Registry[Any] = Registry("table")

REGISTRIES: dict[str, Registry[Any]] = {
    "methods": METHODS,
    "estimators": ESTIMATORS,
    "datasets": DATASETS,
    "backbones": BACKBONES,
    "tables": TABLES,
}

_DISCOVERED = False
_PLUGIN_MODULES: dict[str, str] = {}  # module name -> plugin file path
_PLUGIN_FILES: dict[str, str] = {}  # resolved path -> sha256
_PLUGIN_SOURCES: dict[str, tuple[str, bytes]] = {}  # sha256 -> (file name, source bytes) as loaded


def discover() -> None:
    """Import built-ins, then entry points, then ``$SSL_BENCH_PLUGINS`` files (idempotent)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for group in ENTRY_POINT_GROUPS.values():
            for ep in entry_points(group=group):
                try:
                    ep.load()
                except RegistryError:
                    raise
                except Exception as exc:  # noqa: BLE001 - re-raised with context
                    dist = getattr(getattr(ep, "dist", None), "name", "?")
                    raise PluginError(
                        f"entry point {ep.name!r} (group {group}, distribution {dist}) failed to load: {exc}"
                    ) from exc
        for path in filter(None, os.environ.get("SSL_BENCH_PLUGINS", "").split(os.pathsep)):
            load_plugin_file(path)
    except BaseException:
        _DISCOVERED = False
        raise


def load_plugin_file(path: str | Path) -> str:
    """Import a ``--plugin`` file (which registers things as it is imported); returns its sha256.

    Loading the same file twice is a no-op. Errors (missing file, syntax error, exception at import,
    duplicate names) raise :class:`PluginError` / :class:`RegistryError` naming the file.
    """
    discover()  # built-ins first, so a plugin reusing a built-in name is reported as a duplicate
    p = Path(path).expanduser()
    if not p.is_file():
        raise PluginError(f"plugin file not found: {path}")
    resolved = str(p.resolve())
    if resolved in _PLUGIN_FILES:
        return _PLUGIN_FILES[resolved]
    source = p.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest in _PLUGIN_SOURCES:  # the same code under another path (e.g. a run folder's copy): loaded
        _PLUGIN_FILES[resolved] = digest
        return digest
    module_name = f"ssl_bench_plugin_{p.stem}_{digest[:12]}"
    _PLUGIN_MODULES[module_name] = resolved
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except RegistryError as exc:
        sys.modules.pop(module_name, None)
        raise RegistryError(f"plugin {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any import error of user code
        sys.modules.pop(module_name, None)
        raise PluginError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
    _PLUGIN_FILES[resolved] = digest
    _PLUGIN_SOURCES[digest] = (p.name, source)
    return digest


def plugin_sources() -> dict[str, tuple[str, bytes]]:
    """Code of every plugin loaded so far, as it was when loaded: sha256 -> (file name, bytes)."""
    return dict(_PLUGIN_SOURCES)
