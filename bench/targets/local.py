"""``local``: a folder on the same file system; peers ``cp -r`` and ``rclone copy``.

Ours makes the run durable before reporting success (one ``syncfs`` of the destination's file
system before the manifest and one after), so each peer is followed by ``sync -f`` on the
destination's file system: all three have the data on disk when timing stops.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import OURS, SYNC_NOTE, Invocation, Location, Target, Tool, our_knobs, rclone_env


class LocalTarget(Target):
    name = "local"
    remove_right_away = False

    @property
    def root(self) -> Path:
        return self.ctx.work / "dest" / "local"

    def tools(self) -> list[Tool]:
        rclone = None if self.ctx.rclone else "rclone not installed"
        return [
            Tool(
                OURS, ours=True, knobs=our_knobs("local") + "; syncfs before and after the manifest"
            ),
            Tool("cp -r + sync", knobs="one file at a time; then sync -f"),
            Tool(
                "rclone copy + sync",
                knobs="defaults: --transfers 4 --checkers 8; then sync -f",
                unavailable=rclone,
            ),
        ]

    def new_location(self, run_id: str) -> Location:
        self.root.mkdir(parents=True, exist_ok=True)
        return Location(run_id, {"path": str(self.root / run_id)})

    def ours_config(self, location: Location) -> dict[str, Any]:
        return {"path": location.data["path"]}

    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation:
        dest = location.data["path"]
        if tool.name.startswith("cp"):
            script = 'cp -r "$1" "$2" && sync -f "$2"'
            return Invocation(["sh", "-c", script, "sh", str(source), dest])
        script = '"$1" copy "$2" "$3" && sync -f "$3"'
        env = rclone_env(dict(os.environ), "unused", {})
        return Invocation(["sh", "-c", script, "sh", str(self.ctx.rclone), str(source), dest], env)

    def download_peers(self) -> list[Tool]:
        rclone = None if self.ctx.rclone else "rclone not installed"
        return [
            Tool("cp -r + sync", knobs=f"one file at a time; {SYNC_NOTE}"),
            Tool("rclone copy + sync", knobs=f"defaults: --transfers 4 --checkers 8; {SYNC_NOTE}",
                 unavailable=rclone),
        ]  # fmt: skip

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        run = str(Path(location.data["path"]) / prefix)
        if tool.name.startswith("cp"):
            return Invocation(["cp", "-r", run, str(into)])
        env = rclone_env(dict(os.environ), "unused", {})
        return Invocation([str(self.ctx.rclone), "copy", run, str(into)], env)

    def count(self, location: Location) -> int:
        return sum(len(files) for _, _, files in os.walk(location.data["path"]))

    def remove(self, location: Location) -> None:
        shutil.rmtree(location.data["path"], ignore_errors=True)
