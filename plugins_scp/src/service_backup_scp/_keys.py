"""Loading the client's private key from the config text.

The seed's template shows an RSA key in PEM form, OpenSSH has written its own format by default
since 7.8, and operators paste whichever ``ssh-keygen`` gave them. cryptography parses all of
them (OpenSSH, PKCS#1, SEC1, PKCS#8); paramiko's key classes only read some, and its base
``PKey.from_private_key`` reads none, so the key is parsed with cryptography, re-encoded in the
OpenSSH format and handed to the matching paramiko class. Nothing here ever puts key material
in an error message.
"""

from __future__ import annotations

import io

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .config import SUPPORTED


class KeyProblem(ValueError):
    """The key text cannot be used; the message is safe to show (it never quotes the key)."""


def _normalise(text: str) -> bytes:
    """Tolerate indentation, CRLF line ends and surrounding blank lines from YAML pastes."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return ("\n".join(line for line in lines if line) + "\n").encode("ascii", "replace")


def _parse(data: bytes) -> object:
    try:
        return serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise KeyProblem(
            "the private key is protected by a passphrase; give an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyProblem(
            "the private key is protected by a passphrase; give an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem(f"not {SUPPORTED}") from None


def load_private_key(text: str) -> paramiko.PKey:
    """The paramiko key for ``text``, or ``KeyProblem`` saying what is wrong with it."""
    if "PRIVATE KEY-----" not in text:
        raise KeyProblem(f"not {SUPPORTED} (no '-----BEGIN ... PRIVATE KEY-----' block)")
    parsed = _parse(_normalise(text))
    key_class: type[paramiko.PKey]
    if isinstance(parsed, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(parsed, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(parsed, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    else:
        raise KeyProblem(f"unsupported key type {type(parsed).__name__}; give {SUPPORTED}")
    openssh = parsed.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    try:
        return key_class.from_private_key(io.StringIO(openssh))
    except (paramiko.SSHException, ValueError) as exc:
        # e.g. an ECDSA curve paramiko does not implement
        raise KeyProblem(f"unsupported key ({type(exc).__name__}); give {SUPPORTED}") from None
