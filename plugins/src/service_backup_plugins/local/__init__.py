"""The ``local`` destination: a folder on this VM or an NFS mount. Registration only."""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import LocalConfig

__all__ = ["LocalConfig", "destination_types"]


@hookimpl
def destination_types() -> list[DestinationType]:
    factory = lazy_factory("service_backup_plugins.local.destination:LocalDestination")
    return [DestinationType("local", LocalConfig, factory, label="local")]
