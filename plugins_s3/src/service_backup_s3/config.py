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

import re
from typing import Literal

import attrs

from service_backup.config import NO_SECRET, no_parent_segments, required
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

#: What each upload request (a PutObject, each part) carries for the store to verify. ``""``:
#: ``crc32c`` on AWS (verified and answered back by S3), ``md5`` with ``endpoint_url``
#: (``Content-MD5`` is what every S3-compatible store verifies; some reject newer checksums).
UploadChecksum = Literal["", "md5", "crc32c"]

#: What S3 accepts in ``x-amz-server-side-encryption``; ``""`` sends no header (the bucket's
#: default encryption applies, which on AWS is SSE-S3 for every new bucket).
ServerSideEncryption = Literal["", "AES256", "aws:kms", "aws:kms:dsse"]


#: What botocore itself lets through as ``Bucket`` (``botocore.handlers.VALID_BUCKET`` and
#: ``VALID_S3_ARN``), copied so that validating does not import botocore. Nothing else is
#: ever sent: with ``endpoint_url`` this is the whole check, the store judges the rest.
_SENDABLE = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
_S3_ARN = re.compile(
    r"^arn:(aws).*:(s3|s3-object-lambda):[a-z\-0-9]*:[0-9]{12}:accesspoint[/:]"
    r"[a-zA-Z0-9\-.]{1,63}$"
    r"|^arn:(aws).*:s3-outposts:[a-z\-0-9]+:[0-9]{12}:outpost[/:]"
    r"[a-zA-Z0-9\-]{1,63}[/:]accesspoint[/:][a-zA-Z0-9\-]{1,63}$"
)
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
#: https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (2026). Not
#: refused: ``-s3alias`` (an access point alias, usable wherever a bucket name is for the
#: object requests a backup makes) and ``--x-s3`` (a directory bucket's own suffix).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = {
    "--ol-s3": "Object Lambda access point aliases, which cannot store objects",
    ".mrap": "Multi-Region Access Points, which are addressed by their ARN",
    "--table-s3": "table buckets, which do not store objects",
}
_LEGACY_HINT = (
    " (a bucket created in us-east-1 before March 2018 may have such a name: give "
    "endpoint_url: https://s3.amazonaws.com to use it)"
)


def bucket_name_problems(name: str, compatible: bool) -> list[str]:
    """Every reason ``name`` can never name a bucket; empty when it can.

    ``compatible`` (``endpoint_url`` is set): only what botocore refuses to send, since
    S3-compatible stores have their own rules (Ceph RGW can allow uppercase letters and
    underscores, MinIO cannot); the store judges at the first run. On AWS, the current
    naming rules for general purpose buckets (and directory buckets, which end ``--x-s3``);
    access point ARNs pass as botocore takes them.
    """
    if name.startswith("arn:"):
        return [] if _S3_ARN.match(name) else ["not an S3 access point or Outposts ARN"]
    if compatible:
        problems = []
        if len(name) > 255:
            problems.append(f"{len(name)} characters (at most 255)")
        bad = sorted(set(re.sub(r"[a-zA-Z0-9._-]", "", name)))
        if bad:
            problems.append(
                "characters other than letters, digits, '.', '-' and '_' "
                f"({' '.join(repr(c) for c in bad)})"
            )
        return problems
    problems = []
    legacy = False
    if not 3 <= len(name) <= 63:
        problems.append(f"{len(name)} characters (3 to 63 allowed)")
        legacy = len(name) > 63
    upper = sorted({c for c in name if "A" <= c <= "Z"})
    if upper:
        problems.append(f"uppercase letters ({''.join(upper)})")
        legacy = True
    if "_" in name:
        problems.append("underscores")
        legacy = True
    other = sorted(set(re.sub(r"[a-zA-Z0-9._-]", "", name)))
    if other:
        problems.append(
            "characters other than lowercase letters, digits, '.' and '-' "
            f"({' '.join(repr(c) for c in other)})"
        )
    if name and not (name[0].isascii() and name[0].isalnum()):
        problems.append("does not start with a letter or digit")
    if name and not (name[-1].isascii() and name[-1].isalnum()):
        problems.append("does not end with a letter or digit")
    if ".." in name:
        problems.append("two adjacent periods")
    if _IP_ADDRESS.match(name):
        problems.append("formatted as an IP address")
    problems += [f"starts with the reserved prefix {p}" for p in _RESERVED_PREFIXES if
                 name.startswith(p)]  # fmt: skip
    problems += [
        f"ends with {suffix}, reserved for {what}"
        for suffix, what in _RESERVED_SUFFIXES.items()
        if name.endswith(suffix)
    ]
    if problems and legacy and _SENDABLE.match(name):
        problems[-1] += _LEGACY_HINT
    return problems


def _check_bucket_name(instance: S3Config, attribute: attrs.Attribute, value: str) -> None:
    name = value.strip()
    if not name:
        return  # the core reports a missing required field
    problems = bucket_name_problems(name, bool(instance.endpoint_url.strip()))
    if problems:
        where = "S3-compatible store" if instance.endpoint_url.strip() else "AWS S3"
        raise ValueError(
            f"{attribute.name}: '{name}' can never name a bucket on {where}: " + ", ".join(problems)
        )


def _at_least(name: str, value: float, floor: float, strict: bool) -> None:
    if value < floor or (strict and value == floor):
        raise ValueError(f"{name}: must be {'more than' if strict else 'at least'} {floor}")


@attrs.frozen
class S3Config:
    bucket_name: str = required(validator=_check_bucket_name)
    bucket_path: str = required(validator=no_parent_segments)
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
    upload_checksum: UploadChecksum = ""
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
    def effective_upload_checksum(self) -> str:
        """``md5`` or ``crc32c``: ``upload_checksum``, or what ``""`` stands for here."""
        if self.upload_checksum:
            return self.upload_checksum
        return "md5" if self.endpoint_url.strip() else "crc32c"

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
