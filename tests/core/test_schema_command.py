"""``service-backup schema``: the config file's shape read from the config classes, which the
BOSH job's template embeds to check manifests on the director."""

from __future__ import annotations

import json

import attrs
import pytest

from service_backup.cli import main
from service_backup.commands.schema import build_schema, render_json
from service_backup.config import ConfigSection, required
from service_backup.hookspecs import hookimpl
from service_backup.plugins import load_registry
from service_backup.secret import Secret


def test_json_names_required_fields_types_and_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    s3 = schema["destination_types"]["s3"]
    assert s3["distribution"] == "service-backup-s3"
    fields = s3["config"]["fields"]
    assert fields["bucket_name"] == {"kind": "string", "required": True, "not_empty": True}
    assert fields["secret_access_key"]["kind"] == "secret"
    assert fields["endpoint_url"] == {"kind": "string"}  # optional: has a default
    assert fields["addressing_style"]["kind"] == "enum"
    assert set(fields["addressing_style"]["choices"]) == {"", "path", "virtual", "auto"}
    scp = schema["destination_types"]["scp"]["config"]["fields"]
    assert scp["port"] == {"kind": "integer", "minimum": 1}  # its validator refuses 0
    entry = schema["destination"]["fields"]
    assert entry["type"] == {"kind": "string", "required": True, "not_empty": True}
    assert entry["retention"]["fields"]["keep_daily"] == {"kind": "integer", "minimum": 0}
    top = schema["config"]["fields"]
    assert top["exit_if_in_progress"] == {"kind": "boolean"}
    assert top["destinations"]["kind"] == "list"
    assert top["healthchecks"]["fields"]["ping_url"]["not_empty"] is True
    assert top["healthchecks"]["fields"]["timeout_seconds"]["minimum"] == 1
    states = top["apprise"]["fields"]["states"]
    assert states == {
        "kind": "list",
        "items": {"kind": "enum", "choices": ["start", "finish", "fail"]},
    }
    assert top["alerts"]["fields"]["config"]["fields"]["cloud_controller"]["fields"][
        "password"
    ] == {"kind": "secret"}
    rules = schema["rules"]
    assert rules["required_with_destinations"] == ["source_folder", "cron_schedule"]
    assert "config.notifications.client_secret" in rules["alerts_required_with_product_name"]


def test_output_is_stable_text() -> None:
    assert render_json(build_schema()) == render_json(build_schema())


def test_a_plugin_section_is_in_the_schema() -> None:
    """Sections come from the hook plugins, so a new section needs no change to the command."""

    @attrs.frozen
    class Gauges:
        textfile: str = required()
        listen: str = ""
        token: Secret = Secret("")  # noqa: RUF009 - immutable

    class Plugin:
        @hookimpl
        def config_sections(self) -> list[ConfigSection]:
            return [ConfigSection("gauges", Gauges)]

    registry = load_registry()
    registry.register(Plugin(), name="test-gauges")
    node = build_schema(registry)["config"]["fields"]["gauges"]
    assert node == {
        "kind": "object",
        "fields": {
            "textfile": {"kind": "string", "required": True, "not_empty": True},
            "listen": {"kind": "string"},
            "token": {"kind": "secret"},
        },
    }


def test_text_output_lists_field_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert "destinations[].retention.keep_daily  integer, >= 0" in out
    assert "  config.bucket_name  string, required" in out
    assert "healthchecks.ping_url  secret, required" in out
