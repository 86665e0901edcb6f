"""Child commands (source, cleanup, identifier executables) under the daemon's control.

Each child runs in its own process group (and session) so that the daemon can forward SIGTERM
to the whole group on shutdown (the child may trap it and clean up) while a Ctrl-C on a
terminal does not hit children twice. Output is captured, bounded, and returned for debug
logging.

Bounds, so that no child outlives its purpose:

- Shutdown: SIGTERM first; a group still alive ``KILL_GRACE`` seconds later gets SIGKILL. The
  grace fits BOSH's drain, which escalates after 15 s (see docs/reliability.md).
- Parent death: on Linux each child asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``), so a SIGKILLed daemon does not leave its prepare command running.
  Grandchildren are not covered by that, so each group is also recorded in the private lock
  folder (``guard.private_dir``); before starting a child, the groups recorded by a process
  that is gone are killed. A restarted daemon therefore never runs a second prepare beside
  an orphan of the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

from .errors import CommandError

OUTPUT_LIMIT = 64 * 1024
#: Seconds between SIGTERM and SIGKILL on shutdown: inside BOSH's 15 s drain window, with
#: room left for the run to log its end.
KILL_GRACE = 10.0
#: The environment variable that marks every process a child command starts (its value is
#: the record's token), so that an orphaned group is recognised without trusting pids alone.
CHILD_MARK = "SERVICE_BACKUP_CHILD"
_PR_SET_PDEATHSIG = 1


@attrs.frozen
class CommandResult:
    args: tuple[str, ...]
    returncode: int
    output: str

    @property
    def stdout(self) -> str:
        return self.output


class CommandFailed(CommandError):
    """A command that ran and failed. ``str()`` is Go's wording (``exit status 1``), which the
    run's error line and alerts carry; ``output`` is what it printed (the last OUTPUT_LIMIT
    bytes), for the log line that tells an operator why."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def split_command(command: str) -> list[str]:
    """Tokens split on spaces, as the seed says: first is the command, the rest its arguments."""
    return [token for token in command.split(" ") if token]


def exit_text(returncode: int) -> str:
    """Go's ``exec.ExitError`` wording: ``exit status 1`` or ``signal: terminated``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"signal: {-returncode}"
    words = {"SIGTERM": "terminated", "SIGKILL": "killed", "SIGINT": "interrupt"}
    return f"signal: {words.get(name, name.lower())}"


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies.

    Everything is resolved before the fork; in the child it is one ``prctl`` call and one
    ``getppid`` (no allocation, no lock), which is what makes it safe in a threaded parent.
    Note the kernel's rule: the signal comes when the *thread* that started the child ends;
    runs start their children from the thread that waits for them, so that is the same.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = ctypes.c_ulong(signal.SIGKILL)
    option = ctypes.c_int(_PR_SET_PDEATHSIG)
    getppid = os.getppid
    exit_now = os._exit

    def die_with_parent() -> None:
        prctl(option, kill)
        if getppid() != parent:  # the parent died before the request took effect
            exit_now(1)

    return die_with_parent


class ProcessManager:
    """Starts children, remembers them, and signals them all on shutdown."""

    def __init__(self, *, grace: float = KILL_GRACE, records: Path | None = None) -> None:
        # Re-entrant: the signal handler (terminate_all) runs in the main thread, possibly
        # while that thread is inside ``run`` holding the lock around Popen.
        self._lock = threading.RLock()
        self._children: set[subprocess.Popen[bytes]] = set()
        self._closing = False
        self.grace = grace
        self._records = records
        self._die_with_parent = _die_with_parent_hook()
        #: Set when shutdown begins: destinations abort in-flight transfers when it is set.
        self.stopping = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing

    def run(
        self, command: str, *, what: str, capture_stdout_separately: bool = False
    ) -> CommandResult:
        """Run ``command`` to completion; raise CommandError on failure.

        ``what`` names the config key (``source_executable``) for messages. With
        ``capture_stdout_separately`` stderr is not mixed into the returned output (the
        identifier executable's stdout is its answer).
        """
        args = split_command(command)
        if not args:
            raise CommandError(f"{what} is empty")
        records = self._record_dir()
        if records is not None:
            kill_orphans(records)
        token = uuid.uuid4().hex
        with self._lock:
            if self._closing:
                raise CommandError(f"{what} not started: interrupted by shutdown")
            try:
                child = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE if capture_stdout_separately else subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, CHILD_MARK: token},
                    preexec_fn=self._die_with_parent,  # one prctl: see _die_with_parent_hook
                )
            except FileNotFoundError:
                raise CommandError(f"{what}: executable not found: {args[0]}") from None
            except PermissionError:
                raise CommandError(f"{what}: permission denied: {args[0]}") from None
            except OSError as exc:
                raise CommandError(f"{what}: cannot start {args[0]}: {exc.strerror}") from None
            self._children.add(child)
            started_while_closing = self._closing
        if started_while_closing:  # shutdown began inside Popen: this child missed the signal
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
        record = _write_record(records, token, child.pid, what) if records else None
        try:
            output = _read_bounded(child)
            returncode = child.wait()
        finally:
            with self._lock:
                self._children.discard(child)
            if record is not None:
                with contextlib.suppress(OSError):
                    record.unlink()
        result = CommandResult(tuple(args), returncode, output)
        if returncode != 0:
            if self._closing:
                raise CommandFailed(
                    f"{what} interrupted by shutdown ({exit_text(returncode)})", output
                )
            raise CommandFailed(exit_text(returncode), output)
        return result

    def _record_dir(self) -> Path | None:
        """The private folder for child records, or None when it cannot be used.

        The guard reports an unusable lock folder when ``exit_if_in_progress`` needs it; here
        its absence only costs the orphan check.
        """
        from .guard import LockError, private_dir

        try:
            return private_dir(self._records)
        except LockError:
            return None

    def terminate_all(self, sig: int = signal.SIGTERM) -> int:
        """Refuse new children and send ``sig`` to every running child's process group."""
        with self._lock:
            self._closing = True
            self.stopping.set()
            children = list(self._children)
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, sig)
        return len(children)

    def shutdown(self, sig: int = signal.SIGTERM) -> threading.Thread:
        """``terminate_all(sig)``, then SIGKILL whatever is still running after ``grace``.

        Returns the (daemon) thread that escalates; it ends as soon as no child is left.
        """
        self.terminate_all(sig)
        escalate = threading.Thread(target=self._escalate, name="kill-after-grace", daemon=True)
        escalate.start()
        return escalate

    def _escalate(self) -> None:
        import time

        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if not self.running():
                return
            time.sleep(0.05)
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)

    def running(self) -> int:
        with self._lock:
            return len(self._children)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid: its identity)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _write_record(folder: Path, token: str, pid: int, what: str) -> Path | None:
    path = folder / f"child-{token}.json"
    record = {
        "token": token,
        "pgid": pid,
        "what": what,
        "owner": os.getpid(),
        "owner_start": _start_time(os.getpid()),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "w") as handle:
            json.dump(record, handle)
    except OSError:
        return None
    return path


