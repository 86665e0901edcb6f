"""What ``list``, ``verify`` and ``restore`` share: the config, the destinations, the output.

These commands only read: they open each destination through its plugin's factory, never
create a bucket or folder, and talk to it through ``list``/``open_read``/``stat`` alone, so a
third-party destination works with no change. Errors shown to people are one line and have
every secret of the config scrubbed out.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import BackupError, one_line

# The CLI imports every command module to build its parser: the config model, the plugin
# registry and the catalog are imported when a command runs, not for every ``service-backup``.
if TYPE_CHECKING:
    from ..catalog import RunFolder
    from ..config import BackupConfig, DestinationSpec
    from ..destination import Destination
    from ..plugins import PluginRegistry

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(BackupError):
    """Bad arguments (an unknown ``--destination``, a target that is not empty): exit 2."""


def load(path: str) -> tuple[BackupConfig, PluginRegistry]:
    """The daemon's config, validated as the daemon validates it (``ConfigError``: exit 2).

    Hook plugins are loaded too: they may declare top-level sections the config uses.
    """
    from .. import gc_pause
    from ..config import load_config
    from ..plugins import load_registry

    registry = load_registry()
    config = load_config(path, registry)
    gc_pause.done()  # start-up is over: the command's own work runs with the collector on
    return config, registry


def parse_date(text: str) -> datetime.date:
    """``--date YYYY-MM-DD`` for argparse (a bad value: its usage error, exit 2)."""
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def add_destination_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--destination", metavar="NAME",
        help=f"only this destination ({what}); NAME as in the config, or TYPE[INDEX] when unnamed",
    )  # fmt: skip


def select(config: BackupConfig, name: str | None) -> list[DestinationSpec]:
    """Every destination in config order, or the one ``--destination`` names."""
    if name is None:
        return list(config.destinations)
    chosen = [spec for spec in config.destinations if spec.display_name == name]
    if not chosen:
        known = ", ".join(spec.display_name for spec in config.destinations) or "none"
        raise UsageError(f"no destination named {name!r} in the config (configured: {known})")
    return chosen


def reason(exc: BaseException, config: BackupConfig) -> str:
    """One line, no traceback, no secret."""
    from ..secret import scrub, secret_field_values

    text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
    return scrub(one_line(text, 500), secret_field_values(config))


@contextmanager
def opened(spec: DestinationSpec, registry: PluginRegistry) -> Iterator[Destination]:
    """The destination of ``spec``, opened for reading and closed afterwards."""
    from ..destination import DestinationContext

    dtype = registry.destination_type(spec.type)
    with dtype.factory(spec.config, DestinationContext(spec.display_name)) as destination:
        yield destination


def run_folders_of(destination: Destination, config: BackupConfig) -> list[RunFolder]:
    """The dated run folders of an open destination, newest first, manifests parsed."""
    from ..catalog import run_folders, run_root

    return run_folders(destination, run_root(config))


def folders_of(
    config: BackupConfig, spec: DestinationSpec, registry: PluginRegistry
) -> list[RunFolder]:
    """The dated run folders of one destination, newest first (``BackupError`` if unlistable)."""
    with opened(spec, registry) as destination:
        return run_folders_of(destination, config)


def iso(date: datetime.date | None) -> str | None:
    return date.isoformat() if date is not None else None


def human_size(size: int | None) -> str:
    """``0 B``, ``999 B``, ``1.0 KiB``, ``12.3 MiB``, ``1.0 GiB``: what an operator reads."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """An aligned text table; columns in ``right`` (numbers) are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def error(message: str) -> None:
    """A line for people, on stderr (stdout may carry a ``--json`` document)."""
    print(f"service-backup: {message}", file=sys.stderr, flush=True)
