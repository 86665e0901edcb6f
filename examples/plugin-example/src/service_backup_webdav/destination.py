"""The WebDAV destination: PUT, GET, PROPFIND (Depth 1, walked), DELETE, MKCOL, MOVE.

WebDAV servers (Apache mod_dav, nginx, Nextcloud, rclone, ...) write a PUT body straight into
the target file, so a PUT cut off half way would leave a short file under the final name.
Every object is therefore uploaded to a hidden temporary name in the same collection and
MOVEd over the final name once the server has acknowledged every byte; a server performs the
MOVE within one collection as a rename. ``list`` never reports the temporary names.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from typing import IO
from urllib.parse import quote, unquote, urlsplit

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.source import Source

from ._http import CHUNK, Client, Entry, Response, Unreachable
from .config import WebDAVConfig

#: Prefix of the temporary names uploads are written to before the MOVE.
PARTIAL_MARK = ".service-backup-partial-"
DEFAULT_PORTS = {"http": 80, "https": 443}


class WebDAVDestination(Destination):
    """One WebDAV collection (``url``) and everything below it.

    ``file_concurrency`` is 4: each file costs a few round trips (PUT, MOVE, PROPFIND), so a
    few files in flight hide that latency, while WebDAV servers usually run on small hosts
    (a NAS, a Nextcloud VM) where more parallel writers only compete for one disk.
    """

    file_concurrency = 4

    def __init__(self, config: WebDAVConfig, context: DestinationContext) -> None:
        parts = urlsplit(config.url.strip())
        self.name = context.display_name
        self._scheme = parts.scheme
        netloc = parts.netloc
        if parts.port == DEFAULT_PORTS[parts.scheme]:
            netloc = netloc.rsplit(":", 1)[0]
        self._origin = f"{parts.scheme}://{netloc}"
        self._base = unquote(parts.path).rstrip("/")  # decoded, "" for the server root
        self._username = config.username
        self._client = Client(
            parts.scheme,
            parts.hostname or "",
            parts.port,
            float(config.timeout_seconds),
            username=config.username,
            password=config.password.reveal(),
            ca_cert=config.ca_cert,
        )
        self._dirs: set[str] = set()  # collections (relative to the base) known to exist
        self._dirs_lock = threading.Lock()

    # -------------------------------------------------------------------------- paths
    def _path(self, key: str, collection: bool = False) -> str:
        """The percent-encoded request path of ``key`` (relative to the base)."""
        parts = key.split("/") if key else []
        if any(p in ("", ".", "..") for p in parts):
            raise DestinationError(f"invalid key {key!r}")
        path = quote(self._base + "".join("/" + p for p in parts), safe="/")
        return path + "/" if collection or not parts else path

    def _key_of(self, href: str) -> str | None:
        """The key an href of a PROPFIND answer stands for; None for the base itself."""
        path = unquote(urlsplit(href).path).rstrip("/")
        if not path.startswith(self._base + "/"):
            return None
        return path[len(self._base) + 1 :]

    def _fail(self, response: Response, method: str, what: str) -> DestinationError:
        where = f"WebDAV server {self._client.where}"
        if response.status == 401:
            user = f" of user '{self._username}'" if self._username else ""
            return DestinationError(f"{where} refused the credentials{user} (401 Unauthorized)")
        if response.status == 403:
            return DestinationError(f"access to {what} denied by {where} (403 Forbidden)")
        if response.status == 507:
            return DestinationError(f"no space left for {what} on {where} (507)")
        return DestinationError(
            f"{method} {what} failed on {where}: {response.status} {response.reason}"
        )

    def describe(self, prefix: str) -> str:
        return f"{self._origin}{self._base}/{prefix}".rstrip("/")

    # ---------------------------------------------------------------------- the location
    def ensure_location(self) -> None:
        """Create the base collection and its missing parents, bottom-up discovery first.

        Walking up with PROPFIND until something exists (rather than MKCOL from the server
        root down) never touches collections above the first existing one, which a hosted
        server (Nextcloud's ``/remote.php/dav/files/<user>``) may forbid.
        """
        segments = [s for s in self._base.split("/") if s]
        missing: list[str] = []
        while True:
            path = quote("/" + "/".join(segments), safe="/") + ("/" if segments else "")
            response, entries = self._client.propfind(path, "0")
            if response.status == 207:
                if entries and not entries[0].is_collection:
                    raise DestinationError(f"{self._origin}{path} is a file, not a collection")
                break
            if response.status != 404 or not segments:
                raise self._fail(response, "PROPFIND", f"{self._origin}{path}")
            missing.append(path)
            segments.pop()
        for path in reversed(missing):
            self._mkcol(path, f"{self._origin}{path}")
        with self._dirs_lock:
            self._dirs.add("")

    def _mkcol(self, path: str, what: str) -> None:
        response = self._client.request("MKCOL", path)
        # 201 created; 405 (RFC 4918) or 301/200 on some servers: it exists already.
        if response.status not in (200, 201, 301, 405):
            if response.status == 409:
                raise DestinationError(f"cannot create collection {what}: its parent is missing")
            raise self._fail(response, "MKCOL", what)

    def _ensure_dir(self, directory: str) -> None:
        """MKCOL every collection of ``directory`` not yet known to exist, top down.

        One thread at a time: servers lock a collection while creating it, and a second
        MKCOL of the same name racing the first is refused (423 Locked from rclone).
        Collections are created once per run, so the lock costs nothing afterwards.
        """
        parts = directory.split("/") if directory else []
        with self._dirs_lock:
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in self._dirs:
                    self._mkcol(self._path(sub, collection=True), sub)
                    self._dirs.add(sub)

    # --------------------------------------------------------------------------- objects
    def write(self, key: str, source: Source) -> ObjectInfo:
        directory, _, _ = key.rpartition("/")
        final = self._path(key)
        self._ensure_dir(directory)
        temporary_key = "/".join(filter(None, [directory, PARTIAL_MARK + uuid.uuid4().hex]))
        temporary = self._path(temporary_key)
        try:
            with source.open() as stream:  # raises before its last bytes if the file is short
                response = self._client.put(temporary, stream, source.size, key)
            if response.status not in (200, 201, 204):
                raise self._fail(response, "PUT", key)
            response = self._client.request(
                "MOVE", temporary, {"Destination": self._origin + final, "Overwrite": "T"}
            )
            if response.status not in (201, 204):
                raise self._fail(response, "MOVE", key)
        except Unreachable:
            raise  # a clean-up request would wait for the same dead server again
        except BaseException:
            self._discard(temporary)
            raise
        return self.stat(key)

    def _discard(self, temporary: str) -> None:
        """Best effort: the temporary name is hidden from ``list`` even if this fails."""
        with contextlib.suppress(DestinationError):
            self._client.request("DELETE", temporary)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Walk collections with PROPFIND Depth 1 (Depth infinity is often disabled).

        Only collections that can hold keys starting with ``prefix`` are entered.
        """
        start, _, _ = prefix.rpartition("/")
        pending = [start]
        while pending:
            directory = pending.pop()
            try:
                path = self._path(directory, collection=True)
            except DestinationError:
                continue  # a prefix such as "a//b" names no collection
            response, entries = self._client.propfind(path, "1")
            if response.status == 404:
                continue
            if response.status != 207:
                raise self._fail(response, "PROPFIND", directory or self.describe(""))
            for entry in entries:
                key = self._key_of(entry.href)
                if key is None or key == directory:
                    continue
                if entry.is_collection:
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        pending.append(key)
                elif key.startswith(prefix) and not key.rpartition("/")[2].startswith(PARTIAL_MARK):
                    yield _info(key, entry)

    def open_read(self, key: str) -> IO[bytes]:
        conn, response = self._client.get(self._path(key))
        if response.status == 200:
            return io.BufferedReader(_Download(conn, response, self._client, key), CHUNK)
        conn.close()
        if response.status == 404:
            raise ObjectNotFound(f"{key} not found at {self.describe('')}")
        raise self._fail(Response(response.status, response.reason), "GET", key)

    def stat(self, key: str) -> ObjectInfo:
        response, entries = self._client.propfind(self._path(key), "0")
        if response.status == 404 or (
            response.status == 207 and entries[:1] and entries[0].is_collection
        ):
            raise ObjectNotFound(f"{key} not found at {self.describe('')}")
        if response.status != 207 or not entries:
            raise self._fail(response, "PROPFIND", key)
        return _info(key, entries[0])

    def delete(self, key: str) -> None:
        self.stat(key)  # DELETE of a collection would remove a whole tree: objects only
        response = self._client.request("DELETE", self._path(key))
        if response.status == 404:
            raise ObjectNotFound(f"{key} not found at {self.describe('')}")
        if response.status not in (200, 204):
            raise self._fail(response, "DELETE", key)

    def close(self) -> None:
        self._client.close()


def _info(key: str, entry: Entry) -> ObjectInfo:
    return ObjectInfo(key=key, size=entry.size, modified=entry.modified)  # type: ignore[arg-type]


class _Download(io.RawIOBase):
    """A GET response as a stream; network errors become one-line DestinationErrors."""

    def __init__(self, conn: object, response: object, client: Client, key: str) -> None:
        self._conn, self._response, self._client, self._key = conn, response, client, key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._response.readinto(buffer)  # type: ignore[attr-defined]
        except Exception as exc:
            raise DestinationError(
                f"reading {self._key} failed: {self._client.unreachable(exc)}"
            ) from None

    def close(self) -> None:
        if not self.closed:
            self._response.close()  # type: ignore[attr-defined]
            self._conn.close()  # type: ignore[attr-defined]
        super().close()
