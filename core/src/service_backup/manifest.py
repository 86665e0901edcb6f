"""The run manifest: what makes a dated folder a complete, verifiable backup.

One JSON object per run and destination at ``<run prefix>/.service-backup-manifest.json``,
written last through the destination's own ``write``. Its fields are a contract (DESIGN, Part
2, "Run manifest"): scripts parse them.
"""

from __future__ import annotations

import datetime
import json
import json.encoder
import operator
import re
from collections.abc import Sequence
from typing import Any, Final

import attrs

from .errors import BackupError
from .names import unescape
from .results import StoredFile

MANIFEST_NAME: Final = ".service-backup-manifest.json"
FORMAT: Final = "service-backup/manifest/v1"
#: What a same-day re-run leaves at the manifest's key when it may not delete the earlier one.
PENDING_FORMAT: Final = "service-backup/manifest/pending"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: What ``json.dumps(..., ensure_ascii=False)`` writes for a str (the C escaper where built).
_encode_string = json.encoder.encode_basestring


class ManifestError(BackupError):
    """A manifest that cannot be read or does not follow the format."""


@attrs.frozen
class Manifest:
    backup_guid: str
    identifier: str | None
    deployment_name: str | None
    hostname: str
    started_at: str
    finished_at: str
    source_folder: str
    version: str
    files: tuple[StoredFile, ...]

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "backup_guid": self.backup_guid,
            "identifier": self.identifier,
            "deployment_name": self.deployment_name,
            "hostname": self.hostname,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "source_folder": self.source_folder,
            "version": self.version,
            "file_count": self.file_count,
            "total_size": self.total_size,
        }
        # A header a person can read, then one file per line: indenting every entry would take
        # json's pure-Python encoder (81 ms for 20,000 files); a line each keeps the C one.
        head = json.dumps(document, indent=1, ensure_ascii=False).removesuffix("\n}")
        files = ",\n  ".join(map(_entry_line, sorted(self.files, key=_BY_PATH)))
        body = (
            f'{head},\n "files": [\n  {files}\n ]\n}}\n'
            if files
            else f'{head},\n "files": []\n}}\n'
        )
        return body.encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """Read a manifest; ``ManifestError`` naming ``where`` if it is not one."""
        try:
            doc = json.loads(data.decode("utf-8"))
            if isinstance(doc, dict) and doc.get("format") == PENDING_FORMAT:
                raise ManifestError(
                    f"a run started at {doc.get('started_at')} replaced the manifest {where} "
                    "and has not completed"
                )
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            files = _stored_files(doc["files"])
            return cls(
                backup_guid=str(doc["backup_guid"]),
                identifier=doc.get("identifier"),
                deployment_name=doc.get("deployment_name"),
                hostname=str(doc.get("hostname", "")),
                started_at=str(doc["started_at"]),
                finished_at=str(doc["finished_at"]),
                source_folder=str(doc.get("source_folder", "")),
                version=str(doc.get("version", "")),
                files=files,
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {where} cannot be read: {exc}") from None


def pending_placeholder(backup_guid: str, started_at: str) -> bytes:
    """The object a re-run writes over an earlier manifest it may not delete: not a manifest."""
    document = {"format": PENDING_FORMAT, "backup_guid": backup_guid, "started_at": started_at}
    return (json.dumps(document) + "\n").encode("utf-8")


def _file_entry(file: StoredFile) -> dict[str, Any]:
    """``{path, size, sha256}``, plus ``"escaped": true`` for a %XX-escaped non-UTF-8 name.

    The extra member appears only on such entries, so a manifest of UTF-8 names is exactly
    what it was before, and readers that ignore unknown members keep working.
    """
    entry: dict[str, Any] = {"path": file.path, "size": file.size, "sha256": file.sha256}
    if file.escaped:
        entry["escaped"] = True
    return entry


_BY_PATH = operator.attrgetter("path")


def _entry_line(file: StoredFile) -> str:
    """``json.dumps(_file_entry(file), ensure_ascii=False)``, byte for byte, built directly.

    ``json.dumps`` with a non-default option builds a new encoder for every call: 20,000
    entries cost more that way than the rest of the manifest. The usual entry (a str path and
    sha256, an int size) is assembled here with json's own C string escaper; anything else
    (a hook that reported some other type) goes through ``json.dumps`` as before.
    """
    path, size, sha256 = file.path, file.size, file.sha256
    if type(path) is not str or type(size) is not int or type(sha256) is not str:
        return json.dumps(_file_entry(file), ensure_ascii=False)
    escaped = ', "escaped": true' if file.escaped else ""
    # A hex digest (letters and digits only, all ASCII) needs no escaping.
    digest = f'"{sha256}"' if sha256.isascii() and sha256.isalnum() else _encode_string(sha256)
    return f'{{"path": {_encode_string(path)}, "size": {size}, "sha256": {digest}{escaped}}}'


def _stored_files(entries: Any) -> tuple[StoredFile, ...]:
    """Every entry of ``files``, each checked by ``_stored_file``, which names what is wrong."""
    if not isinstance(entries, list):
        raise ValueError("files is not a list")
    return tuple(_stored_file(entry) for entry in entries)


def _stored_file(entry: Any) -> StoredFile:
    path, size, sha256 = entry["path"], entry["size"], entry["sha256"]
    if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool):
        raise ValueError(f"file entry {entry!r:.80} is not {{path, size, sha256}}")
    if size < 0 or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"file entry for {path!r} has a bad size or sha256")
    escaped = entry.get("escaped", False)
    if not isinstance(escaped, bool):
        raise ValueError(f"file entry for {path!r} has an 'escaped' that is not true or false")
    if escaped:
        unescape(path)  # ValueError naming the path when it is not an escaped name
    return StoredFile(path=path, size=size, sha256=sha256, escaped=escaped)


def manifest_key(run_prefix: str) -> str:
    return f"{run_prefix}/{MANIFEST_NAME}"


def rfc3339(moment: datetime.datetime) -> str:
    """``2026-11-26T12:00:00.123456Z``: UTC, what every timestamp in a manifest looks like."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime.datetime | None:
    """A manifest timestamp back as an aware datetime; None when it is not one."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def product_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("service-backup")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def hostname() -> str:
    import socket

    return socket.gethostname()


def unsafe_path(path: str) -> str | None:
    """Why a manifest ``path`` must not be restored (absolute, ``..``, empty parts), or None.

    Restore writes ``DIR/<path>``: a path that could land outside DIR, or that names DIR
    itself, is refused whatever wrote the manifest.
    """
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    if "\x00" in path:
        return "NUL in path"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return "'..' in path"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path segment"
    return None


def sorted_files(stored: Sequence[StoredFile]) -> tuple[StoredFile, ...]:
    return tuple(sorted(stored, key=lambda f: f.path))
