"""The ``scp`` destination plugin: backups to an SSH server over SFTP (paramiko).

Registered through the entry point ``scp = "service_backup_scp"`` in the ``service_backup``
group, so paramiko is imported only when a config names an ``scp`` destination. Besides the
destination type it provides an ``upload`` hook that batches small files for ``scp``
destinations (see ``upload.py``); every other destination keeps the core's default.
"""

from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl

from .config import ScpConfig
from .destination import ScpDestination
from .upload import upload

__all__ = ["ScpConfig", "ScpDestination", "destination_types", "upload"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("scp", ScpConfig, ScpDestination, label="SCP")]
