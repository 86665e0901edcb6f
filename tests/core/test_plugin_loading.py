"""How plugins are loaded: the core's own hooks are plugin modules, config never loads plugins."""

from __future__ import annotations

import re
import subprocess
import sys

from service_backup import upload
from service_backup.plugins import BUILTIN_PLUGINS, PluginRegistry, load_registry
from tests.core.cli import run_cli


def test_config_alone_imports_no_plugin_loader() -> None:
    """``service_backup.config`` validates through a lookup; importing it loads no plugin."""
    code = (
        "import sys, service_backup.config; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('service_backup'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.strip().split(","))
    for module in ("service_backup.plugins", "service_backup.upload", "service_backup.hookspecs"):
        assert module not in loaded, f"importing service_backup.config imported {module}: {loaded}"
    assert not {m for m in loaded if m.startswith("service_backup_")}, (
        f"importing service_backup.config imported a plugin package: {loaded}"
    )


def test_builtin_upload_is_registered_by_the_loader_like_a_plugin() -> None:
    bare = PluginRegistry()
    assert bare.pm.get_plugins() == set(), "an unloaded registry must hold no plugin at all"
    assert bare.pm.hook.upload.get_hookimpls() == [], "the default upload came without the loader"

    loaded = load_registry(hook_plugins=False)
    assert "service_backup.upload" in BUILTIN_PLUGINS
    assert loaded.pm.get_plugin("service_backup.upload") is upload, (
        "the loader did not register the built-in upload module under its module name"
    )
    impls = [impl.function for impl in loaded.pm.hook.upload.get_hookimpls()]
    assert impls == [upload.upload], f"expected only the default upload hook, got {impls}"


def test_plugins_command_lists_the_builtin_upload_hook() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"^builtin\s+upload\s+service-backup\s+\S+\s+-\s+upload$", result.stdout, re.M
    ), f"the built-in upload hook is missing from 'service-backup plugins':\n{result.stdout}"
