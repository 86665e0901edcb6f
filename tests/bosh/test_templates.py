"""config/backup.yml rendered from fixture manifests, then checked by the daemon itself
(`service-backup validate`): valid manifests pass, invalid ones fail with exit status 2 and a
message naming the field path, followed by missing_properties_message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from . import manifests as m
from .job import DEPLOYMENT, render_job, validate

CUSTOM_MESSAGE = "Ask the Redis team to fix the manifest."


def render_config(manifest: dict[str, Any], tmp_path: Path) -> Path:
    return render_job(manifest, tmp_path / "job") / "config" / "backup.yml"


def rendered(manifest: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load(render_config(manifest, tmp_path).read_text())


VALID = {
    **{f"{kind}": m.service_backup(m.destination(kind)) for kind in m.TYPES},
    "seed-example-all-types": m.seed_manifest(),
    "two-s3-regions": m.service_backup(
        {**m.destination("s3", "us"), "config": {**m.destination("s3")["config"], "region": ""}},
        {
            **m.destination("s3", "eu"),
            "config": {**m.destination("s3")["config"], "region": "eu-central-1"},
        },
    ),
    "alerts": m.service_backup(m.destination("local"), alerts=m.full_alerts()),
    "alerts-options-under-notifications": m.service_backup(
        m.destination("local"),
        alerts={
            **m.full_alerts(),
            "config": {
                **m.full_alerts()["config"],
                "notifications": {
                    **m.full_alerts()["config"]["notifications"],
                    "timeout_seconds": 5,
                    "skip_ssl_validation": True,
                },
            },
        },
    ),
    "no-service-backup-section": {"properties": {"redis": {"port": 6379}}},
    "no-destinations": {"properties": {"service-backup": {"destinations": []}}},
    "retention": m.service_backup(
        {
            **m.destination("s3"),
            "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12},
        }
    ),
    "six-field-cron-and-descriptor": m.service_backup(
        m.destination("local"), cron_schedule="@every 1h30m"
    ),
}


@pytest.mark.parametrize("manifest", VALID.values(), ids=VALID.keys())
def test_valid_manifest_renders_a_config_the_daemon_accepts(
    ruby: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    config = render_config(manifest, tmp_path)
    result = validate(config)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    destinations = manifest["properties"].get("service-backup", {}).get("destinations", [])
    for index, dest in enumerate(destinations):
        assert (dest.get("name") or f"{dest['type']}[{index}]") in result.stdout
        assert f"({dest['type']})" in result.stdout
    if not destinations:
        assert "destinations: none" in result.stdout


def test_rendered_config_is_the_property_plus_deployment_name(ruby: str, tmp_path: Path) -> None:
    manifest = m.seed_manifest()
    config = rendered(manifest, tmp_path)
    section = manifest["properties"]["service-backup"]
    assert config.pop("deployment_name") == DEPLOYMENT
    assert config == section  # every key, multi-line keys and JSON documents byte for byte


def test_retention_renders_inside_its_destination_unchanged(ruby: str, tmp_path: Path) -> None:
    manifest = VALID["retention"]
    config = rendered(manifest, tmp_path)
    expected = manifest["properties"]["service-backup"]["destinations"][0]["retention"]
    assert config["destinations"][0]["retention"] == expected


def test_defaults_come_from_the_spec(ruby: str, tmp_path: Path) -> None:
    config = rendered(m.service_backup(m.destination("local")), tmp_path)
    assert config["backup_user"] == "vcap"
    assert config["missing_properties_message"] == "Provide these missing fields in your manifest."
    assert config["exit_if_in_progress"] is False
    assert config["add_deployment_name_to_backup_path"] is False
    assert config["source_executable"] == config["cleanup_executable"] == ""
    assert "alerts" not in config  # the two defaulted alert fields alone make no alerts section


def test_removing_the_section_disables_backups(ruby: str, tmp_path: Path) -> None:
    config = rendered({"properties": {}}, tmp_path)
    assert config["destinations"] == []
    assert config["deployment_name"] == DEPLOYMENT
    assert "source_folder" not in config and "cron_schedule" not in config


def test_alerts_render_with_their_defaults(ruby: str, tmp_path: Path) -> None:
    config = rendered(m.service_backup(m.destination("local"), alerts=m.full_alerts()), tmp_path)
    assert config["alerts"]["product_name"] == "Redis for PCF"
    assert config["alerts"]["config"]["timeout_seconds"] == 60
    assert config["alerts"]["config"]["skip_ssl_validation"] is False
    assert config["alerts"]["config"]["notifications"]["cf_space"] == "redis-alerts"


def without(manifest: dict[str, Any], index: int, field: str, empty: bool) -> dict[str, Any]:
    config = manifest["properties"]["service-backup"]["destinations"][index]["config"]
    if empty:
        config[field] = ""
    else:
        del config[field]
    return manifest


MISSING_FIELD_CASES = [
    pytest.param(kind, field, empty, id=f"{kind}-{field}-{'empty' if empty else 'absent'}")
    for kind, fields in m.REQUIRED_FIELDS.items()
    for field in fields
    for empty in (False, True)
]


@pytest.mark.parametrize(("kind", "field", "empty"), MISSING_FIELD_CASES)
def test_missing_destination_field_fails_with_its_path(
    ruby: str, kind: str, field: str, empty: bool, tmp_path: Path
) -> None:
    # The broken destination is the second one, so the index in the path is checked too.
    manifest = m.service_backup(
        m.destination("local", "first"),
        m.destination(kind, "second"),
        missing_properties_message=CUSTOM_MESSAGE,
    )
    result = validate(render_config(without(manifest, 1, field, empty), tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"destinations[1].config.{field}" in message
    assert message.endswith(CUSTOM_MESSAGE)
    assert "Traceback" not in message
    for secret in (m.S3_SECRET, "PRIVATE KEY"):
        assert secret not in message


INVALID = {
    "unknown-type": (
        m.service_backup({"type": "dropbox", "config": {"token": "x"}}),
        "destinations[0].type: unknown destination type 'dropbox'",
    ),
    "missing-type": (
        m.service_backup({"name": "nameless", "config": {"path": "/x"}}),
        "destinations[0].type",
    ),
    "missing-source-folder": (
        {
            "properties": {
                "service-backup": {
                    "destinations": [m.destination("local")],
                    "cron_schedule": m.CRON,
                }
            }
        },
        "source_folder: required field missing",
    ),
    "missing-cron-schedule": (
        {
            "properties": {
                "service-backup": {
                    "destinations": [m.destination("local")],
                    "source_folder": m.SOURCE,
                }
            }
        },
        "cron_schedule: required field missing",
    ),
    "invalid-cron-schedule": (
        m.service_backup(m.destination("local"), cron_schedule="* * * * * 99"),
        "cron_schedule:",
    ),
    "unknown-key-in-destination": (
        m.service_backup(
            {**m.destination("s3"), "config": {**m.destination("s3")["config"], "bucket": "x"}}
        ),
        "destinations[0].config.bucket: unknown key",
    ),
    "duplicate-destination-names": (
        m.service_backup(m.destination("local", "same"), m.destination("s3", "same")),
        "destinations[1].name",
    ),
    "bad-boolean": (
        m.service_backup(m.destination("local"), exit_if_in_progress="sometimes"),
        "exit_if_in_progress",
    ),
}


@pytest.mark.parametrize(("manifest", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_manifest_fails_validation_with_the_field_path(
    ruby: str, manifest: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    result = validate(render_config(manifest, tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert expected in message
    assert message.endswith("Provide these missing fields in your manifest.")
