"""Command hooks: the seed's ``source_executable``, ``cleanup_executable`` and
``service_identifier_executable``, run without a shell, tokens split on spaces.

A command's output is what tells an operator why it failed, so a failing command logs it at
error level (the end of it, where the reason usually is) beside the error; a successful one
logs it at debug level. Both are scrubbed of every secret in the config first: a dump script
that echoes its connection string must not put a password in the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from service_backup.hookspecs import hookimpl
from service_backup.secret import scrub, secret_field_values

# Hook plugins are imported by every command (``restore`` too): the process manager (ctypes,
# subprocess) and the run context are imported by the run that calls these hooks.
if TYPE_CHECKING:
    from service_backup.config import BackupConfig
    from service_backup.context import RunContext

#: Characters of a failing command's output in its error line: the end, where errors are.
ERROR_OUTPUT_LIMIT: Final = 4096


def _run(run: RunContext, command: str, what: str, separate_stderr: bool = False) -> str:
    from service_backup.processes import CommandFailed

    secrets = secret_field_values(run.config)
    shown = scrub(command, secrets)
    try:
        result = run.processes.run(command, what=what, capture_stdout_separately=separate_stderr)
    except CommandFailed as exc:
        # Scrub the whole output before cutting it: a secret cut in half would slip through.
        output = scrub(exc.output, secrets)[-ERROR_OUTPUT_LIMIT:]
        run.log.bind(cmd=shown, out=output, error=str(exc)).error(f"{what} failed")
        raise
    run.log.bind(cmd=shown, out=scrub(result.output, secrets)).debug(f"{what} debug info")
    return result.output


@hookimpl
def identify(config: BackupConfig, run: RunContext) -> str | None:
    if not config.service_identifier_executable:
        return None
    output = _run(run, config.service_identifier_executable, "service_identifier_executable", True)
    return output.strip() or None


@hookimpl
def prepare(config: BackupConfig, run: RunContext) -> None:
    if config.source_executable:
        _run(run, config.source_executable, "source_executable")


@hookimpl
def cleanup(config: BackupConfig, run: RunContext) -> None:
    if config.cleanup_executable:
        _run(run, config.cleanup_executable, "cleanup_executable")
