"""A string that never shows itself.

Keys, passwords and service-account JSON travel through the config as ``Secret`` so that a
``repr`` of a config object, a log line built from one, or an error quoting a field cannot leak
them by accident. The only way to the value is ``reveal()``, which makes every use greppable.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

REDACTED: Final = "<redacted>"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("secrets are not pickled")


def secret_field_values(obj: object) -> list[str]:
    """Every revealed secret inside a config object (attrs classes, lists, mappings).

    Mappings matter: plugin-declared sections live in ``BackupConfig.sections``.
    """
    import attrs

    found: list[str] = []
    if isinstance(obj, Secret):
        if obj.reveal():
            found.append(obj.reveal())
    elif attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):  # type: ignore[arg-type]
            found.extend(secret_field_values(getattr(obj, field.name)))
    elif isinstance(obj, Mapping):
        for item in obj.values():
            found.extend(secret_field_values(item))
    elif isinstance(obj, list | tuple):
        for item in obj:
            found.extend(secret_field_values(item))
    return found


#: Below this length a secret is only replaced as a whole token: replacing every "a" of a
#: one-character password would show which character it is, by where the holes are.
SHORT_SECRET = 8
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{4,}={0,2}")
_WORD = r"[A-Za-z0-9]"


def _forms(value: str) -> set[str]:
    """The ways a secret shows up in text: as is, URL-encoded, JSON- or repr-escaped."""
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
    }
    forms |= {f.replace("%", "%25") for f in list(forms) if "%" in f}  # encoded twice
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms)}
    return {f for f in forms if f}


class Scrubber:
    """Removes known secrets, in their usual encodings, from any text.

    Literal, URL-encoded (a UAA or proxy echoing a form body), JSON/repr-escaped, and inside
    base64 tokens (``Authorization: Basic base64(id:secret)`` echoed back). Each line of a
    multi-line secret (a PEM key) is a secret too. Secrets shorter than ``SHORT_SECRET`` are
    replaced only as whole tokens.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._long: list[str] = []
        self._short: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            values = set(self._secrets)
            for value in secrets:
                if value and value.strip():
                    values.add(value)
                    values |= {
                        line.strip() for line in value.splitlines() if len(line.strip()) >= 8
                    }
            if values == self._secrets:
                return
            self._secrets = values
            forms = set().union(*(_forms(v) for v in values)) if values else set()
            self._long = sorted((f for f in forms if len(f) >= SHORT_SECRET), key=len, reverse=True)
            short = sorted((f for f in forms if len(f) < SHORT_SECRET), key=len, reverse=True)
            self._short = (
                re.compile(
                    rf"(?<!{_WORD})(?:" + "|".join(re.escape(f) for f in short) + rf")(?!{_WORD})"
                )
                if short
                else None
            )

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def __call__(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        for form in self._long:
            if form in text:
                text = text.replace(form, REDACTED)
        if self._short is not None:
            text = self._short.sub(REDACTED, text)
        return _BASE64_TOKEN.sub(self._base64, text)

    def _base64(self, match: re.Match[str]) -> str:
        token = match.group(0)
        decoded = _b64decode(token)
        if decoded is None or not decoded.isprintable():
            return token  # most words decode to binary noise: only text can carry a secret
        if any(self._within(secret, decoded) for secret in self._secrets):
            return REDACTED
        return token

    @staticmethod
    def _within(secret: str, decoded: str) -> bool:
        if len(secret) >= SHORT_SECRET:
            return secret in decoded
        return re.search(rf"(?<!{_WORD}){re.escape(secret)}(?!{_WORD})", decoded) is not None


def _b64decode(token: str) -> str | None:
    text = token.rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text)
        else:
            raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret of ``secrets`` (and of the process's registry) removed."""
    return LOG_SCRUBBER(Scrubber(secrets)(text))


#: The secrets every log line is scrubbed of, at the sink, whoever logged it (plugins too).
#: Loading a config registers its secrets here.
LOG_SCRUBBER: Final = Scrubber()


def register_secrets(values: Iterable[str]) -> None:
    """Scrub these values from every log line this process writes from now on."""
    LOG_SCRUBBER.add(values)
