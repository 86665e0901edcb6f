"""The scheduler daemon that BOSH runs under monit.

Runs ``run_backup`` on the cron schedule. On SIGTERM (or SIGINT) no new run starts, SIGTERM is
forwarded to running child commands so they can trap it and clean up, uploads stop between
files, and the daemon waits for the runs to end before logging
``All backup processes terminated. Exiting``.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger

from .config import BackupConfig
from .cron import ScheduleError, parse_schedule
from .plugins import PluginRegistry
from .processes import ProcessManager
from .run import run_backup

EXIT_OK = 0
EXIT_INVALID = 2


class Daemon:
    def __init__(self, config: BackupConfig, registry: PluginRegistry) -> None:
        self.config = config
        self.registry = registry
        self.processes = ProcessManager()
        self.stop = threading.Event()
        self._signal: int | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum
            self.processes.terminate_all(signal.SIGTERM)
        self.stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _job(self) -> None:
        if self.processes.closing:
            return
        run_backup(self.config, self.registry, self.processes)

    def serve(self) -> int:
        logger.info("Service-backup Started")
        if not self.config.destinations:
            logger.info("No destination provided - skipping backup")
            self.stop.wait()
            logger.info("All backup processes terminated. Exiting")
            return EXIT_OK
        try:
            schedule = parse_schedule(self.config.cron_schedule)
        except ScheduleError as exc:
            logger.bind(error=str(exc)).error("Error scheduling job")
            return EXIT_INVALID

        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = BackgroundScheduler()
        scheduler.add_job(
            self._job,
            schedule.trigger,
            id="backup",
            max_instances=64,  # overlap is exit_if_in_progress's call, not the scheduler's
            coalesce=True,
            misfire_grace_time=60,
        )
        scheduler.start()
        self.stop.wait()
        self.processes.terminate_all(signal.SIGTERM)
        scheduler.shutdown(wait=True)
        logger.info("All backup processes terminated. Exiting")
        return EXIT_OK
