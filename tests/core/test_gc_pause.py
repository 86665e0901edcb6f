"""Every command runs with the collector paused until its start-up is done (``gc_pause``).

In a process of its own that is all; called in-process (as here) a command must hand the
collector back as it found it, whether it reached the end of its start-up (``list`` loads the
config, then freezes) or not (``validate`` never does; an invalid config stops early).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from service_backup import gc_pause
from service_backup.cli import main
from tests.core.cli import write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "source").mkdir()
    (tmp_path / "dest").mkdir()
    data = {
        "destinations": [{"type": "local", "config": {"path": str(tmp_path / "dest")}}],
        "source_folder": str(tmp_path / "source"),
        "cron_schedule": "*/5 * * * *",
    }
    return write_config(tmp_path / "backup.yml", data)


@pytest.mark.parametrize("command", ["list", "validate"])
@pytest.mark.parametrize("enabled", [True, False], ids=["collector-on", "collector-off"])
def test_a_command_in_process_leaves_the_collector_as_it_found_it(
    config: Path,
    command: str,
    enabled: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0, "the test needs a default collector"
    seen: list[bool] = []
    real_done = gc_pause.done

    def done() -> None:  # the collector as the command's start-up left it
        seen.append(gc.isenabled())
        real_done()
        seen.append(gc.isenabled())

    monkeypatch.setattr(gc_pause, "done", done)
    if not enabled:
        gc.disable()
    try:
        assert main([command, str(config)]) == 0, capsys.readouterr()
    finally:
        state, frozen = gc.isenabled(), gc.get_freeze_count()
        gc.enable()
    assert state is enabled, f"{command} left the collector {'on' if state else 'off'}"
    assert frozen == 0, f"{command} left {frozen} objects frozen in a process that goes on"
    if command == "list":
        assert seen == [False, enabled], (
            f"list's start-up ran with the collector {'on' if seen[0] else 'off'} and its "
            f"work with it {'on' if seen[1] else 'off'}; expected off, then as the caller had it"
        )
    else:
        assert seen == [], "validate has no work after its start-up: nothing to resume"
