"""``service-backup plugins``: every installed plugin, imported on its own, and what it provides.

Apart from ``plugins``, so that the commands that only load plugins do not build these classes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

import attrs

from .errors import ConfigError
from .plugins import (
    BUILTIN_GROUP,
    BUILTIN_PLUGINS,
    DESTINATION_GROUP,
    HOOKS_GROUP,
    PluginRegistry,
    _dist_of,
    _entry_points,
    _import_builtin,
)


@attrs.frozen
class PluginInfo:
    """One installed plugin, for ``service-backup plugins``."""

    group: str
    name: str
    module: str
    distribution: str
    version: str


def _core_version() -> str:
    try:
        return importlib.metadata.version("service-backup")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def installed_plugins(groups: Iterable[str] = (DESTINATION_GROUP, HOOKS_GROUP)) -> list[PluginInfo]:
    """The built-ins, then each entry point of ``groups`` (sorted by name within a group)."""
    infos = [
        PluginInfo(
            BUILTIN_GROUP, module.rpartition(".")[2], module, "service-backup", _core_version()
        )
        for module in BUILTIN_PLUGINS
    ]
    for group in groups:
        for ep in _entry_points(group):
            dist, version = _dist_of(ep)
            infos.append(PluginInfo(group, ep.name, ep.value, dist, version))
    return infos


@attrs.frozen
class PluginReport:
    """One installed plugin after importing it: what it provides, or why it is broken."""

    info: PluginInfo
    types: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    problem: str | None = None


def inspect_plugins() -> list[PluginReport]:
    """Import every installed plugin on its own and report it (``service-backup plugins``).

    A destination plugin is broken when it cannot be imported, or when it does not register
    a type named like its entry point (the config's ``type:`` would never find it).
    """
    reports = []
    for info in installed_plugins():
        registry = PluginRegistry()
        try:
            if info.group == BUILTIN_GROUP:
                plugin: object = _import_builtin(info.module)
                registry.register(plugin, name=info.module)
            else:
                ep = next(e for e in _entry_points(info.group) if e.name == info.name)
                plugin = PluginRegistry._load(ep)
                registry.register(plugin, name=f"{info.group}:{info.name}")
        except Exception as exc:
            text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            reports.append(PluginReport(info, problem=text))
            continue
        hooks = tuple(sorted(caller.name for caller in registry.pm.get_hookcallers(plugin) or ()))
        types = tuple(sorted(registry._types))
        problem = None
        if info.group == DESTINATION_GROUP and info.name not in types:
            problem = (
                f"entry point '{info.name}' registers no destination type of that name "
                f"(registered: {', '.join(types) or 'none'})"
            )
        reports.append(PluginReport(info, types, hooks, problem))
    return reports
