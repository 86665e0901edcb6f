"""What a destination is: the one interface every backend implements.

Shaped after restic's ``internal/backend`` and Velero's ObjectStore: the run only needs
``write``, but the conformance suite, ``service-backup check`` and later restore, verify and
retention need to list, read back, stat and delete what was stored, so every destination
implements all of them.

Keys are relative to the destination's configured base (``bucket_path`` for S3, ``path`` for
Azure and local, ``destination`` for SCP, ``bucket_path`` or the bucket root for GCS) and use
``/`` as the separator whatever the backend. The run writes keys of the form
``[<deployment>/]YYYY/MM/DD/<path relative to source_folder>``.
"""

from __future__ import annotations

import abc
import datetime
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from .source import Source


@attrs.frozen
class ObjectInfo:
    """One stored object, as ``list``/``stat``/``write`` report it."""

    key: str
    size: int
    modified: datetime.datetime | None = None


class Destination(abc.ABC):
    """A place backups are written to.

    One instance serves one run (or one ``check``); ``write`` may be called from several
    threads at once, up to ``file_concurrency``. ``close`` releases connections.
    """

    #: How many files the run uploads to this destination at once.
    file_concurrency: ClassVar[int] = 4
    #: Files up to this size are written one after another from the calling thread, the
    #: larger ones by ``file_concurrency`` worker threads. For a store whose small writes are a
    #: few fast system calls (``local``), threads only hand the GIL back and forth; 0 (the
    #: default) sends every file to the workers.
    serial_file_size: ClassVar[int] = 0

    @property
    def can_rename(self) -> bool:
        """Whether same-day re-runs are staged and promoted with ``rename``.

        When True the run stages its files outside the dated folder and promotes them with
        ``rename`` once all arrived, so a failed same-day re-run leaves the earlier complete
        run intact. Say True where ``rename`` is cheap (a metadata operation: a file system,
        SFTP) with a class attribute, ``can_rename = True``; where promoting costs a
        server-side copy of every byte (object stores) let the operator choose, with a
        property reading the config (the S3, Azure and GCS plugins' ``promote_by_copy``).
        False (the default): the run overwrites in place after withdrawing the earlier
        manifest, so a failed re-run leaves that day's folder incomplete.
        """
        return False

    @abc.abstractmethod
    def describe(self, prefix: str) -> str:
        """Human form of where ``prefix`` lands, for ``about to upload ... remote path <this>``.

        e.g. ``bucket/bucket_path/2026/11/26`` for S3, ``host:/srv/backups/2026/11/26`` for SCP.
        """

    @abc.abstractmethod
    def ensure_location(self) -> None:
        """Create the bucket/container/folder if it does not exist yet.

        Called once before the first ``write`` of a run. Raise ``DestinationError`` telling
        "not found" apart from "access denied".
        """

    @abc.abstractmethod
    def write(self, key: str, source: Source) -> ObjectInfo:
        """Store the ``source.size`` bytes of ``source`` under ``key``, streaming.

        Read the bytes through the core's ``Source`` only: ``source.open()`` (sequential,
        exact length), ``source.read_all()`` (small files) or ``source.read_at()`` (by offset,
        from several threads). It raises ``SourceError`` naming the file when the file is
        shorter, longer or modified, before it hands out the last bytes, and it hashes what it
        hands out for the run manifest. Read every byte exactly once before committing.

        Memory stays bounded whatever ``size`` is. An existing object is overwritten. On any
        failure nothing may be left under ``key`` that looks complete (abort the multipart
        upload, discard the temporary file), and a failed write must never replace an
        object already stored under ``key``. Return the stored object's info; the caller
        compares its size with ``source.size``.
        """

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (all pages), in any order."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """The keys ``list(prefix)`` reports, without their sizes and times.

        For callers that need names only: ``restore`` choosing its run reads the dated
        folders and their manifests' names, not every object's size. Optional: by default
        the keys of ``list``; a destination where a name costs less than its info overrides it
        (``local`` then does not stat every file of every run).
        """
        return (info.key for info in self.list(prefix))

    def list_folders(self, prefix: str) -> Iterator[str]:
        """The folders directly under ``prefix`` (``""`` or ending with ``/``), by name.

        Every distinct ``name`` such that a key ``list(prefix)`` reports starts with
        ``prefix + name + "/"``, in any order, each once. For ``restore``: it finds the dated
        run folders level by level (``YYYY/``, ``MM/``, ``DD/``) instead of listing every
        object of every run kept, so choosing a run costs a few requests whatever the
        retention holds. Optional: by default the names come from ``list_keys(prefix)``, and
        the core then lists once instead of level by level (``catalog.dated_prefixes``).
        Override it only with a listing that returns folders without their objects (S3's
        ``Delimiter``, ...) and reports a folder only when an object is under it.
        """
        seen: set[str] = set()
        start = len(prefix)
        for key in self.list_keys(prefix):
            end = key.find("/", start)
            if end > start and key[start:end] not in seen:
                seen.add(key[start:end])
                yield key[start:end]

    @abc.abstractmethod
    def open_read(self, key: str) -> IO[bytes]:
        """A readable binary stream of the object; the caller closes it.

        ``ObjectNotFound`` if absent.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """The object's info. ``ObjectNotFound`` if absent."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object. ``ObjectNotFound`` if absent."""

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """Optional: move each object from its first key to its second, replacing what is there.

        Only called when ``can_rename`` is True, with keys the run just staged. Each move
        replaces the target whole (a reader of the new key sees the old or the new object,
        never a mix of both) and removes the source: a file system renames, an object store
        copies on the server, checks the copy, then deletes the staged object. Folders left
        empty may be removed. Raise ``ObjectNotFound`` for a missing source,
        ``DestinationError`` otherwise; the run then removes what is left of its staging.
        """
        raise NotImplementedError(f"{type(self).__name__} does not rename")

    def sync(self) -> None:  # noqa: B027 - optional hook
        """Make everything this instance wrote durable; called before and after the manifest.

        Stores that acknowledge a write only once it is durable (S3, Azure, GCS, an SFTP
        server's close) need nothing. A destination that defers durability to pay for it once
        per run instead of once per file (``local``: one ``syncfs``) does it here.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and pools."""

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen
class DestinationContext:
    """What a factory may need besides its own config."""

    #: ``name`` from the config, or ``<type>[<index>]`` when unnamed: for error messages.
    display_name: str
    #: Set when service-backup shuts down: abort in-flight transfers promptly (raise
    #: ``DestinationError``) instead of finishing them.
    stop: threading.Event = attrs.field(factory=threading.Event, eq=False, repr=False)


