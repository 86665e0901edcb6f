"""The ``scp`` destination plugin: backups to an SSH server over SFTP (paramiko).

Registration only. The entry point ``scp = "service_backup_scp"`` in the ``service_backup``
group loads this module; paramiko is imported by ``destination.py`` only when a run or a check
opens an ``scp`` destination, so ``validate`` loads no more than the config class. The plugin
also brings an ``upload`` hook that batches small files for ``scp`` destinations
(``upload.py``); every other destination keeps the core's default.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import ScpConfig
from .upload import upload

__all__ = ["ScpConfig", "destination_types", "upload"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            "scp", ScpConfig, lazy_factory("service_backup_scp.destination:ScpDestination"),
            label="SCP",
        )
    ]  # fmt: skip
