"""The default ``upload`` hook: every file through ``Destination.write`` as a core ``Source``.

Files go up ``destination.file_concurrency`` at a time. The ``Source`` checks the bytes as the
destination reads them (short, grown, modified: ``SourceError`` naming the file) and hashes
them in the same pass; the stored size is compared with the listed one. The first failure
stops new files from starting and names the file at fault.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from .config import DestinationSpec
from .destination import Destination
from .errors import BackupError, DestinationError
from .hookspecs import hookimpl
from .progress import NULL_PROGRESS, TaskProgress
from .results import StoredFile, UploadResult
from .source import Source, SourceFile

if TYPE_CHECKING:
    from .context import RunContext

T = TypeVar("T")
_SIZE = operator.attrgetter("size")
_PATH = operator.attrgetter("path")


def check_stored(key: str, stored_size: int, source: Source) -> None:
    """The destination must report exactly the bytes it was given."""
    if stored_size != source.size:
        raise DestinationError(
            f"stored size of {key} is {stored_size} bytes, expected {source.size}: "
            "upload incomplete"
        )


def upload_one(
    destination: Destination, key: str, file: SourceFile, progress: TaskProgress | None = None
) -> StoredFile:
    """Write one file; return what was stored. Raise a BackupError naming the file on failure.

    ``progress`` hears of the bytes as the destination reads them and of the file when done.
    """
    source = Source.from_file(file)
    if progress is not None:
        source.on_read = progress.bytes
    try:
        try:
            info = destination.write(key, source)
        except BackupError:
            raise
        except OSError as exc:
            raise DestinationError(f"writing {key} failed: {exc.strerror or exc}") from None
        check_stored(key, info.size, source)
        stored = StoredFile(file.relative, file.size, source.sha256, file.escaped)
        if progress is not None:
            progress.file_done()
        return stored
    finally:
        source.close()


def run_jobs(
    jobs: Sequence[Callable[[], T]],
    workers: int,
    run: RunContext,
    inline: Sequence[Callable[[], T]] = (),
) -> list[T]:
    """Run upload jobs ``workers`` at a time and return their results in job order.

    The first failure stops jobs that have not started and is raised once the running ones
    end; a daemon shutting down interrupts the upload between jobs. Plugins that take over the
    ``upload`` hook use this too, so every upload stops and fails the same way.

    ``workers`` threads take the next job from a shared counter: one future per file (and a
    wait on 20,000 of them) cost more than the copy of a small file. ``inline`` jobs run one
    after another in the calling thread meanwhile (their results follow those of ``jobs``):
    a job of a few short system calls is slower handed between threads than run in one.
    """
    results: list[T | None] = [None] * (len(jobs) + len(inline))
    errors: list[BaseException] = []
    lock = threading.Lock()
    upcoming = iter(range(len(jobs)))
    processes = run.processes

    def work() -> None:
        while True:
            with lock:
                index = None if errors else next(upcoming, None)
            if index is None:
                return
            try:
                if processes.closing:
                    raise BackupError("upload interrupted: service-backup is shutting down")
                results[index] = jobs[index]()
            except BaseException as exc:  # raised below, in the caller's thread
                with lock:
                    errors.append(exc)
                return

    workers = max(1, min(workers, len(jobs))) if jobs else 0
    threads = [threading.Thread(target=work, name=f"upload_{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    try:
        index = len(jobs)
        for job in inline:
            if errors:  # a worker failed: start nothing more (read without the lock: a list)
                break
            if processes.closing:
                raise BackupError("upload interrupted: service-backup is shutting down")
            results[index] = job()
            index += 1
    except BaseException as exc:
        with lock:
            errors.append(exc)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


@contextmanager
def progress_task(
    run: RunContext, spec: DestinationSpec, files: Sequence[SourceFile]
) -> Iterator[TaskProgress]:
    """This destination's line of the progress display, marked failed if the block raises.

    An ``upload`` hook that takes over passes what this yields to ``upload_one`` (or sets a
    ``Source``'s ``on_read`` to its ``bytes`` and calls ``file_done``) to show its progress.
    """
    task = run.progress.add_task(spec.display_name, sum(map(_SIZE, files)), len(files))
    try:
        yield run.progress.bind(task)
    except BaseException:
        run.progress.finish(task, ok=False)
        raise
    run.progress.finish(task)


def upload_result(
    spec: DestinationSpec, stored: Sequence[StoredFile], started: float
) -> UploadResult:
    """The result every upload hook returns: counts, bytes, duration, stored files by path."""
    ordered = tuple(sorted(stored, key=_PATH))
    return UploadResult(
        destination_name=spec.display_name,
        files=len(ordered),
        size_in_bytes=sum(map(_SIZE, ordered)),
        duration_in_seconds=time.monotonic() - started,
        stored=ordered,
    )


@hookimpl(trylast=True)
def upload(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
) -> UploadResult:
    """Every file through ``upload_one``; small ones in this thread where the destination asks.

    A destination whose ``serial_file_size`` is set (the local one) gets the files up to that
    size one after another from the calling thread, while larger ones go
    ``file_concurrency`` at a time.
    """
    started = time.monotonic()
    prefix = run.remote_prefix
    serial = destination.serial_file_size
    with progress_task(run, spec, files) as progress:
        shown = None if progress.reporter is NULL_PROGRESS else progress
        # One partial per file, built here rather than through a helper: 20,000 files.
        job = functools.partial
        if serial:
            small = [
                job(upload_one, destination, f"{prefix}/{f.relative}", f, shown)
                for f in files
                if f.size <= serial
            ]
            large = [
                job(upload_one, destination, f"{prefix}/{f.relative}", f, shown)
                for f in files
                if f.size > serial
            ]
            stored = run_jobs(large, destination.file_concurrency, run, inline=small)
        else:
            jobs = [job(upload_one, destination, f"{prefix}/{f.relative}", f, shown) for f in files]
            stored = run_jobs(jobs, destination.file_concurrency, run)
    return upload_result(spec, stored, started)
