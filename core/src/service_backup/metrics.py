"""Prometheus metrics: the node_exporter textfile after every run, and the daemon's ``/metrics``.

An operator with 500 instances reads numbers, not logs. The names and labels are a contract
(DESIGN Part 2, "Observability"); alert rules are written against them.

The state lives in one small value (``MetricsState``) that a custom collector turns into
metric families on every scrape or write, through prometheus-client's own registry and text
format. A run may be recorded by the daemon or by a separate ``manual-backup`` process, so
before recording, the state is re-read from the textfile: the counters then count every run
on the VM, and ``..._last_success_timestamp_seconds`` still says when a destination last
succeeded after a manual run that failed. The textfile is replaced atomically (a temporary
file in the same folder, then a rename), under an advisory lock on that folder.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
from loguru import logger
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .config import BackupConfig
from .manifest import MANIFEST_NAME
from .results import RunResult, UploadResult

PREFIX: Final = "service_backup_"
RESULTS: Final = ("success", "failure", "rejected")


@attrs.define
class DestinationState:
    """One destination's numbers; None = never known (the sample is left out, not faked as 0)."""

    last_run_success: float | None = None
    last_success_timestamp: float | None = None
    last_run_bytes: float | None = None
    last_run_files: float | None = None


@attrs.define
class MetricsState:
    """Everything exported, as plain numbers."""

    last_run_timestamp: float | None = None
    last_run_success: float | None = None
    last_run_duration: float | None = None
    destinations: dict[str, DestinationState] = attrs.Factory(dict)
    runs: dict[str, float] = attrs.Factory(lambda: dict.fromkeys(RESULTS, 0.0))
    next_run: float | None = None

    def record(self, result: RunResult, started: float, finished: float) -> None:
        """Apply one run. A rejected run only counts: the run it met will report itself."""
        if result.rejected:
            self.runs["rejected"] = self.runs.get("rejected", 0.0) + 1
            return
        outcome = "success" if result.ok else "failure"
        self.runs[outcome] = self.runs.get(outcome, 0.0) + 1
        self.last_run_timestamp = finished
        self.last_run_success = 1.0 if result.ok else 0.0
        self.last_run_duration = max(0.0, finished - started)
        uploads = {u.destination_name: u for u in result.uploads}
        for name, dest in self.destinations.items():
            upload = uploads.get(name)
            if upload is None:  # failed, or never reached (prepare failed)
                dest.last_run_success, dest.last_run_bytes, dest.last_run_files = 0.0, 0.0, 0.0
                continue
            files, size = _source_counts(upload)
            dest.last_run_success = 1.0
            dest.last_success_timestamp = finished
            dest.last_run_bytes, dest.last_run_files = float(size), float(files)

    @classmethod
    def fresh(cls, destination_names: list[str]) -> MetricsState:
        return cls(destinations={name: DestinationState() for name in destination_names})

    @classmethod
    def parse(cls, text: str, destination_names: list[str]) -> MetricsState:
        """The state a textfile describes, for the destinations configured now.

        Destinations no longer in the config are dropped; ValueError when it is not the
        Prometheus text format.
        """
        state = cls.fresh(destination_names)
        top = {
            "last_run_timestamp_seconds": "last_run_timestamp",
            "last_run_success": "last_run_success",
            "last_run_duration_seconds": "last_run_duration",
            "next_run_timestamp_seconds": "next_run",
        }
        per_destination = {
            "destination_last_run_success": "last_run_success",
            "destination_last_success_timestamp_seconds": "last_success_timestamp",
            "destination_last_run_bytes": "last_run_bytes",
            "destination_last_run_files": "last_run_files",
        }
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name.removeprefix(PREFIX)
                if name in top:
                    setattr(state, top[name], float(sample.value))
                elif name in per_destination:
                    dest = state.destinations.get(sample.labels.get("destination", ""))
                    if dest is not None:
                        setattr(dest, per_destination[name], float(sample.value))
                elif name == "runs_total" and sample.labels.get("result") in RESULTS:
                    state.runs[sample.labels["result"]] = float(sample.value)
        return state


def _source_counts(upload: UploadResult) -> tuple[int, int]:
    """Files and bytes of the source files stored: the run manifest is not a backed-up file."""
    if not upload.stored:
        return upload.files, upload.size_in_bytes
    stored = [s for s in upload.stored if s.path != MANIFEST_NAME]
    return len(stored), sum(s.size for s in stored)


