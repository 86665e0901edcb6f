"""Azure Blob Storage destination for service-backup (``type: azure``): registration only.

The SDK is imported by ``destination.py`` when a run or a check opens a destination, so
``service-backup validate`` loads no more than the config class.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import AzureConfig


@hookimpl
def destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            "azure",
            AzureConfig,
            lazy_factory("service_backup_azure.destination:AzureDestination"),
            label="Azure",
        )
    ]
