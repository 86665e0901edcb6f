"""The ``s3`` destination for service-backup: AWS S3 and S3-compatible stores (boto3).

Registered through the entry point ``s3 = "service_backup_s3"`` in the ``service_backup``
group, so boto3 is imported only when a config has an ``s3`` destination.
"""

from __future__ import annotations

from typing import Any

from service_backup.destination import Destination, DestinationContext, DestinationType
from service_backup.hookspecs import hookimpl

from .config import S3Config

__all__ = ["S3Config", "S3Destination", "destination_types", "open_destination"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("s3", S3Config, open_destination, label="S3")]


def open_destination(config: S3Config, context: DestinationContext) -> Destination:
    """The factory: imports boto3 only when a run or a check opens a destination.

    ``service-backup validate`` then loads no more than the config class.
    """
    from .destination import S3Destination

    return S3Destination(config, context)


def __getattr__(name: str) -> Any:
    """``S3Destination`` stays importable from the package, loaded on first use."""
    if name == "S3Destination":
        from .destination import S3Destination

        return S3Destination
    raise AttributeError(name)
