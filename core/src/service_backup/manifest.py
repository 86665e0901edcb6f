"""The run manifest: what makes a dated folder a complete, verifiable backup.

One JSON object per run and destination at ``<run prefix>/.service-backup-manifest.json``,
written last through the destination's own ``write``. Its fields are a contract (DESIGN, Part
2, "Run manifest"): scripts parse them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import attrs

from .errors import BackupError
from .results import StoredFile

MANIFEST_NAME: Final = ".service-backup-manifest.json"
FORMAT: Final = "service-backup/manifest/v1"


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
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256}
                for f in sorted(self.files, key=lambda f: f.path)
            ],
        }
        return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """Read a manifest; ``ManifestError`` naming ``where`` if it is not one."""
        try:
            doc = json.loads(data.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            files = tuple(
                StoredFile(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]))
                for f in doc["files"]
            )
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


def manifest_key(run_prefix: str) -> str:
    return f"{run_prefix}/{MANIFEST_NAME}"


def sorted_files(stored: Sequence[StoredFile]) -> tuple[StoredFile, ...]:
    return tuple(sorted(stored, key=lambda f: f.path))
