"""moto's standalone S3 server as a subprocess on a free loopback port.

A plain context manager (no pytest) so that the benchmark harness can use it too::

    with moto_server(folder) as server:          # or tls=True, auth=True
        boto3.client("s3", **server.boto3_kwargs())

``auth=True`` makes moto check SigV4 signatures and IAM policies: the server is started with
authentication off, an administrator user with an access key is created through moto's IAM
API, then ``/moto-api/reset-auth`` switches enforcement on (what ``INITIAL_NO_AUTH_ACTION_COUNT``
does at start-up, without having to count the set-up requests). The handle carries that
administrator's keys; ``create_user`` adds users with a given policy afterwards.

``tls=True`` serves HTTPS with a server certificate (SAN 127.0.0.1 and localhost) signed by a
throwaway CA generated here; its PEM is ``ca_cert`` on the handle.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import stop

REGION = "us-east-1"
#: Any keys do while authentication is off.
ANY_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
ANY_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


class ServerError(RuntimeError):
    """The server could not be started; the message says why."""


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = REGION
    #: PEM of the CA that signed the server certificate (``tls=True``), else empty.
    ca_cert: str = ""
    #: The same CA as a file, for tools that want a path (aws-cli ``--ca-bundle``, rclone).
    ca_file: str = ""
    auth: bool = False
    pid: int = 0
    log_file: str = field(default="", repr=False)

    def boto3_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("s3"/"iam", ...)`` against this server."""
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
        }
        if self.ca_file:
            kwargs["verify"] = self.ca_file
        kwargs.update(overrides)
        return kwargs

    def create_user(self, name: str, policy: dict[str, Any] | None) -> tuple[str, str]:
        """An IAM user with ``policy`` inline (None: no policy at all); its (key id, secret)."""
        import boto3

        iam = boto3.client("iam", **self.boto3_kwargs())
        iam.create_user(UserName=name)
        if policy is not None:
            iam.put_user_policy(
                UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy)
            )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ssl_context(ca_file: str) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def _get(url: str, ca_file: str, data: bytes | None = None, timeout: float = 5) -> bytes:
    # text/plain: werkzeug would swallow a form-encoded body before moto could read it.
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    request = urllib.request.Request(  # noqa: S310 - checked just above
        url,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "text/plain"},
    )
    context = _ssl_context(ca_file)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as r:  # noqa: S310
        return bytes(r.read())


def _wait_ready(endpoint: str, ca_file: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll moto's own API until it answers (a server has no other way to say it is up)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"moto server exited with status {process.returncode}")
        try:
            _get(f"{endpoint}/moto-api/data.json", ca_file, timeout=2)
            return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise ServerError(f"moto server did not answer within {timeout:.0f} s ({last})")


def make_tls_files(
    folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs: (ca.pem, server.pem, server-key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("service-backup test CA"))
        .issuer_name(name("service-backup test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    cert_file = folder / "server.pem"
    key_file = folder / "server-key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _enable_auth(endpoint: str, ca_file: str) -> tuple[str, str]:
    """Create an administrator while auth is off, then turn enforcement on; its keys."""
    unauthenticated = MotoServer(endpoint, ANY_KEY_ID, ANY_SECRET, ca_file=ca_file)
    keys = unauthenticated.create_user("service-backup-admin", ADMIN_POLICY)
    _get(f"{endpoint}/moto-api/reset-auth", ca_file, data=b"0")
    return keys


@contextlib.contextmanager
def moto_server(
    folder: str | os.PathLike[str],
    *,
    tls: bool = False,
    auth: bool = False,
    port: int | None = None,
    timeout: float = 60,
) -> Iterator[MotoServer]:
    """Start ``python -m moto.server`` in ``folder``, yield its handle, stop it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    ca_file = ""
    if tls:
        ca, cert, key = make_tls_files(folder)
        ca_file = str(ca)
        command += ["-c", str(cert), "-k", str(key)]
    scheme = "https" if tls else "http"
    endpoint = f"{scheme}://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    log_file = folder / "moto.log"
    with open(log_file, "ab") as log:
        try:
            process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            raise ServerError(f"cannot start moto server: {exc}") from None
    try:
        _wait_ready(endpoint, ca_file, process, timeout)
        try:
            key_id, secret = _enable_auth(endpoint, ca_file) if auth else (ANY_KEY_ID, ANY_SECRET)
        except Exception as exc:  # boto3 or urllib: the server is up but not usable
            raise ServerError(f"cannot enable authentication on moto: {exc}") from exc
        yield MotoServer(
            endpoint=endpoint,
            access_key_id=key_id,
            secret_access_key=secret,
            ca_cert=Path(ca_file).read_text() if ca_file else "",
            ca_file=ca_file,
            auth=auth,
            pid=process.pid,
            log_file=str(log_file),
        )
    finally:
        stop(process)
