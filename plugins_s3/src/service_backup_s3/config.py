"""The ``config:`` mapping of an ``s3`` destination.

The first six keys are the Go release's (``bucket_name``, ``bucket_path`` required;
``access_key_id``, ``secret_access_key``, ``endpoint_url``, ``region``). The access key is now
optional, as a pair: without it boto3's default credential chain applies (environment, shared
files, web identity, ECS/EC2 instance metadata), which is what an instance profile needs, and
``role_arn`` assumes a role on top of either. The rest is what operators of S3-compatible stores
expect: a private CA, path-style addressing, storage class, server-side encryption, and
checksum settings old stores accept. Both halves of the access key are ``Secret``: neither
ever appears in a log line, an error or a ``repr``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from service_backup.config import NO_SECRET, required
from service_backup.secret import Secret
from service_backup.stall import (
    DEFAULT_STALL_MIN_BYTES_PER_SECOND,
    DEFAULT_STALL_SECONDS,
    StallRule,
)

#: ``""`` picks for you: ``path`` when ``endpoint_url`` is set (S3-compatible stores rarely
#: have wildcard DNS or certificates for ``<bucket>.<host>``), botocore's ``auto`` for AWS.
AddressingStyle = Literal["", "path", "virtual", "auto"]

#: botocore's ``request_checksum_calculation`` / ``response_checksum_validation``. ``""``:
#: ``when_required`` with ``endpoint_url`` (stores that reject CRC trailers and aws-chunked
#: bodies), botocore's own default (``when_supported``) on AWS.
ChecksumSetting = Literal["", "when_supported", "when_required"]

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
    #: Both or neither; neither: boto3's default credential chain.
    access_key_id: Secret = NO_SECRET
    secret_access_key: Secret = NO_SECRET
    #: A role to assume (STS AssumeRole, refreshed before expiry) with the base credentials.
    role_arn: str = ""
    external_id: str = ""
    role_session_name: str = ""
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
    request_checksum_calculation: ChecksumSetting = ""
    response_checksum_validation: ChecksumSetting = ""
    #: Stage a same-day re-run and promote it by server-side copy once complete, so that a
    #: failed re-run leaves the day's earlier complete run intact (costs a copy of every
    #: byte on the server, and s3:GetObject/s3:DeleteObject; see docs/s3.md).
    promote_by_copy: bool = False

    def __attrs_post_init__(self) -> None:
        key_id = bool(self.access_key_id.reveal().strip())
        secret = bool(self.secret_access_key.reveal().strip())
        if key_id and not secret:
            raise ValueError("secret_access_key: required with access_key_id")
        if secret and not key_id:
            raise ValueError("access_key_id: required with secret_access_key")
        if (self.external_id.strip() or self.role_session_name.strip()) and not (
            self.role_arn.strip()
        ):
            name = "external_id" if self.external_id.strip() else "role_session_name"
            raise ValueError(f"{name}: only used with role_arn, which is empty")

    @property
    def static_keys(self) -> bool:
        return bool(self.access_key_id.reveal().strip())

    def checksum_setting(self, value: str) -> str | None:
        """What botocore gets for a checksum key: ``None`` leaves botocore's default."""
        if value:
            return value
        return "when_required" if self.endpoint_url.strip() else None

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
