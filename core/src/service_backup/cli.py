"""``service-backup`` and ``manual-backup``.

Exit status: 0 success, 1 the run (or a check) failed, 2 the config is invalid. ``daemon`` and
``backup`` write only JSON log lines to stdout; people-facing text goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from types import FrameType, ModuleType
from typing import TYPE_CHECKING

from . import gc_pause
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import BackupConfig
    from .results import RunResult

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _parser(prog: str = "service-backup", command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command``, only that one of the modular commands.

    Each module of ``COMMAND_MODULES``/``STANDALONE_MODULES`` is imported to declare its
    flags. When the command line names the command first, the others are left out: a
    ``manual-backup`` need not import ``restore`` or ``status`` to parse ``backup CONFIG``, nor
    build the other commands' parsers (about 1M instructions each). Their usage lines, the
    only text of theirs an error could show, are not shown then: ``COMMAND`` is the metavar.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Backups for BOSH-deployed services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str, logs: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("config", metavar="CONFIG", help="path to backup.yml")
        if logs:
            p.add_argument("--syslog", action="store_true", help="also log to the local syslog")
            p.add_argument(
                "--log-level", choices=["debug", "info"], default="debug",
                help="lowest level logged (default: debug)",
            )  # fmt: skip
        return p

    def wanted(name: str) -> bool:
        return command in (None, name)

    if wanted("daemon"):
        with_config("daemon", "run backups on the cron schedule until SIGTERM", logs=True)
    if wanted("backup"):
        backup = with_config("backup", "run one backup now", logs=True)
        backup.add_argument(
            "--no-progress", action="store_true",
            help="no progress display on stderr (it is drawn only when stderr is a terminal)",
        )  # fmt: skip
    if wanted("validate"):
        with_config("validate", "check the config file and exit (0 valid, 2 invalid)")
    if wanted("check"):
        with_config("check", "write, list, read back and delete a probe at every destination")
    if wanted("plugins"):
        sub.add_parser("plugins", help="list installed plugins and destination types")
    if wanted("new-plugin"):
        new = sub.add_parser(
            "new-plugin",
            help="generate a destination plugin package that passes the conformance suite",
            description="generate a destination plugin package that passes the conformance suite",
        )
        new.add_argument("name", metavar="NAME", help="the destination type, e.g. dropbox")
        new.add_argument("--dir", default=".", help="where to create the package (default: here)")
    for name, module in COMMAND_MODULES.items():
        if wanted(name):
            found = importlib.import_module(module)
            found.configure(with_config(name, found.HELP))
    for name, module in STANDALONE_MODULES.items():
        if wanted(name):
            found = importlib.import_module(module)
            found.configure(sub.add_parser(name, help=found.HELP, description=found.HELP))
    return parser


#: Commands that live in a module of their own under ``service_backup.commands``: each has
#: ``HELP``, ``configure(parser)`` (its flags; CONFIG is already there) and ``run(args) -> int``.
COMMAND_MODULES: dict[str, str] = {
    "prune": "service_backup.commands.prune",
    "status": "service_backup.commands.status",
    "list": "service_backup.commands.listing",
    "verify": "service_backup.commands.verify",
    "restore": "service_backup.commands.restore",
}
#: The same for commands that take no CONFIG.
STANDALONE_MODULES: dict[str, str] = {
    "schema": "service_backup.commands.schema",
}
_BUILT_IN = ("daemon", "backup", "validate", "check", "plugins", "new-plugin")
_COMMANDS = frozenset((*_BUILT_IN, *COMMAND_MODULES, *STANDALONE_MODULES))


def _load(path: str, registry: object) -> object:
    from .config import load_config

    return load_config(path, registry)  # type: ignore[arg-type]


def _invalid(path: str, exc: ConfigError, as_log: bool) -> int:
    message = f"invalid config {path}: {exc}"
    if as_log:
        from loguru import logger

        schedule_error = getattr(exc, "schedule_error", None)
        if schedule_error:
            logger.bind(error=schedule_error).error("Error scheduling job")
        logger.bind(error=str(exc)).critical("Invalid configuration")
    print(f"service-backup: {message}", file=sys.stderr)
    return EXIT_INVALID


def cmd_validate(path: str) -> int:
    from .config import load_config
    from .cron import ScheduleError, parse_schedule
    from .plugins import load_registry

    started = time.monotonic()
    try:
        # Hook plugins too: they declare top-level sections (``healthchecks``, ``apprise``)
        # that must be validated here, not first at 3 a.m. Their modules import nothing heavy.
        config = load_config(path, load_registry())
    except ConfigError as exc:
        return _invalid(path, exc, as_log=False)
    if config.destinations:
        try:
            parse_schedule(config.cron_schedule)
        except ScheduleError as exc:
            error = ConfigError(f"cron_schedule: {exc}. {config.missing_properties_message}")
            return _invalid(path, error, as_log=False)
    kinds = ", ".join(f"{d.display_name} ({d.type})" for d in config.destinations) or "none"
    print(f"{path}: valid; destinations: {kinds}; schedule: {config.cron_schedule or '-'}"
          f" ({time.monotonic() - started:.2f}s)")  # fmt: skip
    return EXIT_OK


def cmd_plugins() -> int:
    """Every installed plugin, imported on its own: exit 1 when any is broken."""
    from .plugin_report import inspect_plugins

    reports = inspect_plugins()
    print(f"{'GROUP':<22} {'NAME':<18} {'DISTRIBUTION':<26} {'VERSION':<10} {'TYPES':<8} HOOKS")
    for report in reports:
        info = report.info
        types = ",".join(report.types) or "-"
        hooks = ",".join(h for h in report.hooks if h != "destination_types") or "-"
        print(
            f"{info.group:<22} {info.name:<18} {info.distribution:<26} {info.version:<10} "
            f"{types:<8} {hooks}"
        )
        if report.problem:
            print(f"  BROKEN ({info.group} = {info.module}): {report.problem}")
    broken = [r for r in reports if r.problem]
    if broken:
        print(f"{len(broken)} broken plugin(s)", file=sys.stderr)
    return EXIT_FAILED if broken else EXIT_OK


def cmd_new_plugin(name: str, folder: str) -> int:
    from pathlib import Path

    from .scaffold import generate

    try:
        root = generate(name, Path(folder))
    except ConfigError as exc:
        print(f"service-backup: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"created {root}: uv pip install -e '{root}[test]' && python -m pytest {root}/tests")
    return EXIT_OK


def cmd_check(path: str) -> int:
    from .check import check_all
    from .plugins import load_registry

    registry = load_registry()  # hook plugins declare config sections; no hook is called
    try:
        config = _load(path, registry)
    except ConfigError as exc:
        return _invalid(path, exc, as_log=False)
    gc_pause.done()
    results = check_all(config, registry)  # type: ignore[arg-type]
    if not results:
        print("no destinations configured: nothing to check")
    for result in results:
        status = "ok  " if result.ok else "FAIL"
        print(f"{status} {result.destination_name} ({result.type}): {result.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_backup(path: str, progress: bool = True) -> int:
    """One run of the daemon's pipeline, now."""
    from .plugins import load_registry
    from .processes import ProcessManager
    from .progress import progress_display
    from .results import RunResult
    from .run import run_backup

    try:
        registry = load_registry()
        config = _load(path, registry)
    except ConfigError as exc:
        return _invalid(path, exc, as_log=True)
    if not config.destinations:  # type: ignore[attr-defined]
        from loguru import logger

        logger.info("No destination provided - skipping backup")
        return EXIT_OK
    gc_pause.done()  # the run's own garbage is collected; what exists now lives to the end
    import signal  # here: only ``backup`` forwards signals (an enum module: 3M instructions)

    processes = ProcessManager()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not processes.closing:
            processes.shutdown(signal.SIGTERM)  # SIGKILL after the grace

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    started = time.time()
    result = RunResult("", ok=False, error="unexpected error")  # what a crash counts as
    try:
        with progress_display(enabled=progress) as reporter:
            result = run_backup(config, registry, processes, progress=reporter)  # type: ignore[arg-type]
    finally:
        _record_metrics(config, result, started)  # type: ignore[arg-type]
    return EXIT_OK if result.ok else EXIT_FAILED


