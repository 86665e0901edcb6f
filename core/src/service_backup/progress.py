"""A progress display for people at a terminal: bytes per destination, rate, ETA, files.

``backup``/``manual-backup`` (and ``restore``) draw it on **stderr**, and only when stderr is a
terminal: stdout carries JSON log lines and nothing else, and a pipe or a log file must never
receive control characters. Code that moves bytes talks to a ``ProgressReporter``:

    with progress_display(enabled=not args.no_progress) as reporter:
        task = reporter.add_task("primary", total_bytes=..., total_files=...)
        reporter.advance(task, bytes=n)      # from any thread, as often as bytes move
        reporter.advance(task, files=1)      # a file is done
        reporter.finish(task, ok=True)

When no display is drawn the reporter is a ``NullProgress`` whose calls cost nothing, so
callers never ask whether anyone is watching. Calls to rich are throttled: uploads report
every read, the screen needs a few updates a second.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import attrs


class ProgressReporter:
    """Where byte and file counts go. This base class is the no-op ``NullProgress``."""

    def add_task(self, name: str, total_bytes: int, total_files: int) -> int:
        """A new line of the display; returns the id to pass to ``advance``/``finish``."""
        return 0

    def advance(self, task: int, bytes: int = 0, files: int = 0) -> None:
        """``bytes`` more moved, ``files`` more done. Thread-safe."""

    def finish(self, task: int, ok: bool = True) -> None:
        """The task ended (``ok=False``: it failed; the line says so)."""

    def bind(self, task: int) -> TaskProgress:
        return TaskProgress(self, task)


NullProgress = ProgressReporter
NULL_PROGRESS = NullProgress()


@attrs.frozen
class TaskProgress:
    """One task of a reporter, handed to code that moves one destination's bytes."""

    reporter: ProgressReporter
    task: int

    def bytes(self, count: int) -> None:
        self.reporter.advance(self.task, bytes=count)

    def file_done(self) -> None:
        self.reporter.advance(self.task, files=1)


@attrs.define
class _Counts:
    rich_id: Any
    name: str
    total_files: int
    bytes: int = 0
    files: int = 0
    pushed_at: float = 0.0


class RichProgress(ProgressReporter):
    """Counts per task under a lock; rich hears about them at most ``interval`` apart."""

    def __init__(self, progress: Any, interval: float = 0.1) -> None:
        self._progress = progress
        self._interval = interval
        self._lock = threading.Lock()
        self._tasks: dict[int, _Counts] = {}

    def add_task(self, name: str, total_bytes: int, total_files: int) -> int:
        with self._lock:
            rich_id = self._progress.add_task(
                _plain(name), total=total_bytes, files_done=0, files_total=total_files
            )
            task = len(self._tasks) + 1
            self._tasks[task] = _Counts(rich_id, name, total_files)
        return task

    def advance(self, task: int, bytes: int = 0, files: int = 0) -> None:
        with self._lock:
            counts = self._tasks.get(task)
            if counts is None:
                return
            counts.bytes += bytes
            counts.files += files
            now = time.monotonic()
            if not files and now - counts.pushed_at < self._interval:
                return
            counts.pushed_at = now
            self._push(counts)

    def finish(self, task: int, ok: bool = True) -> None:
        with self._lock:
            counts = self._tasks.get(task)
            if counts is None:
                return
            self._push(counts)
            if not ok:
                self._progress.update(
                    counts.rich_id, description=f"{_plain(counts.name)} [red]failed"
                )
            self._progress.stop_task(counts.rich_id)

    def _push(self, counts: _Counts) -> None:
        self._progress.update(counts.rich_id, completed=counts.bytes, files_done=counts.files)


def _plain(name: str) -> str:
    """A destination name shown as written (``local[1]``), never read as rich markup."""
    from rich.markup import escape

    return escape(name)


class CurrentStdout:
    """A stream that writes to ``sys.stdout`` as it is at each write, not as it was when a log
    sink was created: a display sharing the terminal swaps ``sys.stdout`` while drawn."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return is_terminal(sys.stdout)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_display(
    enabled: bool = True, stream: IO[str] | None = None
) -> Iterator[ProgressReporter]:
    """Yield a reporter drawing on ``stream`` (stderr) when it is a terminal, else a no-op one.

    stdout is left alone when it is not the terminal (a pipe, a file: it gets the JSON lines
    and nothing else). When stdout is a terminal too, the lines written to ``sys.stdout``
    while the display is drawn are printed above it, so they do not tear through it: log
    sinks must write to ``CurrentStdout()`` for that. The display stays on screen when done.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled or not is_terminal(stream):
        yield NULL_PROGRESS
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=stream, stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[files_done]}/{task.fields[files_total]} files"),
        console=console,
        redirect_stdout=False,
        redirect_stderr=False,
        refresh_per_second=4,
    )
    shared = is_terminal(sys.stdout)
    saved = sys.stdout
    with progress:
        if shared:
            sys.stdout = _LinesAbove(console, saved)
        try:
            yield RichProgress(progress)
        finally:
            sys.stdout = saved


class _LinesAbove(io.TextIOBase):
    """``sys.stdout`` while a display is drawn on the same terminal: whole lines are printed
    above the display, unchanged (no markup, no wrapping: the terminal wraps them)."""

    def __init__(self, console: Any, original: IO[str]) -> None:
        super().__init__()
        self._console = console
        self._original = original
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        from rich.text import Text

        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._console.print(Text(line), soft_wrap=True, highlight=False)
        return len(text)

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._original.fileno()


__all__ = [
    "NULL_PROGRESS",
    "CurrentStdout",
    "NullProgress",
    "ProgressReporter",
    "RichProgress",
    "TaskProgress",
    "is_terminal",
    "progress_display",
]
