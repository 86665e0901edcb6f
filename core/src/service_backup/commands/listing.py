"""``service-backup list``: every dated run folder of every destination, newest first.

A complete folder (its manifest exists and parses) reports the manifest's file count, bytes,
``backup_guid`` and ``finished_at``; an incomplete one (a failed run, the Go release, versions
before manifests) reports what the listing shows and nulls for the rest. A destination that
cannot be listed is reported on stderr and makes the exit status 1; the others are still
listed.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from . import _common

if TYPE_CHECKING:
    from ..catalog import RunFolder

HELP = "list the dated backups of every destination, newest first (complete or incomplete)"


def configure(parser: argparse.ArgumentParser) -> None:
    _common.add_destination_flag(parser, "default: all")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


def row(destination: str, folder: RunFolder) -> dict[str, Any]:
    """One ``list --json`` entry (DESIGN, Part 2: the names are a contract)."""
    manifest = folder.manifest
    return {
        "destination": destination,
        "date": folder.date.isoformat(),
        "state": folder.state,
        "files": manifest.file_count if manifest else folder.files,
        "size_in_bytes": manifest.total_size if manifest else folder.size,
        "backup_guid": manifest.backup_guid if manifest else None,
        "finished_at": manifest.finished_at if manifest else None,
    }


def run(args: argparse.Namespace) -> int:
    config, registry = _common.load(args.config)
    try:
        specs = _common.select(config, args.destination)
    except _common.UsageError as exc:
        _common.error(str(exc))
        return _common.EXIT_INVALID
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    failed = False
    for spec in specs:
        try:
            folders = _common.folders_of(config, spec, registry)
        except Exception as exc:  # any plugin error: one line, and the others still listed
            failed = True
            _common.error(f"destination {spec.display_name} could not be listed: "
                          f"{_common.reason(exc, config)}")  # fmt: skip
            continue
        for folder in folders:
            rows.append(row(spec.display_name, folder))
            if folder.manifest_error:
                notes.append(f"{spec.display_name} {folder.date}: {folder.manifest_error}")
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        print(human(rows))
        for note in notes:
            _common.error(f"incomplete: {note}")
    return _common.EXIT_FAILED if failed else _common.EXIT_OK


def human(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no backups found"
    headers = ("DESTINATION", "DATE", "STATE", "FILES", "SIZE", "BACKUP GUID", "FINISHED AT")
    cells = [
        (
            r["destination"],
            r["date"],
            r["state"],
            str(r["files"]),
            _common.human_size(r["size_in_bytes"]),
            r["backup_guid"] or "-",
            r["finished_at"] or "-",
        )
        for r in rows
    ]
    return _common.table(headers, cells, right=(3, 4))
