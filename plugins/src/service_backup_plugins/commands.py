"""Command hooks: the seed's ``source_executable``, ``cleanup_executable`` and
``service_identifier_executable``, run without a shell, tokens split on spaces."""

from __future__ import annotations

from service_backup.config import BackupConfig
from service_backup.context import RunContext
from service_backup.hookspecs import hookimpl


def _run(run: RunContext, command: str, what: str, separate_stderr: bool = False) -> str:
    result = run.processes.run(command, what=what, capture_stdout_separately=separate_stderr)
    run.log.bind(cmd=command, out=result.output).debug(f"{what} debug info")
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
