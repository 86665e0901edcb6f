"""The ``config:`` mapping of an ``s3`` destination.

The first six keys are the Go release's (``bucket_name``, ``bucket_path``, ``access_key_id``,
``secret_access_key`` required as its job template required them; ``endpoint_url`` and
``region`` optional). The rest is what operators of S3-compatible stores expect: a private CA,
path-style addressing, a storage class and server-side encryption. Both halves of the access
key are ``Secret``: neither ever appears in a log line, an error or a ``repr``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from service_backup.config import required
from service_backup.secret import Secret
from service_backup.stall import (
    DEFAULT_STALL_MIN_BYTES_PER_SECOND,
    DEFAULT_STALL_SECONDS,
    StallRule,
)

#: ``""`` picks for you: ``path`` when ``endpoint_url`` is set (S3-compatible stores rarely
#: have wildcard DNS or certificates for ``<bucket>.<host>``), botocore's ``auto`` for AWS.
AddressingStyle = Literal["", "path", "virtual", "auto"]

#: What S3 accepts in ``x-amz-server-side-encryption``; ``""`` sends no header (the bucket's
#: default encryption applies, which on AWS is SSE-S3 for every new bucket).
ServerSideEncryption = Literal["", "AES256", "aws:kms", "aws:kms:dsse"]


def _at_least(name: str, value: float, floor: float, strict: bool) -> None:
    if value < floor or (strict and value == floor):
        raise ValueError(f"{name}: must be {'more than' if strict else 'at least'} {floor}")


@attrs.frozen
class S3Config:
    bucket_name: str = required()
    bucket_path: str = required()
    access_key_id: Secret = required()  # noqa: RUF009 - attrs field, not a default
    secret_access_key: Secret = required()  # noqa: RUF009
    #: An S3-compatible store (Ceph, MinIO, RiakCS ...); empty means AWS.
    endpoint_url: str = ""
    #: Signing region and, for a new bucket, its location. Empty means us-east-1.
    region: str = ""
    #: PEM text of CA certificate(s) trusted in addition to the system trust store.
    ca_cert: str = ""
    addressing_style: AddressingStyle = ""
    #: e.g. ``STANDARD_IA``; passed through (S3-compatible stores define their own classes).
    storage_class: str = ""
    server_side_encryption: ServerSideEncryption = ""
    #: KMS key for ``server_side_encryption: aws:kms``; empty uses the account's default key.
    sse_kms_key_id: str = ""
    #: A transfer moving fewer than ``stall_min_bytes_per_second`` for this long is aborted.
    stall_timeout_seconds: float = attrs.field(
        default=DEFAULT_STALL_SECONDS, validator=lambda _, a, v: _at_least(a.name, v, 0, True)
    )
    stall_min_bytes_per_second: float = attrs.field(
        default=DEFAULT_STALL_MIN_BYTES_PER_SECOND,
        validator=lambda _, a, v: _at_least(a.name, v, 0, False),
    )

    @property
    def stall_rule(self) -> StallRule:
        return StallRule(self.stall_timeout_seconds, self.stall_min_bytes_per_second)

    @property
    def effective_region(self) -> str:
        return self.region.strip() or "us-east-1"

    @property
    def effective_addressing_style(self) -> str:
        if self.addressing_style:
            return self.addressing_style
        return "path" if self.endpoint_url.strip() else "auto"

    @property
    def base_path(self) -> str:
        """``bucket_path`` without leading/trailing slashes (keys are ``<base_path>/<key>``)."""
        return self.bucket_path.strip().strip("/")
