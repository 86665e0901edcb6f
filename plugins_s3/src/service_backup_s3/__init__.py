"""The ``s3`` destination for service-backup: AWS S3 and S3-compatible stores (boto3).

Registered through the entry point ``s3 = "service_backup_s3"`` in the ``service_backup``
group, so boto3 is imported only when a config has an ``s3`` destination.
"""

from __future__ import annotations

from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl

from .config import S3Config
from .destination import S3Destination

__all__ = ["S3Config", "S3Destination", "destination_types"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("s3", S3Config, S3Destination, label="S3")]
