"""The S3 promotion itself (``rename`` with ``promote_by_copy``) against moto.

The run-level behaviour (a failed re-run keeps the earlier run, a good one replaces it) is in
``tests/manifests/test_promote_by_copy.py``; here: what the copies carry over, the part layout
that lets their ETags be checked, and what is left behind.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from service_backup.errors import ObjectNotFound
from service_backup.layout import MiB
from service_backup.source import Source
from service_backup_s3.destination import MULTIPART_THRESHOLD

from .test_faults import open_destination

STAGE = ".service-backup-staging/guid"
SIZES = {"small.bin": 1000, "empty.bin": 0, "big.bin": MULTIPART_THRESHOLD + 1 * MiB + 3}


def test_copies_keep_storage_class_encryption_and_etag(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    raw = {
        **s3_config,
        "promote_by_copy": True,
        "storage_class": "STANDARD_IA",
        "server_side_encryption": "AES256",
    }
    data = {name: os.urandom(size) for name, size in SIZES.items()}
    with open_destination(raw) as dest:
        assert dest.can_rename
        dest.ensure_location()
        for name, body in data.items():
            dest.write(f"{STAGE}/{name}", Source.from_bytes(body, name))
        full = {name: dest.layout.full(f"{STAGE}/{name}") for name in data}
        staged_etags = {
            name: s3_admin.head_object(Bucket=dest.bucket, Key=key)["ETag"]
            for name, key in full.items()
        }
        dest.rename([(f"{STAGE}/{n}", f"2026/12/01/{n}") for n in data])
        left = [o.key for o in dest.list(".service-backup-staging/")]
        assert left == [], f"staged objects left after the promotion: {left}"
        for name, body in data.items():
            key = dest.layout.full(f"2026/12/01/{name}")
            head = s3_admin.head_object(Bucket=dest.bucket, Key=key)
            assert head.get("StorageClass") == "STANDARD_IA", f"{name}: storage class lost"
            assert head.get("ServerSideEncryption") == "AES256", f"{name}: encryption lost"
            assert head["ETag"] == staged_etags[name], (
                f"{name}: the copy's ETag differs from the staged object's (part layout changed?)"
            )
            got = s3_admin.get_object(Bucket=dest.bucket, Key=key)["Body"].read()
            assert got == body, f"{name}: the promoted bytes differ"
        assert staged_etags["big.bin"].strip('"').endswith("-2"), "big.bin was not multipart"


def test_missing_staged_object_is_object_not_found_and_nothing_is_promoted(
    s3_config: dict[str, Any],
) -> None:
    with open_destination({**s3_config, "promote_by_copy": True}) as dest:
        dest.ensure_location()
        dest.write(f"{STAGE}/a", Source.from_bytes(b"a", "a"))
        with pytest.raises(ObjectNotFound, match="missing"):
            dest.rename([(f"{STAGE}/a", "2026/12/01/a"), (f"{STAGE}/missing", "2026/12/01/m")])
        assert [o.key for o in dest.list("2026/")] == [], "promoted although a source is missing"


def test_off_by_default(s3_config: dict[str, Any]) -> None:
    with open_destination(s3_config) as dest:
        assert dest.can_rename is False
