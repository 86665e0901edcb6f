"""The ``s3`` destination for service-backup: AWS S3 and S3-compatible stores (boto3).

Registration only. The entry point ``s3 = "service_backup_s3"`` in the ``service_backup``
group loads this module; the factory imports ``destination`` (and so boto3) only when a run
or a check opens an ``s3`` destination, so ``validate`` loads no more than the config class.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import S3Config


@hookimpl
def destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            "s3", S3Config, lazy_factory("service_backup_s3.destination:S3Destination"), label="S3"
        )
    ]
