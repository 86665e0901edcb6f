"""Which certificates the S3 client trusts.

botocore takes one CA bundle path (``verify``) and then trusts only that file, so "the system
trust store plus the operator's ``ca_cert``" has to be one file: the system bundle followed by
the extra PEM, written to a private temporary folder (mode 0700) that ``close`` removes.
Verification is never switched off. Without ``ca_cert`` the system bundle is used as it is:
the core's ``tls.system_ca_bundle()`` (the file OpenSSL would use, where BOSH trusted
certificates land), or botocore's bundled one when the machine has none.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import weakref
from pathlib import Path

from service_backup import tls
from service_backup.errors import DestinationError

BUNDLE_NAME = "ca-bundle.pem"


def system_ca_bundle() -> str:
    """Path of the CA file the machine trusts (a file, never a hashed directory)."""
    found = tls.system_ca_bundle()
    if found is not None:
        return found
    from botocore.httpsession import get_cert_path

    return str(get_cert_path(True))


def check_pem(ca_cert: str) -> None:
    """Fail with one line when ``ca_cert`` holds no usable certificate."""
    try:
        ssl.create_default_context(cadata=ca_cert)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise DestinationError(f"ca_cert is not a valid PEM certificate ({reason})") from None


class CaBundle:
    """The ``verify`` argument for botocore, and the temporary file behind it, if any."""

    def __init__(self, ca_cert: str) -> None:
        self._folder: Path | None = None
        self.path = system_ca_bundle()
        if not ca_cert.strip():
            return
        check_pem(ca_cert)
        folder = Path(tempfile.mkdtemp(prefix="service-backup-s3-ca-"))
        self._folder = folder
        self._finalizer = weakref.finalize(self, shutil.rmtree, folder, True)
        bundle = folder / BUNDLE_NAME
        system = Path(self.path).read_bytes()
        extra = ca_cert.strip().encode() + b"\n"
        fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(system.rstrip(b"\n") + b"\n" + extra)
        self.path = str(bundle)

    def close(self) -> None:
        if self._folder is not None:
            self._finalizer()
            self._folder = None