def _identity(path: Path) -> tuple[int, int, int]:
    """Which version of the textfile this is: every rewrite is a new file (rename)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


class _StateCollector(Collector):
    """Turns the current ``MetricsState`` into metric families, at every scrape or write."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        state = self.metrics.snapshot()

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            family = GaugeMetricFamily(PREFIX + name, doc)
            if value is not None:
                family.add_metric([], value)
            yield family

        yield from gauge(
            "last_run_timestamp_seconds",
            "When the last backup run (not a rejected one) finished, as a Unix time.",
            state.last_run_timestamp,
        )
        yield from gauge(
            "last_run_success",
            "1 if the last backup run succeeded at every destination, 0 if it failed.",
            state.last_run_success,
        )
        yield from gauge(
            "last_run_duration_seconds",
            "How long the last backup run took, prepare to cleanup.",
            state.last_run_duration,
        )
        per_destination = (
            ("destination_last_run_success", "last_run_success",
             "1 if the last run's upload to this destination succeeded, else 0."),
            ("destination_last_success_timestamp_seconds", "last_success_timestamp",
             "When a run last finished with a successful upload to this destination."),
            ("destination_last_run_bytes", "last_run_bytes",
             "Bytes of source files the last run uploaded to this destination."),
            ("destination_last_run_files", "last_run_files",
             "Source files the last run uploaded to this destination."),
        )  # fmt: skip
        for name, attribute, doc in per_destination:
            family = GaugeMetricFamily(PREFIX + name, doc, labels=["destination"])
            for destination, values in state.destinations.items():
                value = getattr(values, attribute)
                if value is not None:
                    family.add_metric([destination], value)
            yield family
        runs = CounterMetricFamily(
            PREFIX + "runs",
            "Backup runs by result; rejected = refused by exit_if_in_progress.",
            labels=["result"],
        )
        for result in RESULTS:
            runs.add_metric([result], state.runs.get(result, 0.0))
        yield runs
        if state.next_run is not None:
            yield from gauge(
                "next_run_timestamp_seconds",
                "When the daemon's scheduler will start the next run, as a Unix time.",
                state.next_run,
            )


class Metrics:
    """This process's metrics: record runs, write the textfile, serve ``/metrics``.

    ``next_run`` (the daemon passes its scheduler's) is asked at every scrape and write.
    Nothing here ever fails a backup: an unwritable textfile is logged and skipped.
    """

    def __init__(
        self, config: BackupConfig, next_run: Callable[[], float | None] | None = None
    ) -> None:
        settings = config.metrics
        self.textfile = Path(settings.textfile) if settings and settings.textfile.strip() else None
        self.address = settings.address if settings else None
        self.next_run = next_run
        self._names = [spec.display_name for spec in config.destinations]
        self._lock = threading.RLock()
        self._state = MetricsState.fresh(self._names)
        self._seen: tuple[int, int, int] | None = None  # the textfile last read or written
        self._reload()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(self))
        self._server: Any = None
        self._writing = False

    # ------------------------------------------------------------------ state
    def snapshot(self) -> MetricsState:
        """The state to export; a scrape first takes in what other processes recorded."""
        with self._lock:
            if not self._writing:
                self._reload()
            state = attrs.evolve(
                self._state,
                destinations={k: attrs.evolve(v) for k, v in self._state.destinations.items()},
                runs=dict(self._state.runs),
            )
        if self.next_run is not None:
            state.next_run = self.next_run()
        return state

    def _reload(self) -> None:
        """Take the textfile's state when another process rewrote it since we last looked.

        Only then: if our own write failed, the older file must not undo this process's runs.
        """
        if self.textfile is None:
            return
        try:
            seen = _identity(self.textfile)
            if seen == self._seen:
                return
            text = self.textfile.read_text(encoding="utf-8")
            self._state = MetricsState.parse(text, self._names)
            self._seen = seen
        except (OSError, ValueError, UnicodeDecodeError):
            pass  # none yet, or not ours to read: this process's own state stands

    def record(self, result: RunResult, started: float, finished: float | None = None) -> None:
        """Count one run (Unix times) and rewrite the textfile."""
        finished = time.time() if finished is None else finished
        with self._lock, self._textfile_lock():
            self._reload()
            self._state.record(result, started, finished)
            self._write()

    def write(self) -> None:
        """Rewrite the textfile with the current state (the daemon does so when it starts)."""
        with self._lock, self._textfile_lock():
            self._reload()
            self._write()

    def _write(self) -> None:
        if self.textfile is None:
            return
        self._writing = True
        try:
            write_to_textfile(str(self.textfile), self.registry)
            self._seen = _identity(self.textfile)
        except OSError as exc:
            logger.bind(error=f"{self.textfile}: {exc.strerror or exc}").error(
                "Metrics textfile could not be written"
            )
        finally:
            self._writing = False

    @contextmanager
    def _textfile_lock(self) -> Iterator[None]:
        """An advisory lock on the textfile's folder: the daemon and a manual run take turns.

        The folder, not a lock file beside the textfile: node_exporter's folder stays clean.
        """
        if self.textfile is None:
            yield
            return
        try:
            fd = os.open(self.textfile.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            yield  # the write will fail and say why
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ endpoint
    def serve(self) -> None:
        """Serve ``/metrics`` on ``listen`` (that address only) in a background thread.

        Raises OSError when the address cannot be bound.
        """
        if self.address is None:
            return
        from prometheus_client import start_http_server

        host, port = self.address
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["RESULTS", "DestinationState", "Metrics", "MetricsState"]
