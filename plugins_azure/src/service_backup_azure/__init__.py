"""Azure Blob Storage destination for service-backup (``type: azure``).

Backups go to block blobs in one container of a storage account, authenticated with the
account's shared key, on the public cloud, a sovereign cloud (``endpoint`` as a DNS suffix) or
any account URL (``endpoint`` as a URL: Azurite, private endpoints). Registered through the
``service_backup`` entry point ``azure``, so the core imports the Azure SDK only for configs
that use it.
"""

from __future__ import annotations

from typing import Any

from service_backup.destination import Destination, DestinationContext, DestinationType
from service_backup.hookspecs import hookimpl

from .config import AzureConfig

__all__ = ["AzureConfig", "AzureDestination", "destination_types", "open_destination"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("azure", AzureConfig, open_destination, label="Azure")]


def open_destination(config: AzureConfig, context: DestinationContext) -> Destination:
    """The factory: imports the Azure SDK only when a run or a check opens a destination.

    ``service-backup validate`` then loads no more than the config class.
    """
    from .destination import AzureDestination

    return AzureDestination(config, context)


def __getattr__(name: str) -> Any:
    """``AzureDestination`` stays importable from the package, loaded on first use."""
    if name == "AzureDestination":
        from .destination import AzureDestination

        return AzureDestination
    raise AttributeError(name)
