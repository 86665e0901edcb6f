"""One module per destination: its server, its peers, fresh locations and how to clean them.

A target starts the same real server the tests use (through ``tests/<type>/server.py``), hands
out a fresh remote location for every run (created outside the timed region so that no tool
pays for it), builds the command line of each peer for that location, counts what landed, and
removes the location after timing.

For restore cells a target also names its download peers (``restore_tools``) and builds their
command line (``download``): the same tools as the upload peers, in the other direction, each
fetching the dated run folder ``prefix`` of a location into a folder that does not exist yet.
"""

from __future__ import annotations

import abc
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import yaml

from ..datasets import DataSet

OURS = "manual-backup"
UNHASHED = "manual-backup, sha256 off"
RESTORE = "service-backup restore"
#: Every restore (ours included: one ``syncfs`` at the end) leaves the data on disk.
SYNC_NOTE = "then sync -f on the target's file system"


@attrs.frozen
class Tool:
    """One way of uploading a data set: ours or a peer."""

    name: str
    ours: bool = False
    #: Concurrency and other knobs as used (defaults unless noted): printed under the table.
    knobs: str = ""
    #: Why this tool cannot run here at all (e.g. not installed): reported in the table.
    unavailable: str | None = None
    #: Ours with the manifest's sha256 switched off (``bench.unhashed``): neither ours nor a
    #: peer, the baseline ours is compared with to see what hashing costs.
    baseline: bool = False

    @property
    def is_peer(self) -> bool:
        return not self.ours and not self.baseline


UNHASHED_TOOL = Tool(
    UNHASHED,
    baseline=True,
    knobs="ours with the manifest's sha256 switched off (`bench/unhashed.py`; a local copy is "
    "not read back for it either), same config and plugins: ours' wall minus this one's is "
    "what hashing costs; what it writes is no usable backup (its sha256 are zeros)",
)


def with_baseline(tools: list[Tool], dataset: DataSet) -> list[Tool]:
    """``tools`` (ours first), with ``UNHASHED_TOOL`` after ours when ``dataset`` measures
    what hashing costs."""
    if not dataset.hash_cost:
        return tools
    return [*tools[:1], UNHASHED_TOOL, *tools[1:]]


@attrs.frozen
class Invocation:
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None


