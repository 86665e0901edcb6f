"""The ``scp`` destination plugin: backups to an SSH server over SFTP (paramiko).

Registered through the entry point ``scp = "service_backup_scp"`` in the ``service_backup``
group, so paramiko is imported only when a config names an ``scp`` destination. Besides the
destination type it provides an ``upload`` hook that batches small files for ``scp``
destinations (see ``upload.py``); every other destination keeps the core's default.
"""

from __future__ import annotations

from typing import Any

from service_backup.destination import Destination, DestinationContext, DestinationType
from service_backup.hookspecs import hookimpl

from .config import ScpConfig
from .upload import upload

__all__ = ["ScpConfig", "ScpDestination", "destination_types", "open_destination", "upload"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("scp", ScpConfig, open_destination, label="SCP")]


def open_destination(config: ScpConfig, context: DestinationContext) -> Destination:
    """The factory: imports paramiko only when a run or a check opens a destination.

    ``service-backup validate`` then loads no more than the config class.
    """
    from .destination import ScpDestination

    return ScpDestination(config, context)


def __getattr__(name: str) -> Any:
    """``ScpDestination`` stays importable from the package, loaded on first use."""
    if name == "ScpDestination":
        from .destination import ScpDestination

        return ScpDestination
    raise AttributeError(name)
