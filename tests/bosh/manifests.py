"""Fixture manifests: the ``properties`` of an instance group that colocates the job, one per
destination type as the seed documents them, with real (throwaway) keys where plugins parse
them at validation time."""

from __future__ import annotations

import base64
import copy
import functools
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SOURCE = "/var/vcap/store/redis-backups"
CRON = "0 */6 * * *"
S3_SECRET = "s3-secret-9f8e7d6c5b4a"


@functools.cache
def gcs_service_account_json() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "example-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": "backup@example-project.iam.gserviceaccount.com",
            "client_id": "123456789",
            "token_uri": "https://oauth2.googleapis.com/token",
        },
        indent=2,
    )


@functools.cache
def ssh_key_pair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def destination(kind: str, name: str = "") -> dict[str, Any]:
    """One destination entry with every field the seed shows for ``kind``."""
    configs: dict[str, dict[str, Any]] = {
        "s3": {
            "bucket_name": "redis-backups",
            "bucket_path": "prod/redis",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": S3_SECRET,
            "endpoint_url": "",
            "region": "",
        },
        "azure": {
            "storage_account": "examplestorage",
            "storage_access_key": base64.b64encode(b"example-storage-key-0123456789").decode(),
            "container": "redis-backups",
            "path": "prod/redis",
            "endpoint": "core.windows.net",
        },
        "gcs": {
            "service_account_json": gcs_service_account_json(),
            "project_id": "example-project",
            "bucket_name": "redis-backups-gcs",
        },
        "scp": {
            "user": "backup",
            "server": "backups.example.internal",
            "destination": "/srv/backups/redis",
            "fingerprint": f"backups.example.internal {ssh_key_pair()[1]}",
            "key": ssh_key_pair()[0],
            "port": 22,
        },
        "local": {"path": "/var/vcap/store/backups"},
    }
    entry: dict[str, Any] = {"type": kind, "config": copy.deepcopy(configs[kind])}
    if name:
        entry["name"] = name
    return entry


#: The fields the seed marks as required, per destination type, less those that became
#: optional with other kinds of credentials. s3's access key halves are required only together
#: (a rule of the config class, checked by pre-start; the others are checked on the director).
REQUIRED_FIELDS = {
    "s3": ["bucket_name", "bucket_path", "access_key_id", "secret_access_key"],
    "azure": ["storage_account", "container", "path"],  # the key is optional (issue 18)
    # service_account_json is optional: without it, Application Default Credentials.
    "gcs": ["project_id", "bucket_name"],
    "scp": ["user", "server", "destination", "key"],
    "local": ["path"],
}
TYPES = list(REQUIRED_FIELDS)


def service_backup(*destinations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``properties`` with a ``service-backup`` section."""
    section: dict[str, Any] = {
        "destinations": list(destinations),
        "source_folder": SOURCE,
        "cron_schedule": CRON,
    }
    section.update(extra)
    return {"properties": {"service-backup": section}}


def full_alerts(**config_extra: Any) -> dict[str, Any]:
    alerts: dict[str, Any] = {
        "product_name": "Redis for PCF",
        "config": {
            "cloud_controller": {
                "url": "https://api.sys.example.com",
                "user": "backup-alerts",
                "password": "cc-password-1a2b",
            },
            "notifications": {
                "service_url": "https://notifications.sys.example.com",
                "cf_org": "system",
                "cf_space": "redis-alerts",
                "reply_to": "ops@example.com",
                "client_id": "backup-notifications",
                "client_secret": "client-secret-3c4d",
            },
        },
    }
    alerts["config"].update(config_extra)
    return alerts


def seed_manifest() -> dict[str, Any]:
    """The seed's example: every destination type, named, with alerts and every option."""
    return service_backup(
        destination("s3", "primary-s3"),
        destination("azure", "dr-azure"),
        destination("gcs"),
        destination("scp", "onprem"),
        destination("local", "nfs"),
        source_executable="/var/vcap/jobs/redis-backups/bin/snapshot --wait",
        cleanup_executable="/var/vcap/jobs/redis-backups/bin/cleanup",
        missing_properties_message="Provide these missing fields in your manifest.",
        exit_if_in_progress=True,
        service_identifier_executable="/var/vcap/jobs/redis-backups/bin/identify",
        add_deployment_name_to_backup_path=True,
        backup_user="vcap",
        alerts=full_alerts(timeout_seconds=30, skip_ssl_validation=True),
    )