def _marked_pids(token: str) -> list[int]:
    """Every process whose environment carries this record's mark (ours only are readable)."""
    mark = f"{CHILD_MARK}={token}".encode() + b"\0"
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if mark in handle.read() + b"\0":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_orphans(folder: Path) -> list[dict[str, Any]]:
    """SIGKILL the child groups recorded by a service-backup process that is gone.

    A record whose owner still runs (the daemon, while a manual backup checks) is left alone.
    Returns the records acted on; each is logged.
    """
    from loguru import logger

    acted = []
    for path in sorted(folder.glob("child-*.json")):
        try:
            record = json.loads(path.read_text())
            token, owner = str(record["token"]), int(record["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if owner == os.getpid() or (
            _start_time(owner) is not None and _start_time(owner) == record.get("owner_start")
        ):
            continue
        pids = _marked_pids(token)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            logger.bind(
                error=f"{record.get('what', 'child command')} (process group "
                f"{record.get('pgid')}) outlived service-backup process {owner}",
                pids=pids,
            ).error("Killed an orphaned child command of an earlier service-backup process")
            acted.append(record)
        with contextlib.suppress(OSError):
            path.unlink()
    return acted


def _drain(stream: IO[bytes]) -> None:
    while stream.read(65536):
        pass
    stream.close()


def _read_bounded(child: subprocess.Popen[bytes]) -> str:
    """Drain the child's pipes, keeping the last OUTPUT_LIMIT bytes of stdout."""
    tail: deque[bytes] = deque()
    kept = 0
    err_thread = None
    if child.stderr is not None:
        # Drain stderr too so a chatty child never blocks; it is not part of the answer.
        err_thread = threading.Thread(target=_drain, args=(child.stderr,), daemon=True)
        err_thread.start()
    assert child.stdout is not None
    while chunk := child.stdout.read(8192):
        tail.append(chunk)
        kept += len(chunk)
        while kept - len(tail[0]) >= OUTPUT_LIMIT and len(tail) > 1:
            kept -= len(tail.popleft())
    child.stdout.close()
    if err_thread is not None:
        err_thread.join()
    return b"".join(tail)[-OUTPUT_LIMIT:].decode("utf-8", "replace")


__all__ = ["CommandFailed", "CommandResult", "ProcessManager", "exit_text", "split_command"]
