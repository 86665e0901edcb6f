"""The ``scp`` destination's ``config:`` mapping, as the seed's manifest template shows it.

Besides where and as whom to log in: the stall rule every destination applies
(``stall_timeout_seconds``, default 60, and ``stall_min_bytes_per_second``, default 1024: a
write moving fewer bytes per second than the floor for that long is aborted) and the modes of
what is stored (``file_mode`` 0600 and ``folder_mode`` 0700 by default, so a backup is never
readable by other users of the server unless configured so).
"""

from __future__ import annotations

from typing import Any

import attrs

from service_backup.config import no_parent_segments, required
from service_backup.secret import Secret
from service_backup.stall import DEFAULT_STALL_MIN_BYTES_PER_SECOND, DEFAULT_STALL_SECONDS

from ._hostkeys import parse_fingerprint

SUPPORTED = "an RSA, ECDSA or Ed25519 private key in PEM or OpenSSH format"


def _check_fingerprint(_: Any, __: attrs.Attribute, value: str) -> None:
    if value.strip():
        try:
            parse_fingerprint(value)
        except ValueError as exc:
            raise ValueError(f"fingerprint: {exc}") from None


def _check_port(_: Any, __: attrs.Attribute, value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"port: {value} is not a TCP port (1-65535)")


def _positive(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: {value} must be more than 0")


def _not_negative(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: {value} must not be negative")


def parse_mode(text: str) -> int:
    """``"0600"``, ``"600"`` or ``"0o600"`` as a number; ValueError for anything else."""
    digits = text.strip().lower().removeprefix("0o")
    if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o777:
        raise ValueError(text)
    return int(digits, 8)


def _mode_check(needed: int, what: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: str) -> None:
        hint = "quote it: YAML reads an unquoted 0600 as the number 384"
        try:
            mode = parse_mode(value)
        except ValueError:
            raise ValueError(
                f"{attribute.name}: {value!r} is not an octal permission mode like "
                f"'{attribute.default}' ({hint})"
            ) from None
        if mode & needed != needed:
            raise ValueError(
                f"{attribute.name}: {value} leaves the owner without {what} (at least "
                f"{needed:04o} is needed; if it was written unquoted, {hint})"
            )

    return check


@attrs.frozen
class ScpConfig:
    """Where and as whom to log in, how long a stalled write may last, what modes to store.

    ``destination`` is the base folder on the server (absolute, or relative to the user's home
    folder); ``key`` the private key (RSA, ECDSA or Ed25519; PEM or OpenSSH format);
    ``fingerprint`` the server's ``ssh-keyscan`` output, empty to accept and log the key the
    server shows at connect. ``file_mode`` and ``folder_mode`` need the owner's read and
    write (and, for folders, search) bits: the tool reads back what it stored.
    """

    user: str = required()
    server: str = required()
    destination: str = required(validator=no_parent_segments)
    key: Secret = required()  # noqa: RUF009 - an attrs field, not a shared default
    port: int = attrs.field(default=22, validator=_check_port)
    fingerprint: str = attrs.field(default="", validator=_check_fingerprint)
    #: A write whose throughput stays below ``stall_min_bytes_per_second`` for this long is
    #: aborted (a server that black-holes or trickles), as is every write at shutdown.
    stall_timeout_seconds: int = attrs.field(default=DEFAULT_STALL_SECONDS, validator=_positive)
    #: The floor (like curl's --speed-limit); 0 leaves only shutdown to abort a write.
    stall_min_bytes_per_second: int = attrs.field(
        default=DEFAULT_STALL_MIN_BYTES_PER_SECOND, validator=_not_negative
    )
    #: Permissions of stored files and of the folders created for them (octal strings).
    file_mode: str = attrs.field(default="0600", validator=_mode_check(0o600, "read and write"))
    folder_mode: str = attrs.field(
        default="0700", validator=_mode_check(0o700, "read, write and search")
    )

    @key.validator
    def _check_key(self, _: attrs.Attribute, value: Secret) -> None:
        """The key's shape is checked here, its content when the destination is opened.

        A manifest rendered from the seed's template carries a placeholder body (``...``) and
        must still validate; a key that does not parse fails the upload with the same reason.
        """
        text = value.reveal()
        if not text.strip():
            return  # reported as a missing required field, with its full path
        if "PRIVATE KEY-----" not in text or "-----END" not in text:
            raise ValueError(f"key: not {SUPPORTED} (no '-----BEGIN ... PRIVATE KEY-----' block)")
