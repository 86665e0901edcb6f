"""Azure Blob Storage destination for service-backup (``type: azure``).

Backups go to block blobs in one container of a storage account, authenticated with the
account's shared key, on the public cloud, a sovereign cloud (``endpoint`` as a DNS suffix) or
any account URL (``endpoint`` as a URL: Azurite, private endpoints). Registered through the
``service_backup`` entry point ``azure``, so the core imports the Azure SDK only for configs
that use it.
"""

from __future__ import annotations

from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl

from .config import AzureConfig
from .destination import AzureDestination

__all__ = ["AzureConfig", "AzureDestination", "destination_types"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("azure", AzureConfig, AzureDestination, label="Azure")]
