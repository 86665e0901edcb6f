"""Where a key lands under a destination's base: the one key-joining rule every plugin uses.

Keys are ``/``-separated and relative to the destination's base (``bucket_path``, ``path``,
``destination`` ...). A key that is empty, absolute, or has an empty, ``.`` or ``..`` segment
can never be what the run meant (it would escape the base or collide), so it is refused with
an error naming it rather than quietly normalised.
"""

from __future__ import annotations

from typing import Final

import attrs

from .errors import DestinationError

MiB: Final = 1024 * 1024


def check_key(key: str) -> str:
    """``key`` itself, or ``DestinationError`` when it is not a clean relative key."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise DestinationError(f"invalid key {key!r}")
    return key


@attrs.frozen
class KeyLayout:
    """A base prefix (no leading or trailing ``/``; empty for the root) and its keys."""

    base: str = attrs.field(converter=lambda b: str(b).strip("/"))

    def full(self, key: str) -> str:
        """The store's name for ``key``: ``base/key``."""
        check_key(key)
        return f"{self.base}/{key}" if self.base else key

    def full_prefix(self, prefix: str) -> str:
        """The store's name for a listing prefix (may be empty, may end with ``/``)."""
        prefix = prefix.lstrip("/")
        if not self.base:
            return prefix
        return f"{self.base}/{prefix}" if prefix else f"{self.base}/"

    def key_of(self, name: str) -> str:
        """The key of a stored name that ``full`` produced."""
        return name[len(self.base) + 1 :] if self.base else name

    def describe(self, *parts: str) -> str:
        """Human form: ``container/base/prefix`` with empty parts left out."""
        return "/".join(p.strip("/") for p in (*parts[:1], self.base, *parts[1:]) if p.strip("/"))
