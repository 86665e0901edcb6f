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

#: ``""`` picks for you: ``path`` when ``endpoint_url`` is set (S3-compatible stores rarely
#: have wildcard DNS or certificates for ``<bucket>.<host>``), botocore's ``auto`` for AWS.
AddressingStyle = Literal["", "path", "virtual", "auto"]

#: What S3 accepts in ``x-amz-server-side-encryption``; ``""`` sends no header (the bucket's
#: default encryption applies, which on AWS is SSE-S3 for every new bucket).
ServerSideEncryption = Literal["", "AES256", "aws:kms", "aws:kms:dsse"]


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