def _record_metrics(config: BackupConfig, result: RunResult, started: float) -> None:
    """A manual run (rejected ones too) updates the textfile the daemon's runs update."""
    if config.metrics is None or not config.metrics.textfile.strip():
        return  # nothing to write; prometheus_client is not even imported
    from .metrics import Metrics

    Metrics(config).record(result, started)


def cmd_daemon(path: str) -> int:
    from .daemon import Daemon
    from .plugins import load_registry

    try:
        registry = load_registry()
        config = _load(path, registry)
    except ConfigError as exc:
        return _invalid(path, exc, as_log=True)
    gc_pause.done()
    daemon = Daemon(config, registry)  # type: ignore[arg-type]
    daemon.install_signal_handlers()
    return daemon.serve()


def main(
    argv: list[str] | None = None,
    prog: str = "service-backup",
    *,
    whole_process: bool | None = None,
) -> int:
    """The command line; ``whole_process`` (default: when ``argv`` is None, as the script runs
    it) says that the process ends when this returns, so what it froze need not be thawed."""
    words = sys.argv[1:] if argv is None else argv
    # A known command named first (not after ``-h``, whose help lists them all, and not a
    # misspelt one, whose error lists them all too).
    first = words[0] if words and words[0] in _COMMANDS else None
    # Every command is a process of its own: the objects its start-up makes (modules, classes,
    # the config) are never garbage, and walking them in the collections their creation
    # triggers, and again in the collection at exit, was a tenth of a start-up. The collector
    # waits until they exist, then leaves them out (``gc_pause``).
    with gc_pause.paused(whole_process=argv is None if whole_process is None else whole_process):
        args = _parser(prog, command=first).parse_args(argv)
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("daemon", "backup"):
        logs = _import_logs()
        stream = None
        if args.command == "backup":  # a progress display on the terminal may take stdout
            from .progress import CurrentStdout

            stream = CurrentStdout()
        logs.configure(debug=args.log_level == "debug", syslog=args.syslog, stream=stream)  # type: ignore[arg-type]
    try:
        if args.command in COMMAND_MODULES:
            return int(importlib.import_module(COMMAND_MODULES[args.command]).run(args))
        if args.command in STANDALONE_MODULES:
            return int(importlib.import_module(STANDALONE_MODULES[args.command]).run(args))
        if args.command == "validate":
            return cmd_validate(args.config)
        if args.command == "plugins":
            return cmd_plugins()
        if args.command == "new-plugin":
            return cmd_new_plugin(args.name, args.dir)
        if args.command == "check":
            return cmd_check(args.config)
        if args.command == "backup":
            return cmd_backup(args.config, progress=not args.no_progress)
        return cmd_daemon(args.config)
    except ConfigError as exc:  # e.g. a plugin that fails to import
        return _invalid(
            getattr(args, "config", "-"), exc, as_log=args.command in ("daemon", "backup")
        )
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as exc:  # the seed's "Error running": one line, no traceback
        from loguru import logger

        from .secret import LOG_SCRUBBER

        text = LOG_SCRUBBER(" ".join(f"{type(exc).__name__}: {exc}".split()))
        logger.bind(error=text).critical("Error running")
        print(f"service-backup: unexpected error: {text}", file=sys.stderr)
        return EXIT_FAILED


def _import_logs() -> ModuleType:
    """``service_backup.logs``, loguru without the stderr handler it adds when imported.

    ``logs.configure`` removes that handler at once; building it (loguru's exception formatter
    asks ``sysconfig`` for every install scheme's paths) was a few per cent of a run's start-up.
    ``LOGURU_AUTOINIT`` (loguru's documented switch) is set only while loguru is imported:
    the commands a run starts see the environment as it was.
    """
    import os

    if "loguru" in sys.modules:
        from . import logs

        return logs
    previous = os.environ.get("LOGURU_AUTOINIT")
    os.environ["LOGURU_AUTOINIT"] = "False"
    try:
        from . import logs
    finally:
        if previous is None:
            del os.environ["LOGURU_AUTOINIT"]
        else:
            os.environ["LOGURU_AUTOINIT"] = previous
    return logs


def manual_backup() -> int:
    """``manual-backup CONFIG``: the same as ``service-backup backup CONFIG``."""
    return main(["backup", *sys.argv[1:]], prog="manual-backup", whole_process=True)


if __name__ == "__main__":
    sys.exit(main())
