"""The ``config:`` of a ``local`` destination, validated before the first run."""

from __future__ import annotations

import re
from typing import Any

import attrs

from service_backup.config import no_parent_segments, required


def _mode(owner_needs: int, what: str) -> Any:
    """attrs validator: a quoted octal string (``"0600"``) that leaves the owner ``owner_needs``.

    YAML reads an unquoted ``0600`` as the number 384 and ``600`` as six hundred, so only a
    string is accepted: a number would be a mode nobody meant.
    """

    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not re.fullmatch(r"(0o?)?[0-7]{3}", value.strip()):
            raise ValueError(f'{attribute.name}: expected a quoted octal string such as "{what}"')
        if parse_mode(value) & owner_needs != owner_needs:
            raise ValueError(
                f"{attribute.name}: must leave the owner {oct(owner_needs)[2:]} "
                "(the backup could not be written or restored otherwise)"
            )

    return check


def parse_mode(text: str) -> int:
    """``"0600"``, ``"600"`` or ``"0o600"`` as permission bits."""
    return int(text.strip().removeprefix("0o"), 8)


@attrs.frozen
class LocalConfig:
    path: str = required(validator=no_parent_segments)
    #: Stored copies are private by default: a 0600 database dump must not become 0644.
    file_mode: Any = attrs.field(default="0600", validator=_mode(0o600, "0600"))
    folder_mode: Any = attrs.field(default="0700", validator=_mode(0o700, "0700"))
