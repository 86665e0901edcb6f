"""service-backup-webdav: back up to any WebDAV server (``type: webdav``).

The worked example of a third-party destination plugin. Everything service-backup needs is
this hook implementation; the entry point ``webdav = "service_backup_webdav"`` in group
``service_backup`` (see ``pyproject.toml``) tells the core to import this module when, and
only when, a config names ``type: webdav``.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import WebDAVConfig

__all__ = ["WebDAVConfig", "destination_types"]


@hookimpl
def destination_types() -> list[DestinationType]:
    factory = lazy_factory("service_backup_webdav.destination:WebDAVDestination")
    return [DestinationType("webdav", WebDAVConfig, factory, label="WebDAV")]
