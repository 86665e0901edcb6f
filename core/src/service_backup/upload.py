"""The default ``upload`` hook: stream every file through ``Destination.write``.

Files go up ``destination.file_concurrency`` at a time; each stored size is compared with the
bytes actually read, so a file that changed or a backend that truncated fails loudly. The
first failure stops new files from starting and names the file at fault.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from .config import DestinationSpec
from .context import RunContext
from .destination import Destination
from .errors import BackupError, DestinationError, SourceError
from .hookspecs import hookimpl
from .results import UploadResult
from .source import SourceFile


class SourceReader(io.RawIOBase):
    """A source file as destinations read it, with read errors blamed on the source.

    Socket errors inside an SDK are ``OSError`` too; wrapping the file keeps a failing disk
    (``source file … cannot be read``) apart from a failing destination.
    """

    def __init__(self, file: SourceFile, raw: io.BufferedReader) -> None:
        self.file = file
        self._raw = raw

    def _failed(self, exc: OSError) -> SourceError:
        return SourceError(f"cannot read source file {self.file.path}: {exc.strerror or exc}")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._raw.readinto(buffer)
        except OSError as exc:
            raise self._failed(exc) from None

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._raw.read(-1 if size is None else size)
        except OSError as exc:
            raise self._failed(exc) from None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def open_source(file: SourceFile) -> Iterator[SourceReader]:
    """Open a source file, turning OS errors into a one-line SourceError naming it."""
    try:
        raw = open(file.path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise SourceError(f"source file {file.path} vanished during the run") from None
    except OSError as exc:
        raise SourceError(f"cannot read source file {file.path}: {exc.strerror}") from None
    reader = SourceReader(file, raw)
    try:
        yield reader
    finally:
        reader.close()


def upload_one(destination: Destination, key: str, file: SourceFile) -> int:
    """Write one file; return its size. Raise a BackupError naming the file on any failure."""
    with open_source(file) as handle:
        try:
            info = destination.write(key, handle, file.size)  # type: ignore[arg-type]
        except BackupError:
            raise
        except OSError as exc:
            raise DestinationError(f"writing {key} failed: {exc.strerror or exc}") from None
        now = os.fstat(handle.fileno()).st_size
    if now != file.size:
        raise SourceError(
            f"source file {file.path} changed size during the run "
            f"({file.size} bytes when listed, {now} after upload)"
        )
    if info.size != file.size:
        raise DestinationError(
            f"stored size of {key} is {info.size} bytes, expected {file.size}: upload incomplete"
        )
    return file.size


def run_jobs(jobs: Sequence[Callable[[], int]], workers: int, run: RunContext) -> int:
    """Run upload jobs ``workers`` at a time and return the sum of what they return (bytes).

    The first failure stops jobs that have not started and is raised once the running ones
    end; a daemon shutting down interrupts the upload between jobs. Plugins that take over the
    ``upload`` hook use this too, so every upload stops and fails the same way.
    """
    stop = threading.Event()

    def guarded(job: Callable[[], int]) -> int:
        if stop.is_set():
            return 0
        if run.processes.closing:
            raise BackupError("upload interrupted: service-backup is shutting down")
        return job()

    workers = max(1, min(workers, len(jobs) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload") as pool:
        futures = [pool.submit(guarded, job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            stop.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise errors[0]  # type: ignore[misc]
        return sum(f.result() for f in futures)


@hookimpl(trylast=True)
def upload(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
) -> UploadResult:
    started = time.monotonic()
    prefix = run.remote_prefix
    jobs = [functools.partial(upload_one, destination, f"{prefix}/{f.relative}", f) for f in files]
    total = run_jobs(jobs, destination.file_concurrency, run)
    return UploadResult(
        destination_name=spec.display_name,
        files=len(files),
        size_in_bytes=total,
        duration_in_seconds=time.monotonic() - started,
    )
