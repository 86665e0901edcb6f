"""Google Cloud Storage destination for service-backup (``type: gcs``).

Registered through the ``service_backup`` entry point ``gcs``, so google-cloud-storage is only
imported when a config names a ``gcs`` destination.
"""

from __future__ import annotations

from typing import Any

from service_backup.destination import Destination, DestinationContext, DestinationType
from service_backup.hookspecs import hookimpl

from .config import GCSConfig

__all__ = ["GCSConfig", "GCSDestination", "destination_types", "open_destination"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("gcs", GCSConfig, open_destination, label="GCS")]


def open_destination(config: GCSConfig, context: DestinationContext) -> Destination:
    """The factory: imports google-cloud-storage only when a run or a check opens a destination.

    ``service-backup validate`` then loads no more than the config class.
    """
    from .destination import GCSDestination

    return GCSDestination(config, context)


def __getattr__(name: str) -> Any:
    """``GCSDestination`` stays importable from the package, loaded on first use."""
    if name == "GCSDestination":
        from .destination import GCSDestination

        return GCSDestination
    raise AttributeError(name)
