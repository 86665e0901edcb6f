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
import time
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger

from .config import BackupConfig
from .cron import ScheduleError, parse_schedule
from .metrics import Metrics
from .plugins import PluginRegistry
from .processes import KILL_GRACE, ProcessManager, kill_orphans
from .results import RunResult
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
        self._scheduler: BackgroundScheduler | None = None
        self.metrics: Metrics | None = None

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
        started = time.time()
        result = RunResult("", ok=False, error="unexpected error")  # what a crash counts as
        try:
            result = run_backup(self.config, self.registry, self.processes)
        except BaseException as exc:  # run_backup never raises; this is the last net
            logger.bind(error=f"{type(exc).__name__}: {exc}").error(
                "Perform backup completed with error"
            )
        finally:
            if self.metrics is not None:
                self.metrics.record(result, started)

    def _next_run(self) -> float | None:
        """When the scheduler fires next (Unix time), for ``..._next_run_timestamp_seconds``."""
        job = self._scheduler.get_job("backup") if self._scheduler is not None else None
        when = getattr(job, "next_run_time", None)
        return when.timestamp() if when is not None else None

    def _start_metrics(self) -> None:
        """``/metrics`` served before the first run can happen.

        An endpoint that cannot be bound is logged, and backups go on: they matter more.
        """
        if self.config.metrics is None:
            return
        self.metrics = Metrics(self.config, next_run=self._next_run)
        try:
            self.metrics.serve()
        except OSError as exc:
            logger.bind(error=f"{self.config.metrics.listen}: {exc.strerror or exc}").error(
                "Metrics endpoint could not be started"
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
        self._start_metrics()
        scheduler = self._scheduler = BackgroundScheduler()
        scheduler.add_job(
            self._job,
            schedule.trigger,
            id="backup",
            max_instances=64,  # overlap is exit_if_in_progress's call, not the scheduler's
            coalesce=True,
            misfire_grace_time=60,
        )
        scheduler.start()
        if self.metrics is not None:
            self.metrics.write()  # the next run's time is known now
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
        if self.metrics is not None:
            self.metrics.close()
        logger.info("All backup processes terminated. Exiting")
        return EXIT_OK
