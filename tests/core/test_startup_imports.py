"""What a local-only ``validate`` and ``manual-backup`` import: nothing they do not use.

Every ``manual-backup`` is a fresh interpreter, and on a run of small files its start-up is a
good part of the time. SDKs, the scheduler, the progress display's rich and the metrics client
are imported only by what uses them; these tests keep it that way (an import at the top of a
module that a local run reaches would show up here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.cli import write_config

#: Not needed by a local-only run (nor by ``validate``): each is imported where it is used.
UNUSED = (
    "boto3",
    "botocore",
    "azure",
    "google",
    "paramiko",
    "apscheduler",
    "tzlocal",
    "rich",
    "prometheus_client",
    "apprise",
    "service_backup.commands.restore",
    "service_backup.commands.status",
)

PROBE = """
import json, sys
from service_backup.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def _imports(tmp_path: Path, *args: str) -> set[str]:
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{args} failed: {proc.stderr[-2000:]}"
    data = json.loads(report.read_text())
    assert data["code"] == 0, f"{args} exited {data['code']}: {proc.stderr[-2000:]}"
    return set(data["modules"])


def _unused_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in UNUSED or m in UNUSED)


@pytest.fixture
def local_config(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.bin").write_bytes(b"a" * 5000)
    data = {
        "destinations": [
            {"type": "local", "name": "here", "config": {"path": str(tmp_path / "dest")}}
        ],
        "source_folder": str(source),
        "cron_schedule": "*/5 * * * *",
    }
    return write_config(tmp_path / "backup.yml", data)


def test_validate_of_a_local_config_imports_no_sdk_scheduler_or_display(
    tmp_path: Path, local_config: Path
) -> None:
    modules = _imports(tmp_path, "validate", str(local_config))
    assert not _unused_in(modules), f"validate imported {_unused_in(modules)}"


def test_local_manual_backup_imports_no_sdk_scheduler_or_display(
    tmp_path: Path, local_config: Path
) -> None:
    modules = _imports(tmp_path, "backup", str(local_config), "--no-progress")
    stored = list((tmp_path / "dest").rglob("a.bin"))
    assert len(stored) == 1, f"the probe's run stored {stored}, expected one a.bin"
    assert "service_backup_plugins.local.destination" in modules, "not a local run?"
    assert not _unused_in(modules), f"a local manual-backup imported {_unused_in(modules)}"


AUTOINIT_PROBE = """
import json, os, sys
from service_backup.cli import _import_logs
_import_logs()
from loguru import logger
json.dump(
    {"handlers": len(logger._core.handlers), "env": os.environ.get("LOGURU_AUTOINIT")},
    sys.stdout,
)
"""


@pytest.mark.parametrize("preset", [None, "1"], ids=["unset", "set"])
def test_loguru_is_imported_without_its_stderr_handler_and_the_environment_kept(
    preset: str | None,
) -> None:
    """``backup`` and ``daemon`` replace loguru's own handler at once, so it is never built;
    the commands a run starts must still see ``LOGURU_AUTOINIT`` as it was."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "LOGURU_AUTOINIT"}
    if preset is not None:
        env["LOGURU_AUTOINIT"] = preset
    proc = subprocess.run(
        [sys.executable, "-c", AUTOINIT_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert seen["handlers"] == 0, f"loguru built its stderr handler: {seen}"
    assert seen["env"] == preset, f"LOGURU_AUTOINIT left changed: {seen['env']!r}"
