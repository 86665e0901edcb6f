"""Errors that end a run, a validation or a command with one clear line.

Everything the core shows an operator derives from ``BackupError``: its ``str`` is the whole
message, already free of secrets and tracebacks. Plugins raise ``DestinationError`` (or a
subclass) with a reason that names the thing at fault; the core adds the destination's name.
"""


class BackupError(Exception):
    """A failure reported to the operator by its message alone."""


class ConfigError(BackupError):
    """The configuration is invalid; exit status 2."""


class DestinationError(BackupError):
    """A destination could not do what was asked (unreachable, refused, corrupted transfer)."""


class ObjectNotFound(DestinationError):
    """``stat``/``open_read``/``delete`` of a key that is not stored."""


class CommandError(BackupError):
    """A configured executable failed: ``exit status N`` or could not be started."""


class SourceError(BackupError):
    """A file under ``source_folder`` could not be read (vanished, unreadable)."""


def one_line(text: object, limit: int = 300) -> str:
    """Any message as one line of at most ``limit`` characters: what logs and alerts carry."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
