"""The ``fingerprint`` setting: ``ssh-keyscan`` output, matched the way OpenSSH matches it.

Each line is ``<hosts> <key type> <base64 key> [comment]`` (a ``known_hosts`` line): hosts is a
comma list of names, ``[name]:port`` forms, ``*``/``?`` patterns, ``!negations`` or hashed
``|1|salt|hash`` entries (``ssh-keyscan -H``). Blank lines and ``#`` comments are skipped.
A line may also be just ``<key type> <base64 key>``, which applies to any host. A ``@revoked``
line names a key that must never be accepted; other ``@`` markers (certificate authorities)
are not supported and are rejected so nobody believes they are in force.

The server is accepted only when the key it proves it holds equals a key listed for its
host; a listed host without ``[...]:port`` applies to every port, because ``ssh-keyscan``
without ``-p`` is a common way to produce the text and the key itself is what is checked.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac

import attrs

#: Host key algorithms paramiko may negotiate for each key type written in known_hosts.
NEGOTIATE = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
KNOWN_TYPES = frozenset(NEGOTIATE) | {"ssh-dss", "sk-ssh-ed25519@openssh.com",
                                      "sk-ecdsa-sha2-nistp256@openssh.com"}  # fmt: skip


@attrs.frozen
class KnownKey:
    """One key line of the fingerprint text."""

    hosts: str  # the hosts field; "" when the line names no host
    key_type: str
    blob: bytes
    revoked: bool = False
    line: int = 0

    def applies_to(self, server: str, port: int) -> bool:
        return not self.hosts or host_matches(self.hosts, server, port)

    @property
    def fingerprint(self) -> str:
        return sha256_fingerprint(self.blob)


def sha256_fingerprint(blob: bytes) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` and OpenSSH's log lines print it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def parse_fingerprint(text: str) -> list[KnownKey]:
    """Every key line; ``ValueError`` naming the first malformed line (keys are public)."""
    keys: list[KnownKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        revoked = False
        if fields[0].startswith("@"):
            if fields[0] != "@revoked":
                raise ValueError(
                    f"line {number}: marker {fields[0]} is not supported (only @revoked)"
                )
            revoked, fields = True, fields[1:]
        if fields and fields[0] in KNOWN_TYPES:
            hosts, rest = "", fields
        elif len(fields) >= 3:
            hosts, rest = fields[0], fields[1:]
        else:
            raise ValueError(
                f"line {number}: expected '<host> <key type> <base64 key>' as ssh-keyscan "
                f"prints it, got {_preview(line)}"
            )
        key_type, encoded = rest[0], rest[1] if len(rest) > 1 else ""
        if key_type not in KNOWN_TYPES:
            raise ValueError(f"line {number}: unknown key type {_preview(key_type)}")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {number}: the {key_type} key is not valid base64") from None
        if not _blob_has_type(blob, key_type):
            raise ValueError(f"line {number}: the key data is not a {key_type} key")
        keys.append(KnownKey(hosts, key_type, blob, revoked, number))
    if not keys:
        raise ValueError("no host key line found (expected ssh-keyscan output)")
    return keys


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _blob_has_type(blob: bytes, key_type: str) -> bool:
    """An SSH public key blob starts with its own type name."""
    if len(blob) < 4:
        return False
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size] == key_type.encode("ascii")


def _names(server: str, port: int) -> list[str]:
    host = server.lower()
    return [host, f"[{host}]:22"] if port == 22 else [f"[{host}]:{port}", host]


def host_matches(hosts: str, server: str, port: int) -> bool:
    """OpenSSH's known_hosts host matching (patterns, negation, hashed names)."""
    names = _names(server, port)
    if hosts.startswith("|1|"):
        return any(_hashed_matches(hosts, name) for name in names)
    matched = False
    for pattern in hosts.lower().split(","):
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        hit = any(fnmatch.fnmatchcase(name, pattern) for name in names if "[" not in pattern) or (
            "[" in pattern and pattern in names
        )
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _hashed_matches(entry: str, name: str) -> bool:
    try:
        _, _, salt, digest = entry.split("|")
        expected = base64.b64decode(digest)
        mac = hmac.new(base64.b64decode(salt), name.encode("utf-8"), hashlib.sha1).digest()
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(mac, expected)
