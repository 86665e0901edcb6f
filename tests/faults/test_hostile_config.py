"""Hostile and broken configs (issue items 7, 8, 13): fast refusals, one line, no secret echoed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service_backup.config import load_config
from service_backup.errors import ConfigError
from service_backup.plugins import PluginRegistry, load_registry

from .helpers import local_config, run_cli, timed_cli, write_config

#: The probe's 1 KB "billion laughs": nine levels of nine aliases (9**9 strings when expanded;
#: before the fix it took 114 s and 10.3 GB before exit 2).
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def assert_one_line_refusal(result, *, names: list[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"one line expected, got {lines}"
    for name in names:
        assert name in lines[0], f"{name!r} missing from {lines[0]!r}"
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def registry() -> PluginRegistry:
    return load_registry(hook_plugins=False)


def test_alias_bomb_is_refused_at_once(tmp_path: Path, registry: PluginRegistry) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(BOMB)
    assert len(BOMB) < 1100
    started = time.monotonic()
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        load_config(path, registry)
    assert time.monotonic() - started < 1.0, "the bomb must be refused before it expands"
    for command in ("validate", "backup", "daemon"):
        result, elapsed = timed_cli(command, str(path), timeout=30)
        assert_one_line_refusal(result, names=["bomb.yml", "YAML aliases"])
        assert elapsed < 10, f"{command} took {elapsed:.1f}s on a 1 KB bomb"


def test_few_aliases_that_expand_hugely_are_refused(tmp_path: Path, registry) -> None:
    # Few aliases, each to a big list: the expanded size is what counts, not the alias count.
    big = "[" + ",".join(["x"] * 20_000) + "]"
    path = tmp_path / "wide.yml"
    path.write_text(f"a: &a {big}\nb: [*a, *a, *a, *a, *a, *a, *a, *a]\n")
    with pytest.raises(ConfigError, match="expands to more than 100000 YAML nodes"):
        load_config(path, registry)


def test_a_shared_anchor_or_two_is_fine(tmp_path: Path, registry) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(
        f"""
