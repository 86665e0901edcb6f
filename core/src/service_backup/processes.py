"""Child commands (source, cleanup, identifier executables) under the daemon's control.

Each child runs in its own process group so that the daemon can forward SIGTERM to the whole
group on shutdown (the child may trap it and clean up) while a Ctrl-C on a terminal does not
hit children twice. Output is captured, bounded, and returned for debug logging.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from typing import IO

import attrs

from .errors import CommandError

OUTPUT_LIMIT = 64 * 1024


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


class ProcessManager:
    """Starts children, remembers them, and signals them all on shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()
        self._closing = False
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
        with self._lock:
            if self._closing:
                raise CommandError(f"{what} not started: shutting down")
            try:
                child = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE if capture_stdout_separately else subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise CommandError(f"{what}: executable not found: {args[0]}") from None
            except PermissionError:
                raise CommandError(f"{what}: permission denied: {args[0]}") from None
            except OSError as exc:
                raise CommandError(f"{what}: cannot start {args[0]}: {exc.strerror}") from None
            self._children.add(child)
        try:
            output = _read_bounded(child)
            returncode = child.wait()
        finally:
            with self._lock:
                self._children.discard(child)
        result = CommandResult(tuple(args), returncode, output)
        if returncode != 0:
            raise CommandFailed(exit_text(returncode), output)
        return result

    def terminate_all(self, sig: int = signal.SIGTERM) -> int:
        """Refuse new children and send ``sig`` to every running child's process group."""
        with self._lock:
            self._closing = True
            self.stopping.set()
            children = list(self._children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
        return len(children)

    def running(self) -> int:
        with self._lock:
            return len(self._children)


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
