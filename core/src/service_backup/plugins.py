"""Finding and loading plugins: the built-ins, then the installed ones through entry points.

The core's own hook implementations (the default ``upload``) are plugin modules too, listed in
``BUILTIN_PLUGINS`` and registered by the loader exactly as an entry point's module is (llm's
``DEFAULT_PLUGINS``), so ``PluginRegistry`` only manages and ``service-backup plugins`` shows
them beside the others.

Destination plugins (group ``service_backup``) are imported only when a config names their
type, so start-up stays fast and a broken plugin that a config does not use cannot break a
run. Hook plugins (group ``service_backup.hooks``) are loaded for every run, and by
``validate`` and ``check`` as well, because they may declare top-level config sections: a hook
plugin's module must therefore import nothing heavy (import an SDK inside the hook that uses it).
"""

from __future__ import annotations

import importlib.metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .destination import DestinationType
from .errors import ConfigError

DESTINATION_GROUP = "service_backup"
HOOKS_GROUP = "service_backup.hooks"
BUILTIN_GROUP = "builtin"
#: The core's own hook implementations, by module; each registered under its module name.
BUILTIN_PLUGINS: tuple[str, ...] = ("service_backup.upload",)


def _entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=group), key=lambda ep: ep.name)


def _plugin_entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Both plugin groups from one scan of the installed distributions.

    ``importlib.metadata.entry_points()`` parses every installed distribution's entry points
    (a file per distribution: about 240 in the release's virtualenv) into objects, whatever
    group is wanted. Here each file is read and only one that names a plugin group is parsed:
    a sixth of a run's start-up went to the others. The order is ``entry_points()``'s (the
    distributions in ``sys.path`` order), and where two distributions declare the same name
    the first one wins, as registration (by entry point name) and ``destination_type`` do.
    """
    groups = (DESTINATION_GROUP, HOOKS_GROUP)
    headers = tuple(f"[{group}]" for group in groups)
    found: dict[str, list[importlib.metadata.EntryPoint]] = {group: [] for group in groups}
    for dist in importlib.metadata.distributions():
        text = dist.read_text("entry_points.txt")
        if not text or not any(header in text for header in headers):
            continue
        declared = dist.entry_points
        for group in groups:
            found[group].extend(declared.select(group=group))
    return {group: sorted(eps, key=lambda ep: ep.name) for group, eps in found.items()}


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return ("?", "?")
    return (dist.metadata["Name"], dist.version)


class PluginRegistry:
    """The pluggy manager plus lazy lookup of destination types by name.

    It only manages: a new one is empty. ``load_registry()`` gives the loaded registry every
    command uses (the built-ins, then the hook plugins); an empty one takes plugins one by one
    (``inspect_plugins``, tests).
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._types: dict[str, DestinationType] = {}
        #: The plugin groups' entry points, scanned once on first need (``entry_points``).
        self._found: dict[str, list[importlib.metadata.EntryPoint]] | None = None

    def entry_points(self, group: str) -> list[importlib.metadata.EntryPoint]:
        """The entry points of a plugin group, sorted by name; all groups scanned at once."""
        if self._found is None:
            self._found = _plugin_entry_points()
        return self._found[group]

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (also how tests add an in-process plugin)."""
        if name is not None and self.pm.get_plugin(name) is not None:
            return
        self.pm.register(plugin, name=name)
        self._collect_types(plugin)

    def add_destination_type(self, dtype: DestinationType) -> None:
        self._types[dtype.name] = dtype

    def _collect_types(self, plugin: object) -> None:
        """Ask every registered plugin, through pluggy, for the types it provides."""
        for provided in self.pm.hook.destination_types():
            for dtype in provided or ():
                self._types.setdefault(dtype.name, dtype)

    def config_sections(self) -> dict[str, type]:
        """Top-level config keys declared by hook plugins, with the class that reads each."""
        sections: dict[str, type] = {}
        for declared in self.pm.hook.config_sections():
            for section in declared or ():
                sections.setdefault(section.key, section.config_class)
        return sections

    @staticmethod
    def _load(ep: importlib.metadata.EntryPoint) -> ModuleType | Any:
        try:
            return ep.load()
        except Exception as exc:  # a plugin's import error, told by name
            raise ConfigError(
                f"plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from None

    def destination_type(self, name: str) -> DestinationType:
        """The registered type called ``name``, importing its plugin on first use."""
        if name in self._types:
            return self._types[name]
        for ep in self.entry_points(DESTINATION_GROUP):
            if ep.name == name:
                self.register(self._load(ep), name=f"{DESTINATION_GROUP}:{ep.name}")
                break
        if name not in self._types:
            known = sorted(
                {ep.name for ep in self.entry_points(DESTINATION_GROUP)} | set(self._types)
            )
            raise ConfigError(
                f"unknown destination type '{name}' (installed: {', '.join(known) or 'none'})"
            )
        return self._types[name]


def load_registry(*, hook_plugins: bool = True) -> PluginRegistry:
    """A registry with the built-ins and (``hook_plugins``) every hook plugin registered."""
    registry = PluginRegistry()
    load_plugins(registry, hook_plugins=hook_plugins)
    return registry


def load_plugins(registry: PluginRegistry, *, hook_plugins: bool = True) -> None:
    """Register the built-in plugin modules, then every hook plugin's entry point.

    Destination plugins are not loaded here: ``destination_type`` imports one when a config
    names its type.
    """
    for module in BUILTIN_PLUGINS:
        registry.register(_import_builtin(module), name=module)
    if hook_plugins:
        for ep in registry.entry_points(HOOKS_GROUP):
            registry.register(PluginRegistry._load(ep), name=f"{HOOKS_GROUP}:{ep.name}")


def _import_builtin(module: str) -> ModuleType:
    return importlib.import_module(module)
