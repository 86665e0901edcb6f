"""Google Cloud Storage destination for service-backup (``type: gcs``).

Registration only: the entry point ``gcs`` loads this module and the config class; the
destination (and google-cloud-storage with it) is imported when a run or a check opens one.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import GCSConfig


@hookimpl
def destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            "gcs",
            GCSConfig,
            lazy_factory("service_backup_gcs.destination:GCSDestination"),
            label="GCS",
        )
    ]