destinations:
- &d {{type: local, name: one, config: {{path: {tmp_path / "one"}}}}}
- {{type: local, name: two, config: *cfg}}
source_folder: {tmp_path}
cron_schedule: "@daily"
""".replace("*cfg", "&cfg {path: " + str(tmp_path / "two") + "}")
        + "deployment_name: &name svc\n"
    )
    config = load_config(path, registry)
    assert [d.name for d in config.destinations] == ["one", "two"]


def test_oversized_config_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    with open(path, "w") as out:
        out.write("source_folder: /tmp\n")
        out.write("# padding\n" * 120_000)  # ~1.2 MB of comments
    result, elapsed = timed_cli("validate", str(path))
    assert_one_line_refusal(result, names=["huge.yml", "larger than 1024 KiB"])
    assert elapsed < 10


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yml"
    path.write_text("x: " + "[" * 200 + "]" * 200 + "\n")
    result = run_cli("validate", str(path))
    assert_one_line_refusal(result, names=["nested more than 64 levels"])


@pytest.mark.parametrize(
    ("value", "problem", "where"),
    [
        ("!hunter2-tag-secret", "could not determine a constructor for the tag", "column 17"),
        ("*hunter2-alias-secret", "found undefined alias", "column 17"),
        ('"hunter2\\qescape-secret"', "found unknown escape character", "column 25"),
    ],
)
def test_yaml_errors_give_line_and_column_never_the_text(
    tmp_path: Path, value: str, problem: str, where: str
) -> None:
    secret = value.strip('"!*').split("\\")[0]
    cfg = tmp_path / "secret.yml"
    cfg.write_text(
        "source_folder: /tmp\n"
        "alerts:\n"
        "  product_name: p\n"
        "  config:\n"
        "    cloud_controller:\n"
        f"      password: {value}\n"
    )
    for command in ("validate", "backup"):
        result = run_cli(command, str(cfg))
        assert_one_line_refusal(result, names=[f"line 6, {where}", problem])
        everything = result.stdout + result.stderr
        assert secret not in everything, f"{command} echoed the secret: {everything}"
        result.lines  # noqa: B018 - stdout stays JSON lines only


def test_every_problem_at_once_with_field_paths(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "many.yml",
        {
            "destinations": "notalist",
            "source_folder": "/tmp",
            "cron_schedule": "@every 0s",
            "deployment_name": "../../etc",
            "exit_if_in_progress": "maybe",
            "sorce_folder": "/typo",
        },
    )
    for command in ("validate", "backup", "daemon"):
        result = run_cli(command, str(cfg), timeout=30)
        assert_one_line_refusal(
            result,
            names=[
                "destinations: expected a list of destinations, not a string",
                "cron_schedule: @every 0s: the interval must be at least 1s",
                "deployment_name: must not contain a '..' segment",
                "exit_if_in_progress: invalid value",
                "sorce_folder: unknown key",
            ],
        )
        assert "unknown error" not in result.stderr
    assert not (tmp_path / "dest").exists()


def test_destination_entries_of_the_wrong_shape(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    data["destinations"] += [5, {"type": "local", "config": "nope"}]
    result = run_cli("validate", str(write_config(tmp_path / "shape.yml", data)))
    assert_one_line_refusal(
        result,
        names=[
            "destinations[1]: expected a mapping (type, name, config), not a number",
            "destinations[2].config: expected a mapping of keys, not a string",
        ],
    )


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("0 0 31 2 *", "never fires"),
        ("@every 500ms", "at least 1s"),
        ("* * * * * 99", "End of range (99) above maximum (6)"),
    ],
)
def test_bad_schedules_are_refused_by_every_command(tmp_path: Path, schedule, reason) -> None:
    cfg = write_config(tmp_path / "s.yml", local_config(tmp_path, cron_schedule=schedule))
    # validate and backup for each; the daemon and manual-backup once (they share the path).
    commands = ("validate", "backup", "daemon") if "31 2" in schedule else ("validate", "backup")
    for command in commands:
        result = run_cli(command, str(cfg), timeout=30)
        assert_one_line_refusal(result, names=["cron_schedule:", reason])
        if command != "validate":
            [line] = result.find("Error scheduling job")
            assert reason in line["data"]["error"]
    assert not (tmp_path / "dest").exists(), "nothing is uploaded with an invalid schedule"
    if "daemon" in commands:
        manual = run_cli_manual(cfg)
        assert_one_line_refusal(manual, names=["cron_schedule:", reason])


def run_cli_manual(cfg: Path):
    import subprocess
    import sys

    from tests.core.cli import CliResult

    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from service_backup.cli import manual_backup; "
         "sys.exit(manual_backup())", str(cfg)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"path": "/srv/backups/../../etc"}, "destinations[0].config.path: must not contain"),
        ({"path": "/srv/b", "file_mode": 416}, "file_mode: expected a quoted octal string"),
        ({"path": "/srv/b", "file_mode": "0400"}, "file_mode: must leave the owner 600"),
        ({"path": "/srv/b", "folder_mode": "rwx"}, "folder_mode: expected a quoted octal"),
    ],
)
def test_local_destination_paths_and_modes_are_validated(tmp_path: Path, config, field) -> None:
    data = local_config(tmp_path)
    data["destinations"][0]["config"] = config
    result = run_cli("validate", str(write_config(tmp_path / "l.yml", data)))
    assert_one_line_refusal(result, names=[field])


BASE_PATHS = {
    "s3": (
        "bucket_path",
        {"bucket_name": "backups", "access_key_id": "AKIA", "secret_access_key": "k"},
    ),
    "azure": (
        "path",
        {"container": "backups", "storage_account": "acct", "storage_access_key": "k"},
    ),
    "gcs": ("bucket_path", {"bucket_name": "backups", "project_id": "p"}),
    "scp": ("destination", {"server": "h", "user": "u", "key": "k", "fingerprint": ""}),
}


@pytest.mark.parametrize("type_", sorted(BASE_PATHS))
def test_base_paths_of_every_destination_refuse_parent_segments(
    tmp_path: Path, type_: str, registry: PluginRegistry
) -> None:
    field, rest = BASE_PATHS[type_]
    data = local_config(tmp_path)
    data["destinations"] = [{"type": type_, "config": {**rest, field: "backups/../../etc"}}]
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / f"{type_}.yml", data), registry)
    expected = f"destinations[0].config.{field}: must not contain a '..' segment"
    assert expected in str(info.value), f"{type_}: {info.value}"


def test_every_problem_within_one_destination_at_once(tmp_path: Path) -> None:
    """A misspelled key must not hide a bucket name that can never work, nor a '..' path."""
    data = local_config(tmp_path)
    data["destinations"] = [
        {
            "type": "s3",
            "config": {
                "bucket_name": "Bad_Bucket",
                "bucket_path": "../up",
                "access_key_id": "AKIA",
                "secret_access_key": "not-shown-secret",
                "regoin": "eu-west-1",
            },
        }
    ]
    result = run_cli("validate", str(write_config(tmp_path / "s3.yml", data)))
    assert_one_line_refusal(
        result,
        names=[
            "destinations[0].config.regoin: unknown key",
            "destinations[0].config.bucket_name: 'Bad_Bucket' can never name a bucket",
            "destinations[0].config.bucket_path: must not contain a '..' segment",
        ],
    )
    assert "not-shown-secret" not in result.stderr + result.stdout
