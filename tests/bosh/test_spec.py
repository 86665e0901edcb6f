"""The release's static shape: the job spec declares every seed property with its default and a
description, templates and spec agree, the monit file matches the scripts' layout, the
rendered scripts are valid bash, and the render harness behaves like BOSH's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from .job import JOB_SRC, RELEASE, RenderError, render_job

SEED_PROPERTIES = {
    "service-backup.destinations": [],
    "service-backup.source_folder": None,
    "service-backup.source_executable": "",
    "service-backup.cleanup_executable": "",
    "service-backup.cron_schedule": None,
    "service-backup.backup_user": "vcap",
    "service-backup.missing_properties_message": "Provide these missing fields in your manifest.",
    "service-backup.service_identifier_executable": "",
    "service-backup.exit_if_in_progress": False,
    "service-backup.add_deployment_name_to_backup_path": False,
    "service-backup.alerts.product_name": None,
    "service-backup.alerts.config.cloud_controller.url": None,
    "service-backup.alerts.config.cloud_controller.user": None,
    "service-backup.alerts.config.cloud_controller.password": None,
    "service-backup.alerts.config.notifications.service_url": None,
    "service-backup.alerts.config.notifications.cf_org": None,
    "service-backup.alerts.config.notifications.cf_space": None,
    "service-backup.alerts.config.notifications.reply_to": None,
    "service-backup.alerts.config.notifications.client_id": None,
    "service-backup.alerts.config.notifications.client_secret": None,
    "service-backup.alerts.config.timeout_seconds": 60,
    "service-backup.alerts.config.skip_ssl_validation": False,
}


def job_spec() -> dict:
    return yaml.safe_load((JOB_SRC / "spec").read_text())


def test_spec_declares_every_seed_property_with_default_and_description() -> None:
    properties = job_spec()["properties"]
    for name, default in SEED_PROPERTIES.items():
        assert name in properties, name
        assert properties[name].get("description", "").strip(), f"{name} has no description"
        assert properties[name].get("default") == default, name


def test_spec_templates_and_packages_exist() -> None:
    spec = job_spec()
    sources = set(spec["templates"])
    assert sources == {p.name for p in (JOB_SRC / "templates").iterdir()}
    assert set(spec["templates"].values()) == {
        "bin/ctl", "bin/drain", "bin/pre-start", "bin/manual-backup", "bin/helpers.sh",
        "config/backup.yml",
    }  # fmt: skip
    for package in spec["packages"]:
        package_spec = yaml.safe_load((RELEASE / "packages" / package / "spec").read_text())
        assert package_spec["name"] == package
        assert (RELEASE / "packages" / package / "packaging").stat().st_mode & 0o111
    wheels = yaml.safe_load((RELEASE / "packages" / "service-backup" / "spec").read_text())
    assert wheels["dependencies"] == ["service-backup_python"]
    assert wheels["files"] == ["service-backup/wheels/*.whl"]  # where release-wheels writes


def test_monit_file_matches_the_scripts_default_layout(tmp_path: Path) -> None:
    job = render_job({}, tmp_path / "job")
    layout = subprocess.run(
        ["bash", "-c", f'source {job}/bin/helpers.sh && echo "$PIDFILE" && echo "$JOB_DIR"'],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pidfile, job_dir = layout
    assert pidfile == "/var/vcap/sys/run/service-backup/service-backup.pid"
    monit = (job / "monit").read_text()
    assert f"with pidfile {pidfile}" in monit
    assert f'start program "{job_dir}/bin/ctl start"' in monit
    assert f'stop program "{job_dir}/bin/ctl stop"' in monit


def test_rendered_scripts_are_valid_bash(tmp_path: Path) -> None:
    job = render_job({"properties": {"service-backup": {"backup_user": "o'brien"}}}, tmp_path / "j")
    for script in (job / "bin").iterdir():
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
    # A quote in a property cannot break out of the shell assignment.
    user = subprocess.run(
        ["bash", "-c", f'source {job}/bin/helpers.sh && printf %s "$BACKUP_USER"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert user == "o'brien"


@pytest.fixture
def toy_job(tmp_path: Path) -> Path:
    job = tmp_path / "toy"
    (job / "templates").mkdir(parents=True)
    (job / "spec").write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "templates": {"out.erb": "config/out"},
                "properties": {
                    "a.required": {"description": "no default"},
                    "a.defaulted": {"description": "d", "default": "dflt"},
                },
            }
        )
    )
    (job / "monit").write_text("")
    return job


def _render_toy(job: Path, template: str, properties: dict, tmp_path: Path) -> str:
    (job / "templates" / "out.erb").write_text(template)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"deployment": "dep", "properties": properties}))
    out = tmp_path / "out"
    result = subprocess.run(
        ["ruby", str(Path(__file__).with_name("render.rb")), str(job), str(manifest), str(out)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RenderError(result.stderr)
    return (out / "config" / "out").read_text()


def test_harness_follows_bosh_property_semantics(ruby: str, toy_job: Path, tmp_path: Path) -> None:
    template = (
        "<%= p('a.defaulted') %>|<%= p('a.required', 'fallback') %>|"
        "<% if_p('a.required') do |v| %>set:<%= v %><% end.else do %>unset<% end %>|"
        "<%= spec.deployment %>"
    )
    assert _render_toy(toy_job, template, {}, tmp_path) == "dflt|fallback|unset|dep"
    given = {"a": {"required": "x", "defaulted": "y", "undeclared": "z"}}
    assert _render_toy(toy_job, template, given, tmp_path) == "y|x|set:x|dep"
    # Undeclared properties never reach templates; a required one without value raises.
    with pytest.raises(RenderError, match="Can't find property"):
        _render_toy(toy_job, "<%= p('a.undeclared') %>", given, tmp_path)
    with pytest.raises(RenderError, match=r"a\.required"):
        _render_toy(toy_job, "<%= p('a.required') %>", {}, tmp_path)


def test_every_package_name_carries_the_release_prefix() -> None:
    """A package called ``python3`` would collide with another release's ``python3`` on an
    instance group that colocates both: every package is ``service-backup`` or
    ``service-backup_<name>``, as the Go release's were."""
    names = {p.name for p in (RELEASE / "packages").iterdir()}
    assert names == {"service-backup", "service-backup_python"}
    for name in names:
        spec = yaml.safe_load((RELEASE / "packages" / name / "spec").read_text())
        assert spec["name"] == name
    python = yaml.safe_load((RELEASE / "packages" / "service-backup_python" / "spec").read_text())
    assert python["files"] == [
        "service-backup_python/Python-3.11.*.tar.xz",
        "service-backup_python/libffi-3.*.tar.gz",  # the stemcell has no libffi-dev
    ]
    assert set(job_spec()["packages"]) == names


def daemon_command(ctl: Path) -> str:
    lines = [line for line in ctl.read_text().splitlines() if 'bin/service-backup" daemon' in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_syslog_is_off_unless_the_property_says_so(ruby: str, tmp_path: Path) -> None:
    """syslog-release forwards the job's log files already; --syslog too would double them."""
    assert job_spec()["properties"]["service-backup.syslog"]["default"] is False
    default = render_job({}, tmp_path / "default")
    assert "--syslog" not in daemon_command(default / "bin" / "ctl")
    on = render_job({"properties": {"service-backup": {"syslog": True}}}, tmp_path / "on")
    assert "daemon --syslog " in daemon_command(on / "bin" / "ctl")


def test_plugin_sections_are_spec_properties_without_defaults() -> None:
    """Rendered only when set: a default would switch a notifier on for every deployment."""
    properties = job_spec()["properties"]
    for key in ("healthchecks", "apprise", "metrics"):
        definition = properties[f"service-backup.{key}"]
        assert "default" not in definition, key
        assert definition["description"].strip(), key
