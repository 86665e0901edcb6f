"""Google Cloud Storage destination for service-backup (``type: gcs``).

Registered through the ``service_backup`` entry point ``gcs``, so google-cloud-storage is only
imported when a config names a ``gcs`` destination.
"""

from __future__ import annotations

from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl

from .config import GCSConfig
from .destination import GCSDestination


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("gcs", GCSConfig, GCSDestination, label="GCS")]
