"""What "a secret leaked" means to the conformance suite: the value, or any long piece of it.

A plugin that logs half a key, or a key re-wrapped on other lines, leaks it as surely as one
that logs it whole, so the suite looks for every 12-character piece. Two kinds of secret need
care so that public text is not mistaken for a leak: a JSON credential (only its secret
members count: a service account's e-mail address may be named in an error) and a PEM key
(its armour lines and the format's constant preamble are the same in every key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

PIECE = 12
_SECRET_MEMBERS = ("private", "secret", "password", "refresh_token", "access_token")
#: An OpenSSH private key's base64 body starts with the same bytes in every key.
_PEM_CONSTANT_PREFIX = 64


def secret_pieces(value: str) -> list[str]:
    """The strings whose presence in any output means ``value`` leaked."""
    text = value.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            return [p for member in _secret_members(document) for p in secret_pieces(member)]
    if "-----BEGIN" in text:
        body = "".join(
            line.strip() for line in text.splitlines() if line.strip() and "-----" not in line
        )
        return _windows(body[_PEM_CONSTANT_PREFIX:])
    if len(text) < 4:
        return []  # too short to search for without false alarms; the core scrubs whole tokens
    return [text, *_windows(text)] if len(text) > PIECE else [text]


def _secret_members(document: dict[str, object]) -> Iterable[str]:
    for key, member in document.items():
        if isinstance(member, dict):
            yield from _secret_members(member)
        elif isinstance(member, str) and any(word in key.lower() for word in _SECRET_MEMBERS):
            yield member


def _windows(text: str) -> list[str]:
    if len(text) <= PIECE:
        return [text] if len(text) >= 4 else []
    return [text[i : i + PIECE] for i in range(len(text) - PIECE + 1)]


def leaked(pieces: Iterable[str], output: str) -> str | None:
    """The first piece found in ``output``, or None."""
    return next((piece for piece in pieces if piece in output), None)
