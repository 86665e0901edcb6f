"""Which certificate authorities HTTPS clients trust: the machine's, not a library's copy.

BOSH installs a deployment's ``trusted_certs`` into the OS trust store (Debian's
``/etc/ssl/certs/ca-certificates.crt``). Python's ``ssl`` module reads that store, but
``requests`` (under the Azure and Google SDKs) verifies against certifi's bundled Mozilla list
unless it is told otherwise, so a TLS-inspecting proxy or an Azure Stack endpoint signed by a
private CA is refused although the operator trusted its CA the BOSH way. Every destination
therefore hands its HTTP client the file named here.

The file is the one OpenSSL itself would load: ``SSL_CERT_FILE`` when that names a file, else
the default file OpenSSL was built with, else the usual distribution locations (a Python built
against its own OpenSSL may look elsewhere than the OS keeps its store). Only a machine with
no store at all falls back to the library's bundle. A hashed directory (``SSL_CERT_DIR``) is
not read: the HTTP clients take one file.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

#: Where distributions keep the whole trust store as one PEM file; Debian/Ubuntu (and so BOSH
#: stemcells) first.
CA_FILE_CANDIDATES: Final = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
#: What an operator reads when a certificate is refused: where the fix goes.
TRUST_HINT: Final = "add the CA that signed it to the OS trust store (BOSH: trusted_certs)"


def system_ca_bundle() -> str | None:
    """Path of the CA file the machine trusts, or None when it has none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *CA_FILE_CANDIDATES):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def requests_verify() -> str | bool:
    """The ``verify`` value for a requests-based client.

    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` still win, as in requests itself: they are an
    explicit choice. ``True`` (the library's bundle) only when the machine has no store.
    """
    explicit = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return explicit or system_ca_bundle() or True


def client_context(skip_verification: bool = False) -> ssl.SSLContext:
    """The ``ssl`` context for a urllib client (alerters, pingers): the OS store, as above.

    ``skip_verification`` is an operator's explicit ``skip_ssl_validation: true`` and turns off
    both the chain and the host name check; nothing else does.
    """
    context = ssl.create_default_context()
    if skip_verification:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def untrusted_reason(exc: BaseException) -> str | None:
    """Why the peer's certificate was refused, when that is what ``exc`` comes down to.

    SDKs wrap the ``ssl.SSLCertVerificationError`` several layers deep (in causes, contexts,
    ``args``, urllib3's ``reason``, azure-core's ``inner_exception``); this walks them all.
    None for any other failure.
    """
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 50:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return str(item.verify_message or item.reason or "certificate verify failed")
        pending.extend(item.args)
        for name in ("reason", "inner_exception", "__cause__", "__context__"):
            pending.append(getattr(item, name, None))
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:  # the error object did not survive, its text did
        _, _, rest = text.partition("certificate verify failed: ")
        return rest.split("(", 1)[0].strip() or "certificate verify failed"
    return None


def untrusted_message(endpoint: str, reason: str, action: str = "") -> str:
    """One line for a refused certificate: the endpoint, what was being done, where the fix goes."""
    during = f" while {action}" if action else ""
    return f"TLS certificate of {endpoint} not trusted ({reason}){during}: {TRUST_HINT}"
