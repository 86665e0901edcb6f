"""The ``scp`` destination's ``config:`` mapping, as the seed's manifest template shows it."""

from __future__ import annotations

from typing import Any

import attrs

from service_backup.config import required
from service_backup.secret import Secret

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


@attrs.frozen
class ScpConfig:
    """Where and as whom to log in.

    ``destination`` is the base folder on the server (absolute, or relative to the user's home
    folder); ``key`` the private key (RSA, ECDSA or Ed25519; PEM or OpenSSH format);
    ``fingerprint`` the server's ``ssh-keyscan`` output, empty to accept and log the key the
    server shows at connect.
    """

    user: str = required()
    server: str = required()
    destination: str = required()
    key: Secret = required()  # noqa: RUF009 - an attrs field, not a shared default
    port: int = attrs.field(default=22, validator=_check_port)
    fingerprint: str = attrs.field(default="", validator=_check_fingerprint)

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