@attrs.frozen
class Location:
    """A fresh place for one run: ``ident`` names it, ``data`` holds what the target needs."""

    ident: str
    data: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class BenchContext:
    repo: Path
    work: Path
    rclone: str | None = None
    aws: Path | None = None

    @property
    def bin(self) -> Path:
        """Folder of the project's console scripts (``manual-backup``, ``service-backup``)."""
        return Path(sys.executable).parent

    def ours_config_file(
        self, run_id: str, dest_type: str, config: dict[str, Any], source: Path
    ) -> Path:
        """A ``backup.yml`` with one destination, as an operator would write it."""
        folder = self.work / "configs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run_id}.yml"
        document = {
            "destinations": [{"type": dest_type, "name": f"bench-{dest_type}", "config": config}],
            "source_folder": str(source),
            "cron_schedule": "0 0 1 1 *",
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def ours_invocation(
        self,
        run_id: str,
        dest_type: str,
        config: dict[str, Any],
        source: Path,
        *,
        sha256: bool = True,
    ) -> Invocation:
        """``manual-backup CONFIG`` with one destination, as an operator would run it; without
        ``sha256``, the same through ``bench.unhashed``."""
        path = self.ours_config_file(run_id, dest_type, config, source)
        if not sha256:
            return Invocation([sys.executable, "-m", "bench.unhashed", str(path)], cwd=self.repo)
        return Invocation([str(self.bin / "manual-backup"), str(path)])

    def restore_invocation(self, config_file: Path, into: Path) -> Invocation:
        """``service-backup restore CONFIG --to DIR``: the newest complete run, verified."""
        return Invocation([str(self.bin / "service-backup"), "restore", str(config_file),
                           "--to", str(into)])  # fmt: skip


class Target(abc.ABC):
    """A destination type, its server and its peers."""

    name: ClassVar[str]
    #: Remove each location right after its run (servers), or all at the end of a cell (local
    #: ext4: deleting thousands of files right before creating thousands skews the next run;
    #: runs of big files are removed right away all the same, ``runner.REMOVE_FILES_FROM``).
    remove_right_away: ClassVar[bool] = True

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        #: The server's process, once started: its CPU time is reported beside each run.
        self.server_pid: int | None = None
        #: Run folders of many-file cells, removed after the last cell (``runner``).
        self.deferred: list[Location] = []
        #: Restored folders of many-file restore cells, removed likewise.
        self.deferred_folders: list[Path] = []

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Start the server (if any) for the duration of the block."""
        yield

    @abc.abstractmethod
    def tools(self) -> list[Tool]:
        """Ours first, then the peers."""

    def skip(self, dataset: DataSet, tool: Tool) -> str | None:
        """Why ``tool`` is not run on ``dataset`` here (a known server limit), or None."""
        return None

    def limit(self, dataset: DataSet) -> tuple[int, int, str] | None:
        """(runs, warm-ups, why) when a server cannot take the usual repetitions of a set."""
        return None

    @abc.abstractmethod
    def new_location(self, run_id: str) -> Location: ...

    @abc.abstractmethod
    def ours_config(self, location: Location) -> dict[str, Any]: ...

    @abc.abstractmethod
    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation: ...

    @abc.abstractmethod
    def count(self, location: Location) -> int:
        """How many objects are stored under the location (any depth)."""

    @abc.abstractmethod
    def remove(self, location: Location) -> None: ...

    def versions(self) -> dict[str, str]:
        return {}

    def restore_tools(self) -> list[Tool]:
        """Ours (``service-backup restore``) first, then the download peers."""
        return [
            Tool(RESTORE, ours=True, knobs=our_knobs(self.name, restore=True)),
            *self.download_peers(),
        ]

    def download_peers(self) -> list[Tool]:
        """The upload peers in the download direction (names say ``+ sync``)."""
        return []

    def restore_skip(self, dataset: DataSet, tool: Tool) -> str | None:
        """Why ``tool`` does not download ``dataset`` here (a known server limit), or None."""
        return None

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        """``tool`` fetching the run folder ``prefix`` (``YYYY/MM/DD`` under the location's
        base) into ``into``, a folder that does not exist yet (the tool creates it), so that
        the restored files land directly in it. The harness adds the trailing ``sync -f``."""
        raise NotImplementedError(f"{self.name}: no download peer {tool.name!r}")

    def invocation(self, tool: Tool, source: Path, location: Location) -> Invocation:
        if tool.is_peer:
            return self.peer(tool, source, location)
        return self.ctx.ours_invocation(
            location.ident, self.name, self.ours_config(location), source, sha256=tool.ours
        )


def server_cpu_seconds(pid: int | None) -> float | None:
    """CPU time of a server and its reaped children (sshd's per-connection processes)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_name(run_id: str, limit: int = 63) -> str:
    """A bucket/container-safe name for a run: lowercase letters, digits and hyphens."""
    name = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    return name[-limit:].lstrip("-")


def rclone_env(base: dict[str, str], remote: str, settings: dict[str, str]) -> dict[str, str]:
    """An rclone remote defined through ``RCLONE_CONFIG_<NAME>_<KEY>`` variables (no file)."""
    env = dict(base)
    env["RCLONE_CONFIG"] = "/dev/null"
    for key, value in settings.items():
        env[f"RCLONE_CONFIG_{remote.upper()}_{key.upper()}"] = value
    return env


_KNOB = re.compile(
    r"CONCURRENCY|CHUNK|PART|THRESHOLD|BLOCK|PUT_SIZE|WINDOW|PACKET|WRITE|CONNECTION"
)


def _knob_value(value: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor and value % factor == 0:
            return f"{value // factor} {unit}"
    return str(value)


def our_knobs(dest_type: str, restore: bool = False) -> str:
    """The plugin's own knobs as shipped, read from its code (so the report cannot go stale).

    ``file_concurrency`` of the destination class, plus the integer module constants whose
    names speak of concurrency, chunk/part/block sizes, windows or packets. For restore: the
    number of files read at once (``file_concurrency``), the read size, and the stream the
    plugin's ``open_read`` returns.
    """
    if restore:
        return _restore_knobs(dest_type)
    import importlib
    import importlib.metadata

    try:
        (entry,) = importlib.metadata.entry_points(group="service_backup", name=dest_type)
        module = entry.load()
        (dtype,) = [t for t in module.destination_types() if t.name == dest_type]
    except Exception as exc:
        return f"(knobs unknown: {type(exc).__name__})"
    cls = _destination_class(dtype.factory)
    parts = [f"file_concurrency {getattr(cls, 'file_concurrency', '?')}"]
    package = module.__name__.split(".")[0]
    for name in sorted(sys.modules):
        if name != package and not name.startswith(package + "."):
            continue
        for key, value in sorted(vars(sys.modules[name]).items()):
            is_int = isinstance(value, int) and not isinstance(value, bool)
            noise = "TIMEOUT" in key or "FLAG" in key or key.startswith("CMD_")
            if key.isupper() and is_int and _KNOB.search(key) and not noise:
                parts.append(f"{key} {_knob_value(value)}")
    return "as shipped: " + ", ".join(dict.fromkeys(parts))


def _restore_knobs(dest_type: str) -> str:
    import importlib.metadata

    from service_backup.commands import restore

    try:
        (entry,) = importlib.metadata.entry_points(group="service_backup", name=dest_type)
        (dtype,) = [t for t in entry.load().destination_types() if t.name == dest_type]
        cls = _destination_class(dtype.factory)
        concurrency = getattr(cls, "file_concurrency", "?")
    except Exception as exc:
        concurrency = f"unknown ({type(exc).__name__})"
    return (
        f"as shipped: {concurrency} files at once (file_concurrency), reads of "
        f"{_knob_value(restore.READ_CHUNK)} from open_read, sha256 on the way, temp name + "
        "rename; one syncfs at the end"
    )


_LAZY = re.compile(r"lazy_factory\('([\w.]+):(\w+)'\)")


def _destination_class(factory: Any) -> Any:
    """The class a destination type opens: the factory itself, or a ``lazy_factory``'s target.

    ``lazy_factory`` names its target in the factory's ``__qualname__``
    (``lazy_factory('pkg.destination:Class')``); importing it here is fine: the bench is about
    to use that destination anyway.
    """
    import importlib

    if isinstance(factory, type):
        return factory
    match = _LAZY.fullmatch(getattr(factory, "__qualname__", ""))
    if match is None:
        return factory
    try:
        return getattr(importlib.import_module(match[1]), match[2])
    except (ImportError, AttributeError):
        return factory
