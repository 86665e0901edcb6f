"""The per-run state hooks receive."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    from .config import BackupConfig
    from .processes import ProcessManager


@attrs.define
class RunContext:
    """One backup run: its guid, its single timestamp, and the services hooks may use.

    ``identifier`` is filled in after the ``identify`` hook; ``log`` is a loguru logger bound
    to ``backup_guid`` (and ``identifier`` once known), so every line of the run carries them.
    ``processes`` starts child commands so that SIGTERM reaches them.
    """

    config: BackupConfig
    backup_guid: str
    started_at: datetime.datetime
    processes: ProcessManager
    log: Any
    identifier: str | None = None
    #: Where uploads report bytes and files (a display on a terminal; a no-op otherwise). An
    #: ``upload`` hook that takes over adds its own task and passes ``bind(task)`` to
    #: ``upload_one``.
    progress: ProgressReporter = attrs.field(factory=lambda: NULL_PROGRESS)
    #: Set (on a per-destination copy) while the run stages its files before promoting them
    #: into the dated folder: the upload hook then writes under this prefix instead.
    upload_prefix: str | None = None

    @property
    def date_prefix(self) -> str:
        return self.started_at.strftime("%Y/%m/%d")

    @property
    def run_prefix(self) -> str:
        """``[<deployment>/]YYYY/MM/DD``: the dated folder of this run under each base."""
        cfg = self.config
        if cfg.add_deployment_name_to_backup_path and cfg.deployment_name:
            return f"{cfg.deployment_name.strip('/')}/{self.date_prefix}"
        return self.date_prefix

    @property
    def remote_prefix(self) -> str:
        """Where an upload hook writes this run's files: the dated folder, or its staging area."""
        return self.upload_prefix or self.run_prefix
