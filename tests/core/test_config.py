"""Config validation: the whole seed schema, field paths in errors, secrets never shown."""

from __future__ import annotations

import typing
from pathlib import Path

import attrs
import pytest

from service_backup.config import (
    DEFAULT_MISSING_PROPERTIES_MESSAGE,
    load_config,
    parse_config,
    structure_destination_config,
)
from service_backup.errors import ConfigError
from service_backup.plugins import PluginRegistry, load_registry

SEED_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "local.yml"


@pytest.fixture
def registry() -> PluginRegistry:
    return load_registry(hook_plugins=False)


def base(**extra):
    return {
        "destinations": [{"type": "local", "name": "one", "config": {"path": "/tmp/x"}}],
        "source_folder": "/var/vcap/store",
        "cron_schedule": "0 */6 * * *",
        **extra,
    }


def error_of(data, registry) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, registry)
    return str(info.value)


def test_full_seed_schema_is_accepted(registry):
    config = parse_config(
        base(
            source_executable="/bin/snapshot --wait",
            cleanup_executable="/bin/cleanup",
            missing_properties_message="Ask the operator.",
            exit_if_in_progress=True,
            service_identifier_executable="/bin/identify",
            deployment_name="service-instance_1",
            add_deployment_name_to_backup_path=True,
            backup_user="vcap",
            aws_cli_path="/var/vcap/packages/aws",
            azure_cli_path="/var/vcap/packages/blobxfer",
            alerts={
                "product_name": "Redis",
                "config": {
                    "cloud_controller": {"url": "https://api", "user": "u", "password": "pw-123"},
                    "notifications": {
                        "service_url": "https://n", "cf_org": "o", "cf_space": "s",
                        "reply_to": "ops@example.com", "client_id": "c", "client_secret": "cs-456",
                    },
                    "timeout_seconds": 30,
                    "skip_ssl_validation": True,
                },
            },
        ),
        registry,
    )  # fmt: skip
    assert config.exit_if_in_progress is True
    assert config.alerts is not None
    assert config.alerts.config.effective_timeout_seconds == 30
    assert config.alerts.config.cloud_controller.password.reveal() == "pw-123"
    assert "pw-123" not in repr(config) and "cs-456" not in repr(config)
    assert config.destinations[0].display_name == "one"
    assert config.missing_properties_message == "Ask the operator."


def test_defaults(registry):
    config = parse_config(base(), registry)
    assert config.backup_user == "vcap"
    assert config.exit_if_in_progress is False
    assert config.missing_properties_message == DEFAULT_MISSING_PROPERTIES_MESSAGE
    assert config.alerts is None


@pytest.mark.parametrize("key", ["source_folder", "cron_schedule"])
def test_required_top_level_fields(registry, key):
    data = base()
    del data[key]
    message = error_of(data, registry)
    assert message.startswith(f"{key}: required field missing")
    assert message.endswith(DEFAULT_MISSING_PROPERTIES_MESSAGE)


def test_destination_field_path_and_custom_message(registry):
    data = base(missing_properties_message="Fix the manifest, please.")
    data["destinations"].append({"type": "local", "config": {}})
    message = error_of(data, registry)
    assert "destinations[1].config.path: required field missing" in message
    assert message.endswith("Fix the manifest, please.")


def test_empty_required_value_counts_as_missing(registry):
    data = base()
    data["destinations"][0]["config"]["path"] = "  "
    assert "destinations[0].config.path: required field missing" in error_of(data, registry)


def test_unknown_keys_are_named(registry):
    data = base(exit_if_in_progres=True)
    data["destinations"][0]["config"]["pth"] = "typo"
    message = error_of(data, registry)
    assert "exit_if_in_progres: unknown key" in message


def test_unknown_destination_key_is_named(registry):
    data = base()
    data["destinations"][0]["config"]["pth"] = "typo"
    assert "destinations[0].config.pth: unknown key" in error_of(data, registry)


def test_unknown_destination_type(registry):
    data = base()
    data["destinations"][0]["type"] = "floppy"
    message = error_of(data, registry)
    assert "destinations[0].type: unknown destination type 'floppy'" in message
    assert "local" in message  # lists what is installed


def test_wrong_types_are_reported_by_path(registry):
    message = error_of(base(exit_if_in_progress="sometimes"), registry)
    assert "exit_if_in_progress: invalid value" in message


def test_duplicate_destination_names(registry):
    data = base()
    data["destinations"].append({"type": "local", "name": "one", "config": {"path": "/y"}})
    assert "destinations[1].name: 'one' is already used" in error_of(data, registry)


def test_no_destinations_is_valid_and_needs_nothing_else(registry):
    for data in (None, {}, {"destinations": []}, {"destinations": None}):
        assert parse_config(data, registry).destinations == ()


def test_deployment_name_needed_when_added_to_path(registry):
    message = error_of(base(add_deployment_name_to_backup_path=True), registry)
    assert "deployment_name: required field missing" in message


def test_secret_never_in_errors(registry):
    data = base(
        alerts={
            "product_name": "p",
            "config": {"cloud_controller": {"password": ["hunter2-secret"]}},
        }
    )
    message = error_of(data, registry)
    assert "alerts.config.cloud_controller.password" in message
    assert "hunter2-secret" not in message


def test_malformed_yaml(tmp_path, registry):
    path = tmp_path / "bad.yml"
    path.write_text("destinations: [\n  - type: local\n  config: {path: x\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(path, registry)


def test_missing_file(tmp_path, registry):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yml", registry)


def test_example_config_loads(registry):
    config = load_config(SEED_EXAMPLE, registry)
    assert config.destinations[0].type == "local"


def test_alert_fields_required_once_a_product_name_is_set(registry):
    message = error_of(
        base(
            alerts={"product_name": "Redis", "config": {"cloud_controller": {"url": "https://a"}}}
        ),
        registry,
    )
    assert "alerts.config.cloud_controller.user: required field missing" in message
    assert "alerts.config.notifications.client_secret: required field missing" in message
    assert "alerts.config.cloud_controller.url" not in message
    # No product name: alerts are off and nothing else is required.
    assert parse_config(base(alerts={"product_name": ""}), registry).alerts is not None


@attrs.frozen
class Choice:
    style: typing.Literal["path", "virtual"] = "path"


def test_literal_choices_are_listed():
    with pytest.raises(ConfigError) as info:
        structure_destination_config({"style": "dns"}, Choice, "destinations[0].config")
    assert str(info.value) == "destinations[0].config.style: must be one of path, virtual"


def test_a_validator_naming_its_field_gets_the_full_path():
    from service_backup.config import _at_field

    assert _at_field("destinations[0].config", "key: not a key") == (
        "destinations[0].config.key: not a key"
    )
    assert _at_field("destinations[0].config", "no field here") == (
        "destinations[0].config: no field here"
    )
