"""The scheduler daemon that BOSH runs under monit.

Runs ``run_backup`` on the cron schedule. On SIGTERM (or SIGINT) no new run starts, SIGTERM is
forwarded to running child commands so they can trap it and clean up, uploads stop between
files, and the daemon waits for the runs to end before logging
``All backup processes terminated. Exiting``.

Every wait is bounded so that the daemon leaves inside BOSH's drain window (15 s before the
drain escalates): children still running ``KILL_GRACE`` seconds after SIGTERM are killed, a run
cut short sends no alert, and if a run has still not returned ``SHUTDOWN_DEADLINE`` seconds
after the signal the daemon logs it and exits anyway (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger

from .config import BackupConfig
from .cron import ScheduleError, parse_schedule
from .plugins import PluginRegistry
from .processes import KILL_GRACE, ProcessManager, kill_orphans
from .run import run_backup

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
#: Seconds from the signal to the daemon's exit, at most: the grace, then time for the runs to
#: log their end, still short of the drain's 15 s.
SHUTDOWN_DEADLINE = KILL_GRACE + 3.0


class Daemon:
    def __init__(
        self,
        config: BackupConfig,
        registry: PluginRegistry,
        *,
        grace: float = KILL_GRACE,
        deadline: float = SHUTDOWN_DEADLINE,
    ) -> None:
        self.config = config
        self.registry = registry
        self.processes = ProcessManager(grace=grace)
        self.deadline = deadline
        self.stop = threading.Event()
        self._signal: int | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum
            self.processes.shutdown(signal.SIGTERM)
        self.stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _job(self) -> None:
        if self.processes.closing:
            return
        try:
            run_backup(self.config, self.registry, self.processes)
        except BaseException as exc:  # run_backup never raises; this is the last net
            logger.bind(error=f"{type(exc).__name__}: {exc}").error(
                "Perform backup completed with error"
            )

    def _sweep_orphans(self) -> None:
        """Kill what a SIGKILLed predecessor left running, before the first run starts."""
        record_dir = self.processes._record_dir()
        if record_dir is not None:
            kill_orphans(record_dir)

    def serve(self) -> int:
        logger.info("Service-backup Started")
        if not self.config.destinations:
            logger.info("No destination provided - skipping backup")
            self.stop.wait()
            logger.info("All backup processes terminated. Exiting")
            return EXIT_OK
        try:
            schedule = self.config.schedule or parse_schedule(self.config.cron_schedule)
        except ScheduleError as exc:
            logger.bind(error=str(exc)).error("Error scheduling job")
            return EXIT_INVALID
        self._sweep_orphans()

        logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
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
        if not self.processes.closing:
            self.processes.shutdown(signal.SIGTERM)
        stopped = threading.Thread(
            target=scheduler.shutdown, kwargs={"wait": True}, name="scheduler-shutdown", daemon=True
        )
        stopped.start()
        stopped.join(self.deadline)
        if stopped.is_alive():
            logger.bind(error=f"a run was still busy {self.deadline:g}s after the signal").error(
                "Shutdown deadline reached, exiting without waiting for the run"
            )
            sys.stdout.flush()
            os._exit(EXIT_FAILED)  # worker threads cannot be interrupted; leave now
        logger.info("All backup processes terminated. Exiting")
        return EXIT_OK