@attrs.frozen
class DestinationType:
    """What a destination plugin registers through the ``destination_types`` hook.

    ``name`` is the ``type:`` in the config and the entry-point name; ``config_class`` an
    attrs class (secret fields typed ``Secret``) that cattrs builds from the ``config:``
    mapping; ``factory`` turns a validated config into a ``Destination``; ``label`` is the
    word in the ``about to upload ... to <label> remote path`` log line.
    """

    name: str
    config_class: type
    factory: Callable[[Any, DestinationContext], Destination]
    label: str


def common_folder(keys: Iterable[str]) -> str:
    """The longest ``/``-ended prefix all ``keys`` share: what one listing of them covers.

    For ``rename`` on object stores, which list the staged objects once (sizes, checksums)
    instead of asking for each.
    """
    keys = list(keys)
    if not keys:
        return ""
    first, last = min(keys), max(keys)  # what these two share, every key between shares
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[: first.rfind("/", 0, n) + 1]


def lazy_factory(target: str) -> Callable[[Any, DestinationContext], Destination]:
    """A factory that imports ``"package.module:Class"`` only when a destination is opened.

    Every destination plugin registers its type with one of these, so loading a plugin (for
    ``validate``, for ``plugins``) imports its config class and never its SDK.
    """
    module_name, _, attr = target.partition(":")

    def factory(config: Any, context: DestinationContext) -> Destination:
        import importlib

        cls = getattr(importlib.import_module(module_name), attr)
        return cls(config, context)  # type: ignore[no-any-return]

    factory.__qualname__ = factory.__name__ = f"lazy_factory({target!r})"
    return factory
