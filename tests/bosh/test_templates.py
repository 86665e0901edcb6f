"""config/backup.yml rendered from fixture manifests, then checked by the daemon itself
(`service-backup validate`): valid manifests pass. Invalid ones fail on the director, while the
template renders (the schema check embedded in backup.yml.erb), naming the field path and
ending with missing_properties_message; the daemon rejects the same config too (pre-start), so
the director is never stricter than the daemon. What only code can check (cron syntax, a
third-party type) renders and fails pre-start."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import manifests as m
from .job import DEPLOYMENT, RenderError, render_job, validate
from .test_schema import embedded_schema_text

CUSTOM_MESSAGE = "Ask the Redis team to fix the manifest."


def render_config(manifest: dict[str, Any], tmp_path: Path) -> Path:
    return render_job(manifest, tmp_path / "job") / "config" / "backup.yml"


def render_error(manifest: dict[str, Any], tmp_path: Path) -> str:
    """What the director says when the template refuses the manifest."""
    with pytest.raises(RenderError) as caught:
        render_config(manifest, tmp_path)
    message = str(caught.value)
    assert message.startswith("Error filling in template 'backup.yml.erb' (line "), message
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message and ".rb:" not in message, message
    return message


def validate_unrendered(manifest: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """``service-backup validate`` on what the template would have rendered, without its
    check: the section as given plus deployment_name (the daemon's defaults match the spec's)."""
    section = manifest["properties"].get("service-backup", {})
    config = tmp_path / "unchecked.yml"
    config.write_text(yaml.safe_dump({**section, "deployment_name": DEPLOYMENT}))
    result = validate(config)
    return result.returncode, result.stderr.strip()


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
    "healthchecks-and-apprise": m.service_backup(
        m.destination("local"),
        healthchecks={"ping_url": "https://hc-ping.com/0b7c", "states": ["fail"]},
        apprise={"services": [{"url": "json://localhost:8080/hook", "label": "ops"}]},
    ),
    "numbers-as-strings-where-the-daemon-takes-them": m.service_backup(
        m.destination("local"),
        alerts=m.full_alerts(timeout_seconds="30", skip_ssl_validation="false"),
        exit_if_in_progress="true",
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


def test_plugin_sections_render_only_when_set(ruby: str, tmp_path: Path) -> None:
    manifest = VALID["healthchecks-and-apprise"]
    config = rendered(manifest, tmp_path / "set")
    section = manifest["properties"]["service-backup"]
    assert config["healthchecks"] == section["healthchecks"]
    assert config["apprise"] == section["apprise"]
    plain = rendered(m.service_backup(m.destination("local")), tmp_path / "unset")
    for key in ("healthchecks", "apprise", "metrics"):
        assert key not in plain, f"{key} rendered although the manifest does not set it"


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


@functools.cache
def director_required(kind: str) -> set[str]:
    """The fields of ``kind`` the embedded schema marks required: the ones the director checks.
    Others are required only together with another field (both halves of an access key), a
    rule of the config class that pre-start applies."""
    fields = json.loads(embedded_schema_text())["destination_types"][kind]["config"]["fields"]
    return {name for name, node in fields.items() if node.get("not_empty")}


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
    manifest = without(manifest, 1, field, empty)
    if field in director_required(kind):
        message = render_error(manifest, tmp_path)
        assert f"service-backup.destinations[1].config.{field}: required field missing" in message
        assert message.endswith(f"{CUSTOM_MESSAGE})"), message
        for secret in (m.S3_SECRET, "PRIVATE KEY"):
            assert secret not in message
        status, daemon = validate_unrendered(manifest, tmp_path)
    else:
        result = validate(render_config(manifest, tmp_path))
        status, daemon = result.returncode, result.stderr.strip()
    # pre-start refuses it too, naming the same field.
    assert status == 2, daemon
    assert len(daemon.splitlines()) == 1, daemon
    assert f"destinations[1].config.{field}" in daemon
    assert daemon.endswith(CUSTOM_MESSAGE)
    assert "Traceback" not in daemon
    for secret in (m.S3_SECRET, "PRIVATE KEY"):
        assert secret not in daemon


def s3_with(**config: Any) -> dict[str, Any]:
    entry = m.destination("s3")
    entry["config"].update(config)
    return entry


#: Manifests the director refuses, and the text its error must hold. The daemon refuses each
#: too, naming the same path (without the ``service-backup.`` prefix).
DIRECTOR_REJECTS = {
    "s3-missing-bucket_name": (
        m.service_backup(
            {
                **m.destination("s3"),
                "config": {
                    k: v for k, v in m.destination("s3")["config"].items() if k != "bucket_name"
                },
            }
        ),
        "service-backup.destinations[0].config.bucket_name: required field missing",
    ),
    "misspelled-key-in-destination": (
        m.service_backup(s3_with(bucket_nmae="x")),
        "service-backup.destinations[0].config.bucket_nmae: unknown key",
    ),
    "number-where-a-string-belongs": (
        m.service_backup(s3_with(access_key_id=12345)),
        "service-backup.destinations[0].config.access_key_id: expected a string",
    ),
    "mapping-where-a-string-belongs": (
        m.service_backup(s3_with(region={"name": "eu-central-1"})),
        "service-backup.destinations[0].config.region: expected a string",
    ),
    "string-where-a-number-belongs": (
        m.service_backup(
            {
                **m.destination("scp"),
                "config": {**m.destination("scp")["config"], "port": "twenty-two"},
            }
        ),
        "service-backup.destinations[0].config.port: expected a whole number",
    ),
    "enum-value": (
        m.service_backup(s3_with(addressing_style="sideways")),
        "service-backup.destinations[0].config.addressing_style: must be one of path, virtual",
    ),
    "missing-type": (
        m.service_backup({"name": "nameless", "config": {"path": "/x"}}),
        "service-backup.destinations[0].type: required field missing",
    ),
    "type-in-capitals": (
        m.service_backup({**m.destination("s3"), "type": "S3"}),
        "service-backup.destinations[0].type: unknown destination type 'S3'",
    ),
    "misspelled-type": (
        m.service_backup({**m.destination("azure"), "type": "azur"}),
        "did you mean 'azure'?",
    ),
    "unknown-key-in-entry": (
        m.service_backup({**m.destination("local"), "retension": {"keep_daily": 7}}),
        "service-backup.destinations[0].retension: unknown key",
    ),
    "negative-retention": (
        m.service_backup({**m.destination("local"), "retention": {"keep_daily": -1}}),
        "service-backup.destinations[0].retention.keep_daily: must be 0 or more",
    ),
    "misspelled-retention-key": (
        m.service_backup({**m.destination("local"), "retention": {"keep_dayly": 7}}),
        "service-backup.destinations[0].retention.keep_dayly: unknown key",
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
        "service-backup.source_folder: required field missing",
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
        "service-backup.cron_schedule: required field missing",
    ),
    "duplicate-destination-names": (
        m.service_backup(m.destination("local", "same"), m.destination("s3", "same")),
        "service-backup.destinations[1].name: 'same' is already used by destinations[0]",
    ),
    "bad-boolean": (
        m.service_backup(m.destination("local"), exit_if_in_progress="sometimes"),
        "service-backup.exit_if_in_progress: expected true or false",
    ),
    "alerts-without-password": (
        m.service_backup(
            m.destination("local"),
            alerts={
                **m.full_alerts(),
                "config": {
                    **m.full_alerts()["config"],
                    "cloud_controller": {
                        "url": "https://api.sys.example.com",
                        "user": "backup-alerts",
                    },
                },
            },
        ),
        "service-backup.alerts.config.cloud_controller.password: required field missing",
    ),
    "alerts-timeout-not-a-number": (
        m.service_backup(m.destination("local"), alerts=m.full_alerts(timeout_seconds="soon")),
        "service-backup.alerts.config.timeout_seconds: expected a whole number",
    ),
    "healthchecks-misspelled-key": (
        m.service_backup(
            m.destination("local"), healthchecks={"ping_url": "https://hc.example/x", "state": []}
        ),
        "service-backup.healthchecks.state: unknown key",
    ),
    "healthchecks-without-ping-url": (
        m.service_backup(m.destination("local"), healthchecks={"timeout_seconds": 5}),
        "service-backup.healthchecks.ping_url: required field missing",
    ),
    "apprise-unknown-state": (
        m.service_backup(
            m.destination("local"),
            apprise={"services": [{"url": "json://localhost/x"}], "states": ["failed"]},
        ),
        "service-backup.apprise.states[0]: must be one of start, finish, fail",
    ),
    "apprise-url-not-a-string": (
        m.service_backup(m.destination("local"), apprise={"services": [{"url": 8080}]}),
        "service-backup.apprise.services[0].url: expected a string",
    ),
}


@pytest.mark.parametrize(
    ("manifest", "expected"), DIRECTOR_REJECTS.values(), ids=DIRECTOR_REJECTS.keys()
)
def test_invalid_manifest_fails_on_the_director_with_the_field_path(
    ruby: str, manifest: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    message = render_error(manifest, tmp_path)
    assert expected in message, message
    assert message.endswith("Provide these missing fields in your manifest.)"), message
    # Never stricter than the daemon: pre-start would refuse it too, at the same path.
    status, daemon = validate_unrendered(manifest, tmp_path)
    assert status == 2, f"the daemon accepts what the director refused: {daemon}"
    path = expected.removeprefix("service-backup.").partition(":")[0]
    if "did you mean" not in expected:
        assert path in daemon, daemon


#: Only code can check these: the template renders, pre-start (the daemon) refuses.
PRE_START_REJECTS = {
    "third-party-type-not-installed": (
        m.service_backup({"type": "dropbox", "config": {"token": "x"}}),
        "destinations[0].type: unknown destination type 'dropbox'",
    ),
    "invalid-cron-schedule": (
        m.service_backup(m.destination("local"), cron_schedule="* * * * * 99"),
        "cron_schedule:",
    ),
    "port-out-of-range": (
        m.service_backup(
            {**m.destination("scp"), "config": {**m.destination("scp")["config"], "port": 70000}}
        ),
        "destinations[0].config.port",
    ),
}


@pytest.mark.parametrize(
    ("manifest", "expected"), PRE_START_REJECTS.values(), ids=PRE_START_REJECTS.keys()
)
def test_what_only_code_checks_renders_and_fails_pre_start(
    ruby: str, manifest: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    result = validate(render_config(manifest, tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert expected in message
    assert message.endswith("Provide these missing fields in your manifest.")


def test_every_problem_is_named_at_once(ruby: str, tmp_path: Path) -> None:
    manifest = m.service_backup(
        s3_with(bucket_nmae="x", access_key_id=1), {"type": "local", "config": {}}
    )
    message = render_error(manifest, tmp_path)
    for part in (
        "destinations[0].config.bucket_nmae: unknown key",
        "destinations[0].config.access_key_id: expected a string",
        "destinations[1].config.path: required field missing",
    ):
        assert part in message, message


def test_a_number_for_a_plain_string_is_accepted_as_the_daemon_does(
    ruby: str, tmp_path: Path
) -> None:
    """YAML reads ``bucket_path: 2024`` as a number; the daemon takes it as "2024"."""
    manifest = m.service_backup(s3_with(bucket_path=2024, bucket_name=12345))
    result = validate(render_config(manifest, tmp_path))
    assert result.returncode == 0, result.stderr
